// The web phone page: plain JavaScript, no build step, no outside resources.
// Every piece of data comes from the authenticated HTTP API (the session cookie set
// by POST /login); changes send `X-Microsip: 1` (the server's CSRF rule). The
// `GET /events` WebSocket gives the snapshot first, then each event; an event makes
// the page read what it changed again (calls, accounts, history, messages).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { calls: [], accounts: [], socket: null, retry: 0 };

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c);
  return node;
}

function button(label, onClick, extra) {
  const b = el("button", Object.assign({ type: "button", textContent: label }, extra || {}));
  b.addEventListener("click", onClick);
  return b;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

// One API call; the reply's `data` (or the whole reply), or an ApiError.
async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-Microsip"] = "1";
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) {
    const detail = (json && (json.detail || json.title)) || response.statusText;
    if (response.status === 401) showLoggedOut();
    throw new ApiError(response.status, detail);
  }
  return json && "data" in json ? json.data : json;
}

function report(where, error) {
  $(where).textContent = error ? String(error.message || error) : "";
}

function showLoggedOut() {
  $("phone").hidden = true;
  $("logged-out").hidden = false;
  $("conn").textContent = "not logged in";
  document.body.dataset.state = "logged-out";
  if (state.socket) { state.socket.onclose = null; state.socket.close(); state.socket = null; }
}

// ---------------------------------------------------------------- accounts

function renderAccounts() {
  const list = $("accounts");
  list.replaceChildren();
  for (const a of state.accounts) {
    const item = el("li", { className: "account" });
    item.dataset.account = a.account;
    item.dataset.state = a.state;
    item.append(`${a.account}: ${a.aor || "(local)"} `, el("span", { className: "state", textContent: a.state }));
    if (a.active) item.append(" (active)");
    if (a.mwi && a.mwi.waiting) item.append(` voicemail: ${a.mwi.new} new`);
    list.append(item);
  }
}

async function loadAccounts() {
  const data = await api("GET", "/accounts");
  state.accounts = Array.isArray(data) ? data : (data && data.accounts) || [];
  renderAccounts();
}

// ---------------------------------------------------------------- calls

function callAction(id, action, body) {
  return api("POST", `/calls/${id}/${action}`, body).catch((e) => report("dial-error", e));
}

function renderCalls() {
  const list = $("calls");
  list.replaceChildren();
  $("no-calls").hidden = state.calls.length > 0;
  let ringing = null;
  for (const c of state.calls) {
    const who = c.name ? `${c.name} <${c.number || c.remote}>` : c.number || c.remote;
    const item = el("li", { className: "call" });
    item.dataset.call = c.id;
    item.dataset.state = c.state;
    item.append(
      el("span", { className: c.direction, textContent: c.direction === "in" ? "from " : "to " }),
      who,
      el("span", { className: "state", textContent: c.state }),
    );
    const incomingUnanswered = c.direction === "in" && ["calling", "ringing", "early"].includes(c.state);
    if (incomingUnanswered) {
      ringing = ringing || c;
      item.append(button("Answer", () => callAction(c.id, "answer")),
                  button("Reject", () => callAction(c.id, "reject")));
    } else {
      item.append(button("Hang up", () => callAction(c.id, "hangup")));
    }
    if (c.state === "active") item.append(button("Hold", () => callAction(c.id, "hold")));
    if (c.state === "held") item.append(button("Resume", () => callAction(c.id, "resume")));
    if (c.state === "active" || c.state === "held") {
      item.append(button("Mute", () => callAction(c.id, "mute", { on: true })),
                  button("Unmute", () => callAction(c.id, "mute", { on: false })));
      const transfer = el("input", { placeholder: "transfer to", size: 10 });
      transfer.setAttribute("aria-label", `transfer call ${c.id} to`);
      item.append(transfer, button("Transfer", () => {
        if (transfer.value.trim()) callAction(c.id, "transfer", { target: transfer.value.trim() });
      }));
      const pad = el("div", { className: "call-pad" });
      pad.setAttribute("aria-label", `keypad of call ${c.id}`);
      for (const d of "123456789*0#") {
        pad.append(button(d, () => callAction(c.id, "dtmf", { digits: d }),
                          { className: "dtmf", title: `send ${d}` }));
      }
      item.append(pad);
    }
    list.append(item);
  }
  const banner = $("incoming");
  banner.hidden = !ringing;
  if (ringing) {
    banner.dataset.call = ringing.id;
    $("incoming-text").textContent = `Incoming call from ${ringing.name || ""} ${ringing.number || ringing.remote}`.replace("  ", " ");
  }
}

