"""The desktop side (issue 11): the incoming-call notification through
org.freedesktop.Notifications (a fake server on a private session bus records
Notify and emits ActionInvoked: Answer answers the call, Decline rejects it with
603), `xdg-open tel:1002` with packaging/microsip.desktop installed in temporary
XDG folders dials through the running phone, the man page and the shell
completions list every command of the grammar's table, and the .deb holds the
binary, the .desktop file and the man page.

The phone is 1001 (registered at Kamailio, file audio); baresip is 1002.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess

import pytest

import peers
from test_calls import USERS, call_phone, kam, wait_call  # noqa: F401 (fixtures)
from test_dbus import bus_name, make_phone  # noqa: F401 (fixture: the phone on the bus)

PACKAGING = peers.REPO / "packaging"
SCHEMES = ("tel", "sip", "sips", "callto")


def grammar_commands() -> list[str]:
    """The canonical commands, read from the grammar's table (grammar::COMMANDS)."""
    text = (peers.REPO / "crates/engine/src/grammar.rs").read_text()
    table = text[text.index("pub const COMMANDS"):]
    table = table[:table.index("];")]
    names = re.findall(r'help\(\s*"([a-z]+)"', table)
    assert len(names) >= 30, names
    return names


# ---------------------------------------------------------------- notifications

def incoming_with_notification(kam, call_phone, make_baresip, session_bus):
    fake = peers.FakeNotifications(session_bus)
    ph = call_phone(auto_answer="button")
    session_bus.wait_name(bus_name(ph))
    a = make_baresip(kam, "1002", tone=1000, answermode="manual")
    a.dial("sip:1001@127.0.0.1")
    inc = wait_call(ph, "call.incoming")
    cid = inc["call"]
    note = fake.wait_call("Notify")
    return fake, ph, a, cid, note


def test_an_incoming_call_notifies_and_answer_answers_it(kam, call_phone, make_baresip,
                                                         session_bus):
    fake, ph, a, cid, note = incoming_with_notification(kam, call_phone, make_baresip,
                                                        session_bus)
    actions = note["actions"]
    assert dict(zip(actions[::2], actions[1::2])) == {"answer": "Answer",
                                                      "decline": "Decline"}, note
    assert "1002" in note["body"] and note["summary"] == "Incoming call", note
    assert note["expire_timeout"] == 0, note
    assert ph.cmd("STATUS")[1].strip() == "1"
    fake.invoke(note["id"], "answer")
    est = a.wait_event("CALL_ESTABLISHED")
    assert est["peeruri"].startswith("sip:1001@127.0.0.1"), est
    wait_call(ph, "call.answered", cid)
    wait_call(ph, "call.confirmed", cid)
    # No longer ringing: the phone closes its notification.
    fake.wait_call("CloseNotification", lambda c: c["id"] == note["id"])
    a.hangup()
    wait_call(ph, "call.ended", cid)


def test_decline_rejects_the_call_with_603(kam, call_phone, make_baresip, session_bus):
    fake, ph, a, cid, note = incoming_with_notification(kam, call_phone, make_baresip,
                                                        session_bus)
    fake.invoke(note["id"], "decline")
    closed = a.wait_event("CALL_CLOSED")
    assert "603" in closed.get("param", ""), closed
    ended = wait_call(ph, "call.ended", cid)
    assert ended.get("code") == 603, ended
    fake.wait_call("CloseNotification", lambda c: c["id"] == note["id"])


def test_without_a_notification_server_the_call_still_rings(kam, call_phone, make_baresip,
                                                            session_bus):
    ph = call_phone(auto_answer="button")
    session_bus.wait_name(bus_name(ph))
    a = make_baresip(kam, "1002", tone=1000, answermode="manual")
    a.dial("sip:1001@127.0.0.1")
    cid = wait_call(ph, "call.incoming")["call"]
    wait_call(ph, "call.ringing", cid)
    peers.wait_until(lambda: "no desktop notification" in ph.stderr_text(), 15, 0.1,
                     "the log line")
    assert ph.cmd("answer", str(cid))[0] == 0
    a.wait_event("CALL_ESTABLISHED")
    a.hangup()
    wait_call(ph, "call.ended", cid)


# ---------------------------------------------------------------- links

