// Drives one page of Debian's chromium for tests/e2e/test_web.py: reads one JSON
// request per line on stdin ({"op": ..., ...}), answers one JSON line on stdout
// ({"ok": true, ...} or {"ok": false, "error": ...}). Every wait is Playwright's, on
// a DOM state, bounded by its timeout. Never downloads a browser.
"use strict";
const readline = require("readline");
const { chromium } = require("playwright-core");

const TIMEOUT = 30000;

async function main() {
  const [userDataDir] = process.argv.slice(2);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  context.setDefaultTimeout(TIMEOUT);
  const page = context.pages()[0] || (await context.newPage());
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

  const ops = {
    async goto(r) { await page.goto(r.url, { waitUntil: "load" }); return {}; },
    async click(r) { await page.locator(r.selector).first().click(); return {}; },
    async fill(r) { await page.locator(r.selector).fill(r.value); return {}; },
    async press(r) { await page.locator(r.selector).press(r.key); return {}; },
    async wait(r) { await page.locator(r.selector).first().waitFor({ state: r.state || "visible" }); return {}; },
    async text(r) { return { text: await page.locator(r.selector).first().innerText() }; },
    async count(r) { return { count: await page.locator(r.selector).count() }; },
    async visibleAt(r) {
      // The page's own clock (ms since the epoch) at the first frame the element is
      // visible: waits for it inside the page, so no polling delay is added.
      const at = await page.evaluate((sel) => new Promise((resolve) => {
        const check = () => {
          const e = document.querySelector(sel);
          if (e && e.offsetParent !== null && !e.hidden) { resolve(Date.now()); return true; }
          return false;
        };
        if (check()) return;
        const seen = new MutationObserver(() => { if (check()) seen.disconnect(); });
        seen.observe(document.body, { subtree: true, childList: true, attributes: true });
      }), r.selector);
      return { at };
    },
    async value(r) { return { value: await page.locator(r.selector).first().inputValue() }; },
    async setValue(r) {
      // What a user's drag ends with: the value, then a change event.
      await page.locator(r.selector).first().evaluate((e, v) => {
        e.value = v;
        e.dispatchEvent(new Event("change", { bubbles: true }));
      }, String(r.value));
      return {};
    },
    async attr(r) { return { value: await page.locator(r.selector).first().getAttribute(r.name) }; },
    async url() { return { url: page.url() }; },
    async screenshot(r) { await page.screenshot({ path: r.path, fullPage: true }); return {}; },
    async fetch(r) {
      // A request from the page itself (same origin, its cookie).
      return await page.evaluate(async ([path]) => {
        const res = await fetch(path);
        return { status: res.status };
      }, [r.path]);
    },
    async timing() {
      return await page.evaluate(() => {
        const [nav] = performance.getEntriesByType("navigation");
        const res = performance.getEntriesByType("resource");
        return {
          load_ms: nav.loadEventEnd - nav.startTime,
          dom_ms: nav.domContentLoadedEventEnd - nav.startTime,
          bytes: nav.transferSize + res.reduce((n, e) => n + e.transferSize, 0),
          body_bytes: nav.decodedBodySize + res.reduce((n, e) => n + e.decodedBodySize, 0),
        };
      });
    },
    async console() { return { lines: consoleLines.splice(0) }; },
  };

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let request;
    let answer;
    try {
      request = JSON.parse(line);
      if (request.op === "close") break;
      const op = ops[request.op];
      if (!op) throw new Error(`no such op ${request.op}`);
      answer = Object.assign({ ok: true }, await op(request));
    } catch (e) {
      answer = { ok: false, error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  }
  await context.close();
  // stdin stays open (the test holds it): end here, not when the test gives up waiting.
  process.exit(0);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + "\n");
  process.exit(1);
});