async function loadCalls() {
  const data = await api("GET", "/calls");
  state.calls = Array.isArray(data) ? data : [];
  renderCalls();
}

// ---------------------------------------------------------------- dialling

async function dial(target) {
  report("dial-error", null);
  try {
    await api("POST", "/calls", { target });
  } catch (e) {
    report("dial-error", e);
  }
}

function setUpDialPad() {
  const pad = $("dialpad");
  for (const d of "123456789*0#") {
    pad.append(button(d, () => {
      const field = $("dial-target");
      field.value += d;
      field.focus();
    }, { title: `add ${d}` }));
  }
  $("dial-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const target = $("dial-target").value.trim();
    if (target) dial(target);
  });
}

async function loadContacts() {
  const data = await api("GET", "/contacts");
  const list = $("contact-list");
  list.replaceChildren();
  for (const c of Array.isArray(data) ? data : []) {
    list.append(el("option", { value: c.number, label: c.name ? `${c.name} (${c.number})` : c.number }));
  }
}

// ---------------------------------------------------------------- history

async function loadHistory() {
  const data = await api("GET", "/history?limit=20");
  const list = $("history");
  list.replaceChildren();
  for (const h of Array.isArray(data) ? data : []) {
    const item = el("li", { className: "history" });
    item.dataset.number = h.number;
    item.dataset.type = h.type;
    const when = (h.time_iso || "").replace("T", " ").slice(0, 16);
    item.append(`${when} ${h.type} ${h.name ? h.name + " " : ""}${h.number} (${h.duration || 0} s) `,
                button("Call back", () => dial(h.number), { title: `call ${h.number}` }));
    list.append(item);
  }
}

// ---------------------------------------------------------------- messages

async function loadConversation() {
  const contact = $("message-contact").value.trim();
  if (!contact) return;
  const data = await api("GET", `/messages?contact=${encodeURIComponent(contact)}`);
  const list = $("conversation");
  list.replaceChildren();
  for (const m of Array.isArray(data) ? data : []) {
    list.append(el("li", { className: m.incoming ? "in" : "out",
                           textContent: `${m.incoming ? m.contact : "me"}: ${m.text}` }));
  }
}

function setUpMessages() {
  $("message-show").addEventListener("click", () => loadConversation().catch((e) => report("dial-error", e)));
  $("message-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const target = $("message-contact").value.trim();
    const text = $("message-text").value;
    try {
      await api("POST", "/messages", { target, text });
      $("message-text").value = "";
      await loadConversation();
    } catch (e) {
      report("dial-error", e);
    }
  });
}

// ---------------------------------------------------------------- audio

function setUpLevels() {
  for (const which of ["speaker", "microphone"]) {
    const slider = $(`level-${which}`);
    slider.addEventListener("change", () => {
      report("audio-error", null);
      api("PUT", "/levels", { [which]: Number(slider.value) }).catch((e) => report("audio-error", e));
    });
  }
}

async function loadLevels() {
  const data = await api("GET", "/levels");
  for (const which of ["speaker", "microphone"]) {
    if (data && typeof data[which] === "number") $(`level-${which}`).value = String(data[which]);
  }
}