def test_xdg_open_tel_dials_through_the_running_phone(kam, make_phone, make_baresip,
                                                      tmp_path):
    a = make_baresip(kam, "1002", tone=1000)
    # The default profile: a link runs a plain `microsip tel:...`.
    ph = make_phone(peers.ini(peers.account(kam.address, "1001", USERS["1001"]),
                              audioInputDevice="null", audioOutputDevice="null"),
                    profile="default")
    ph.events().wait_state(1, "registered", 30, codes={200})
    data, config, bindir = (tmp_path / "xdg-data", tmp_path / "xdg-config",
                            tmp_path / "bin")
    (data / "applications").mkdir(parents=True)
    config.mkdir()
    bindir.mkdir()
    shutil.copy(PACKAGING / "microsip.desktop", data / "applications" / "microsip.desktop")
    (config / "mimeapps.list").write_text(
        "[Default Applications]\n"
        + "".join(f"x-scheme-handler/{s}=microsip.desktop\n" for s in SCHEMES))
    # PATH holds the binary under test as `microsip`.
    (bindir / "microsip").symlink_to(peers.microsip_bin())
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_CURRENT_DESKTOP", "DESKTOP_SESSION",
                        "KDE_FULL_SESSION", "GNOME_DESKTOP_SESSION_ID", "BROWSER",
                        "DBUS_SESSION_BUS_ADDRESS")}
    # xdg-open asks the scheme handlers only in a graphical session (DISPLAY or
    # WAYLAND_DISPLAY set); no display server is needed for it to run the handler.
    env.update(DISPLAY=":0", XDG_DATA_HOME=str(data), XDG_CONFIG_HOME=str(config),
               XDG_RUNTIME_DIR=str(ph.runtime_dir), PATH=f"{bindir}:{env.get('PATH', '')}")
    query = subprocess.run(["xdg-mime", "query", "default", "x-scheme-handler/tel"],
                           env=env, capture_output=True, text=True, timeout=30)
    assert query.stdout.strip() == "microsip.desktop", (query.stdout, query.stderr)

    r = subprocess.run(["xdg-open", "tel:1002"], env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out_ev = wait_call(ph, "call.outgoing")
    assert out_ev.get("number") == "1002", out_ev
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", out_ev["call"])
    assert ph.cmd("hangup")[0] == 0
    a.wait_event("CALL_CLOSED")

    # sip: goes the same way.
    r = subprocess.run(["xdg-open", "sip:1002@127.0.0.1"], env=env, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (r.stdout, r.stderr)
    second = wait_call(ph, "call.outgoing", pred=lambda e: e["call"] != out_ev["call"])
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", second["call"])


def test_a_link_with_no_phone_running_starts_one_that_dials(kam, make_phone, make_baresip):
    """What the .desktop file runs, `microsip tel:1002`, when no phone runs: this
    process becomes the phone and dials once registered."""
    a = make_baresip(kam, "1002", tone=1000)
    ph = make_phone(peers.ini(peers.account(kam.address, "1001", USERS["1001"]),
                              audioInputDevice="null", audioOutputDevice="null"),
                    extra_args=["tel:1002"])
    a.wait_event("CALL_ESTABLISHED", timeout=30)
    # Subscribed after the call started: the snapshot holds it.
    calls = ph.events().snapshot()["calls"]
    assert [(c["direction"], c["number"]) for c in calls] == [("out", "1002")], calls
    assert ph.cmd("STATUS")[1].strip() == "2"


def test_the_desktop_file_handles_the_four_link_types():
    text = (PACKAGING / "microsip.desktop").read_text()
    fields = dict(line.split("=", 1) for line in text.splitlines()
                  if "=" in line and not line.startswith("#"))
    assert fields["Exec"] == "microsip %u"
    assert fields["Type"] == "Application"
    mime = set(filter(None, fields["MimeType"].split(";")))
    assert mime == {f"x-scheme-handler/{s}" for s in SCHEMES}
    if shutil.which("desktop-file-validate"):
        r = subprocess.run(["desktop-file-validate", str(PACKAGING / "microsip.desktop")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- man page, completions, .deb

def run_bin(*args: str) -> str:
    r = subprocess.run([peers.microsip_bin(), *args], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (args, r.stderr)
    assert r.stdout.strip(), args
    return r.stdout


def test_man_page_and_completions_list_every_command():
    commands = grammar_commands()
    man = run_bin("man")
    assert man.startswith(".TH MICROSIP 1")
    for name in commands:
        assert re.search(rf"^\.BI? \"?{name}\b", man, re.M), f"man page lacks {name}"
    scripts = {shell: run_bin("completions", shell) for shell in ("bash", "zsh", "fish")}
    for shell, script in scripts.items():
        for name in commands:
            assert re.search(rf"(?<![\w-]){name}(?![\w-])", script), f"{shell} lacks {name}"
    assert scripts["zsh"].startswith("#compdef microsip")
    # Each is valid for its shell, where the shell is here.
    r = subprocess.run(["bash", "-n"], input=scripts["bash"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    # bash completes a command word and an argument word.
    probe = (scripts["bash"] + "\nCOMP_WORDS=(microsip hangu); COMP_CWORD=1; _microsip; "
             "echo \"${COMPREPLY[*]}\"\nCOMP_WORDS=(microsip hold ''); COMP_CWORD=2; "
             "_microsip; echo \"${COMPREPLY[*]}\"\n")
    r = subprocess.run(["bash"], input=probe, capture_output=True, text=True, timeout=30)
    assert r.stdout.splitlines() == ["hangup hangupall hangupcalling", "on off"], r
    for shell in ("zsh", "fish"):
        if shutil.which(shell):
            flag = ["-n"] if shell == "zsh" else ["--no-execute"]
            r = subprocess.run([shell, *flag], input=scripts[shell], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, (shell, r.stderr)
    if shutil.which("fish"):
        probe = scripts["fish"] + '\ncomplete -C "microsip hangu"\ncomplete -C "microsip hold "\n'
        r = subprocess.run(["fish", "--no-config"], input=probe, capture_output=True,
                           text=True, timeout=30)
        names = [line.split("\t")[0] for line in r.stdout.splitlines()]
        assert names == ["hangup", "hangupall", "hangupcalling", "off", "on"], r
    r = subprocess.run([peers.microsip_bin(), "completions", "tcsh"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "bash, zsh, fish" in r.stderr, r
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", "-"], input=man, capture_output=True, text=True,
                           timeout=30, env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat"})
        assert r.returncode == 0 and "COMMANDS" in r.stdout, r.stderr


def test_install_script_and_deb(tmp_path):
    # A user install into a temporary HOME, then its removal.
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    r = subprocess.run([str(PACKAGING / "install.sh"), "--user", "--bin",
                        peers.microsip_bin()], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    installed = {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}
    assert installed == {
        ".local/bin/microsip", ".local/share/applications/microsip.desktop",
        ".config/systemd/user/microsip.service", ".local/share/man/man1/microsip.1.gz",
        ".local/share/bash-completion/completions/microsip",
        ".local/share/zsh/site-functions/_microsip", ".config/fish/completions/microsip.fish",
    }, installed
    unit = (home / ".config/systemd/user/microsip.service").read_text()
    assert f"ExecStart={home}/.local/bin/microsip --headless" in unit, unit
    man = gzip.decompress((home / ".local/share/man/man1/microsip.1.gz").read_bytes()).decode()
    assert man == run_bin("man")
    r = subprocess.run([str(PACKAGING / "install.sh"), "--user", "--uninstall"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not [p for p in home.rglob("*") if p.is_file()]

    # The .deb, of the binary under test.
    out = tmp_path / "deb"
    r = subprocess.run([str(PACKAGING / "build-deb.sh"), "--bin", peers.microsip_bin(),
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    deb = r.stdout.strip()
    assert deb.endswith(".deb") and os.path.isfile(deb), r.stdout
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                             timeout=60).stdout
    for path in ("./usr/bin/microsip", "./usr/share/applications/microsip.desktop",
                 "./usr/share/man/man1/microsip.1.gz",
                 "./usr/lib/systemd/user/microsip.service",
                 "./usr/share/bash-completion/completions/microsip",
                 "./usr/share/zsh/vendor-completions/_microsip",
                 "./usr/share/fish/vendor_completions.d/microsip.fish"):
        assert re.search(rf"\s{re.escape(path)}$", listing, re.M), (path, listing)
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Depends"],
                            capture_output=True, text=True, timeout=60).stdout
    assert "Package: microsip" in fields and "libc6" in fields, fields
