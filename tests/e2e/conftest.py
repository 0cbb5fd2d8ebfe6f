"""pytest fixtures for the end-to-end tests (see peers.py for the classes).

Fixtures:
- kamailio          Kamailio started on a free port with users 1001 ("p;w#1005")
                    and 1002 ("secret2"), min_expires 5.
- make_kamailio     factory: make_kamailio(users=..., min_expires=..., algorithm=..., start=True)
- make_phone        factory: make_phone(ini={...}, profile=None, start=True, extra_args=())
- make_sipp         factory: make_sipp("reg_423.xml", calls=1, timeout_s=120, start=True,
                    remote=None, builtin=None, files=None); see peers.Sipp
- make_baresip      factory: make_baresip(kamailio, "1002", answermode="auto", tone=440,
                    start=True, ...) -> a started, registered peers.Baresip (the
                    password is the Kamailio user's); see peers.Baresip
- rtp_tap           an rtp.RtpTap capturing RTP on lo for the test (needs root or
                    CAP_NET_RAW; without it the test FAILS, unless E2E_NO_CAPTURE=1
                    is set, which skips it)
- free_port         the peers.free_port function
- session_bus       a private D-Bus session bus (peers.SessionBus), started by pid
- nat_world         netns.nat_world(homes=2): the test runs in the "internet"
                    namespace (203.0.113.1) with two homes (10.0.k.2) behind
                    MASQUERADE routers (203.0.113.1k); `home.prefix` runs a
                    program there. Name it FIRST among the test's fixtures; the
                    peers are stopped before the namespaces go.
- isolated_netns    the test runs in a fresh network namespace of its own (loopback
                    only; see netns.py). Name it FIRST among the test's fixtures so
                    that every peer is started inside it.

Everything a test starts is stopped at teardown, by pid / process group.
When a test fails, the tails of the phone's stderr, its SIP trace, its
events, Kamailio's log and SIPp's logs are printed with the failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns  # noqa: E402
import peers  # noqa: E402
import rtp  # noqa: E402


@pytest.fixture(autouse=True)
def _live_objects():
    """Starts each test with an empty list of live objects; cleans them up after."""
    peers.LIVE.clear()
    yield
    _cleanup_live()


def _cleanup_live():
    """Stops every live object (phones first) and empties the list."""
    errors = []
    # Phones first (their /exit un-REGISTERs at the peers), then the other
    # phones (baresip un-REGISTERs on quit too, and waits for Kamailio's answer),
    # then the rest.
    order = sorted(peers.LIVE, key=lambda o: 0 if isinstance(o, peers.Phone)
                   else 1 if isinstance(o, peers.Baresip) else 2)
    for obj in order:
        try:
            obj.cleanup()
        except Exception as e:  # noqa: BLE001 - keep cleaning up the others
            errors.append(f"{type(obj).__name__}: {e}")
    if errors:
        print("cleanup problems:\n" + "\n".join(errors), file=sys.stderr)
    peers.LIVE.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for obj in list(peers.LIVE):
            try:
                for title, text in obj.diagnostics():
                    rep.sections.append((title, text if text.strip() else "<empty>"))
            except Exception as e:  # noqa: BLE001 - diagnostics only
                rep.sections.append((type(obj).__name__, f"<diagnostics failed: {e}>"))


@pytest.fixture
def free_port():
    return peers.free_port


@pytest.fixture
def make_kamailio(tmp_path):
    n = [0]

    def make(users=None, start=True, **kw) -> peers.Kamailio:
        n[0] += 1
        k = peers.Kamailio(tmp_path / f"kamailio{n[0]}", users=users, **kw)
        if start:
            k.start()
        return k

    return make


@pytest.fixture
def kamailio(make_kamailio) -> peers.Kamailio:
    return make_kamailio()


@pytest.fixture
def make_phone(tmp_path):
    def make(ini=None, profile=None, start=True, extra_args=(), **kw) -> peers.Phone:
        p = peers.Phone(tmp_path, profile=profile, ini=ini, extra_args=extra_args, **kw)
        if start:
            p.start()
        return p

    return make


@pytest.fixture
def make_sipp(tmp_path):
    def make(scenario=None, start=True, **kw) -> peers.Sipp:
        s = peers.Sipp(tmp_path, scenario, **kw)
        if start:
            s.start()
        return s

    return make


@pytest.fixture
def make_baresip(tmp_path):
    def make(kamailio=None, user="1002", password=None, start=True, **kw) -> peers.Baresip:
        if password is None:
            password = kamailio.users[user] if kamailio is not None else "secret"
        b = peers.Baresip(tmp_path, user, password, kamailio=kamailio, **kw)
        if start:
            b.start()
        return b

    return make


@pytest.fixture
def rtp_tap():
    rtp.require_capture("RTP")
    tap = rtp.RtpTap().start()
    peers.LIVE.append(tap)
    return tap


@pytest.fixture
def session_bus(tmp_path) -> peers.SessionBus:
    return peers.SessionBus(tmp_path / "session-bus").start()


@pytest.fixture
def isolated_netns():
    with netns.isolated():
        yield


@pytest.fixture
def nat_world():
    why = netns.nat_available()
    if why:
        pytest.fail(f"NAT test: {why}")
    with netns.nat_world(homes=2) as world:
        try:
            yield world
        finally:
            # Inside the namespace still: baresip's ctrl_tcp and the phones'
            # un-REGISTERs need it.
            _cleanup_live()