async function loadDevices() {
  const data = await api("GET", "/devices");
  const box = $("devices");
  box.replaceChildren();
  const current = (data && data.current) || {};
  for (const [role, listKey] of [["input", "input"], ["output", "output"], ["ring", "output"]]) {
    const select = el("select", { id: `device-${role}` });
    const label = el("label", { htmlFor: select.id, textContent: role });
    select.append(el("option", { value: "null", textContent: "null (none)" }));
    select.append(el("option", { value: "default", textContent: "default" }));
    for (const d of (data && data[listKey]) || []) {
      select.append(el("option", { value: d.id, textContent: d.name || d.id }));
    }
    const have = [...select.options].some((o) => o.value === current[role]);
    if (!have && current[role]) select.append(el("option", { value: current[role], textContent: current[role] }));
    select.value = current[role] || "null";
    select.addEventListener("change", () => {
      report("audio-error", null);
      api("PUT", `/devices/${role}`, { device: select.value }).catch((e) => report("audio-error", e));
    });
    box.append(el("div", {}, label, select));
  }
}

// ---------------------------------------------------------------- live events

function connectEvents() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/events`);
  state.socket = socket;
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    handleEvent(event);
  };
  socket.onopen = () => { state.retry = 0; };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    state.socket = null;
    $("conn").textContent = "disconnected; reconnecting…";
    document.body.dataset.state = "disconnected";
    state.retry = Math.min(state.retry + 1, 5);
    // Reconnect, checking the session first (an expired one shows "not logged in").
    setTimeout(() => start().catch(() => {}), 500 * state.retry);
  };
}

const refresh = (what) => what().catch((e) => report("dial-error", e));

function handleEvent(event) {
  const type = event.type || "";
  if (type === "snapshot") {
    state.accounts = event.accounts || [];
    state.calls = event.calls || [];
    renderAccounts();
    renderCalls();
    $("conn").textContent = "connected";
    document.body.dataset.state = "live";
    return;
  }
  if (type.startsWith("call.")) {
    refresh(loadCalls);
    if (type === "call.ended") refresh(loadHistory);
  } else if (type.startsWith("account.") || type === "mwi") {
    refresh(loadAccounts);
  } else if (type.startsWith("message.")) {
    const contact = $("message-contact").value.trim();
    if (!contact && event.contact) $("message-contact").value = event.contact;
    refresh(loadConversation);
  }
}

// ---------------------------------------------------------------- start

// A `#login=CODE` fragment (from `microsip open`) is posted once and removed.
async function logInFromFragment() {
  const match = /^#login=([0-9a-fA-F]+)$/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname);
  try {
    await api("POST", "/login", { code: match[1] });
  } catch (_) {
    // A used or expired code: the status check below shows "not logged in".
  }
}

async function start() {
  try {
    await api("GET", "/status");
  } catch (e) {
    if (e.status !== 401) {
      $("conn").textContent = `cannot reach the phone: ${e.message}`;
      throw e;
    }
    return;
  }
  $("logged-out").hidden = true;
  $("phone").hidden = false;
  connectEvents();
  await Promise.all([loadContacts(), loadHistory(), loadDevices(), loadLevels()].map((p) => p.catch((e) => report("dial-error", e))));
}

document.addEventListener("DOMContentLoaded", async () => {
  setUpDialPad();
  setUpMessages();
  setUpLevels();
  $("incoming-answer").addEventListener("click", () => callAction($("incoming").dataset.call, "answer"));
  $("incoming-reject").addEventListener("click", () => callAction($("incoming").dataset.call, "reject"));
  await logInFromFragment();
  start().catch(() => {});
});

// A login URL opened over a page already showing (only the fragment changes).
window.addEventListener("hashchange", async () => {
  if (!/^#login=/.test(location.hash)) return;
  await logInFromFragment();
  if (!state.socket) start().catch(() => {});
});
