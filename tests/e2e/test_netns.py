"""The harness's isolated network namespace (netns.isolated): a test inside it has
its own loopback, sees no port of the machine's and is back home afterwards."""

from __future__ import annotations

import os
import socket

import netns


def test_isolated_namespace_has_its_own_loopback_and_goes_back():
    home = netns.current()
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.bind(("127.0.0.1", 0))
    port = outside.getsockname()[1]
    with netns.isolated():
        assert netns.current() != home
        # The same port is free in here: another loopback, not the machine's.
        inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inside.bind(("127.0.0.1", port))
        inside.sendto(b"ping", ("127.0.0.1", port))
        assert inside.recv(16) == b"ping"
        six = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        six.bind(("::1", 0))
        six.sendto(b"pong", six.getsockname()[:2])
        assert six.recv(16) == b"pong"
        inside.close()
        six.close()
    assert netns.current() == home
    outside.close()


def test_a_phone_registers_inside_the_fixture_namespace(isolated_netns, kamailio, make_phone):
    from peers import account, ini
    here = netns.current()
    assert here != os.readlink(f"/proc/{os.getppid()}/ns/net")  # not where we started
    ph = make_phone(ini(account(kamailio.address, "1001", kamailio.users["1001"])))
    ph.events().wait_state(1, "registered", 30, codes={200})
    assert os.readlink(f"/proc/{ph.pid}/ns/net") == here
    assert os.readlink(f"/proc/{kamailio.proc.pid}/ns/net") == here
