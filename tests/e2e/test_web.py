"""The web phone page (`GET /`, opened by `microsip open`), driven in Debian's
chromium by Playwright (`tests/e2e/web/driver.js`, one JSON request per line).

With the login URL from `microsip open --print` the page logs in, dials baresip
through Kamailio, shows the call active, holds it, sends a DTMF digit baresip
reports, hangs up and shows the history entry; an incoming call from baresip shows
the banner, whose Answer button answers it (baresip sees the call established).
Without the cookie the page says "not logged in" and the API answers 401."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import peers
from peers import account, ini

PASSWORD = "secret1"
USERS = {"1001": PASSWORD, "1002": "secret2"}
WEB = Path(__file__).resolve().parent / "web"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and (WEB / "node_modules" / "playwright-core").exists()
         and shutil.which("node")),
    reason="needs chromium and tests/e2e/web/node_modules (scripts/install-test-deps.sh)")


class Browser:
    """One chromium page behind driver.js."""

    def __init__(self, tmp: Path):
        profile = tmp / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.proc = subprocess.Popen(
            ["node", str(WEB / "driver.js"), str(profile)], cwd=WEB,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def do(self, op: str, **args) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the browser driver ended during {op} {args}"
        answer = json.loads(line)
        if not answer.get("ok"):
            self.shot(f"failed-{op}")
            console = self._console()
            raise AssertionError(f"{op} {args}: {answer.get('error')}\nconsole: {console}")
        return answer

    def _console(self) -> list[str]:
        try:
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write('{"op": "console"}\n')
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline()).get("lines", [])
        except Exception:  # noqa: BLE001 - only for the failure message
            return []

    def shot(self, name: str) -> None:
        try:
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write(json.dumps({"op": "screenshot",
                                              "path": str(self.tmp / f"{name}.png")}) + "\n")
            self.proc.stdin.flush()
            self.proc.stdout.readline()
        except Exception:  # noqa: BLE001 - a screenshot is a help, not a result
            pass

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.write('{"op": "close"}\n')
                self.proc.stdin.flush()
            self.proc.wait(timeout=20)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


def web_phone(make_phone, accounts=(), **settings):
    port = peers.free_port("tcp")
    keys = dict(audioInputDevice="null", audioOutputDevice="null", audioRingDevice="null")
    if not accounts:
        keys["accountId"] = 0
    keys.update(settings)
    ph = make_phone(ini(*accounts, **keys), extra_args=["--http", str(port)])
    return ph, port


def login_url(ph) -> str:
    rc, out, err = ph.cmd("open", "--print")
    assert rc == 0, err
    url = out.strip()
    assert url.startswith("http://127.0.0.1:") and "/#login=" in url, url
    return url


def status_without_cookie(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_without_the_cookie_the_page_says_not_logged_in(make_phone, browser, tmp_path):
    ph, port = web_phone(make_phone)
    assert status_without_cookie(port, "/") == 200
    assert status_without_cookie(port, "/app.js") == 200
    assert status_without_cookie(port, "/status") == 401
    browser.do("goto", url=f"http://127.0.0.1:{port}/")
    browser.do("wait", selector="#logged-out")
    assert "Not logged in" in browser.do("text", selector="#logged-out")["text"]
    assert browser.do("fetch", path="/calls")["status"] == 401
    browser.do("wait", selector="#phone", state="hidden")
    browser.shot("not-logged-in")
    # A used code does not log in again.
    url = login_url(ph)
    browser.do("goto", url=url)
    browser.do("wait", selector="#phone")
    assert browser.do("fetch", path="/calls")["status"] == 200
    assert "#login" not in browser.do("url")["url"]


def test_the_level_sliders_show_and_set_the_phone_s_levels(make_phone, browser):
    ph, port = web_phone(make_phone, volumeOutput=70, volumeInput=30)
    browser.do("goto", url=login_url(ph))
    browser.do("wait", selector='body[data-state="live"]')
    peers.wait_until(lambda: browser.do("value", selector="#level-speaker")["value"] == "70",
                     10, what="the speaker slider at the phone's 70")
    assert browser.do("value", selector="#level-microphone")["value"] == "30"
    browser.do("setValue", selector="#level-microphone", value=55)
    reply = peers.wait_until(
        lambda: (r := ph.request("levels")) and r["data"]["microphone"] == 55 and r, 10,
        what="the phone's microphone level at 55")
    assert reply["data"]["speaker"] == 70, reply
    # Stored too (the PUT's reply waits for the write; this test did not wait for it).
    peers.wait_until(lambda: "volumeInput=55" in ph.ini_path.read_text(), 10,
                     what="volumeInput=55 in the ini")


def test_microsip_open_without_http_is_a_clear_error(make_phone):
    ph = make_phone(ini(accountId=0, audioInputDevice="null", audioOutputDevice="null"))
    rc, out, err = ph.cmd("open", "--print", check=False)
    assert rc != 0 and "HTTP API is off" in err, (rc, out, err)


def test_a_call_from_the_page_and_an_incoming_call_answered_there(
        kam, make_phone, make_baresip, browser, tmp_path):
    a = make_baresip(kam, "1002", tone=0)
    ph, port = web_phone(make_phone, [account(kam.address, "1001", PASSWORD)],
                         DTMFMethod="2")
    ph.events().wait_state(1, "registered", 30, codes={200})

    browser.do("goto", url=login_url(ph))
    browser.do("wait", selector='body[data-state="live"]')
    browser.do("wait", selector='#accounts li[data-account="1"][data-state="registered"]')
    browser.shot("1-logged-in")

    # Dial from the page (typed with the dial pad's digits and the field).
    browser.do("fill", selector="#dial-target", value="100")
    browser.do("click", selector='#dialpad button:text-is("2")')
    browser.do("press", selector="#dial-target", key="Enter")
    a.wait_event("CALL_ESTABLISHED")
    browser.do("wait", selector='#calls li[data-state="active"]')
    browser.shot("2-active")

    browser.do("click", selector='#calls li[data-state="active"] button:text-is("Hold")')
    browser.do("wait", selector='#calls li[data-state="held"]')
    browser.shot("3-held")
    browser.do("click", selector='#calls li[data-state="held"] button:text-is("Resume")')
    browser.do("wait", selector='#calls li[data-state="active"]')

    browser.do("click", selector='#calls li[data-state="active"] button.dtmf:text-is("5")')
    digit = a.wait_event("CALL_DTMF_START")
    assert digit.get("param") == "5", digit

    browser.do("click", selector='#calls li button:text-is("Hang up")')
    a.wait_event("CALL_CLOSED")
    browser.do("wait", selector="#no-calls")
    browser.do("wait", selector='#history li[data-number="1002"]')
    browser.shot("4-history")

    # An incoming call: the banner's Answer answers it.
    a.dial("sip:1001@127.0.0.1")
    browser.do("wait", selector="#incoming")
    assert "1002" in browser.do("text", selector="#incoming-text")["text"]
    browser.shot("5-incoming")
    browser.do("click", selector="#incoming-answer")
    a.wait_event("CALL_ESTABLISHED")
    browser.do("wait", selector='#calls li[data-state="active"]')
    browser.do("wait", selector="#incoming", state="hidden")
    browser.shot("6-answered")
    browser.do("click", selector='#calls li button:text-is("Hang up")')
    a.wait_event("CALL_CLOSED")
    browser.do("wait", selector="#no-calls")
