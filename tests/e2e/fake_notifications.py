"""A fake desktop notification server for the tests (jeepney, no GUI).

    python3 fake_notifications.py BUS_ADDRESS

Owns org.freedesktop.Notifications on the bus at BUS_ADDRESS and answers Notify
(ids from 1), CloseNotification, GetCapabilities and GetServerInformation. Every
call it gets is printed on stdout as one JSON line:
    {"member": "Notify", "id": 1, "app_name": ..., "summary": ..., "body": ...,
     "actions": [...], "hints": [...], "expire_timeout": 0}
    {"member": "CloseNotification", "id": 1}
and `{"member": "ready"}` once the name is owned. Lines on stdin make it emit
signals:
    invoke ID ACTION     ActionInvoked(ID, ACTION)
    close ID REASON      NotificationClosed(ID, REASON)
It exits when stdin closes (bounded: at most 10 minutes).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time

from jeepney import DBusAddress, HeaderFields, MessageType, message_bus
from jeepney import new_error, new_method_return, new_signal
from jeepney.io.blocking import open_dbus_connection

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
LIFETIME_S = 600


def say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    conn = open_dbus_connection(bus=sys.argv[1])
    reply = conn.send_and_get_reply(message_bus.RequestName(NAME, 4))  # DO_NOT_QUEUE
    if reply.body[0] != 1:
        say({"member": "error", "text": f"RequestName replied {reply.body}"})
        return 1
    emitter = DBusAddress(PATH, interface=NAME)
    commands: queue.Queue[str | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line)
        commands.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    say({"member": "ready"})
    next_id = 1
    deadline = time.monotonic() + LIFETIME_S
    while time.monotonic() < deadline:
        try:
            while True:
                line = commands.get_nowait()
                if line is None:
                    return 0
                words = line.split()
                if len(words) == 3 and words[0] == "invoke":
                    conn.send(new_signal(emitter, "ActionInvoked", "us",
                                         (int(words[1]), words[2])))
                elif len(words) == 3 and words[0] == "close":
                    conn.send(new_signal(emitter, "NotificationClosed", "uu",
                                         (int(words[1]), int(words[2]))))
        except queue.Empty:
            pass
        try:
            msg = conn.receive(timeout=0.05)
        except TimeoutError:
            continue
        if msg.header.message_type != MessageType.method_call:
            continue
        member = msg.header.fields.get(HeaderFields.member)
        if msg.header.fields.get(HeaderFields.interface) not in (NAME, None):
            continue
        if member == "Notify":
            app, replaces, icon, summary, body, actions, hints, timeout = msg.body
            nid = replaces or next_id
            next_id += 1
            say({"member": "Notify", "id": nid, "app_name": app, "app_icon": icon,
                 "summary": summary, "body": body, "actions": list(actions),
                 "hints": sorted(hints), "expire_timeout": timeout})
            conn.send(new_method_return(msg, "u", (nid,)))
        elif member == "CloseNotification":
            say({"member": "CloseNotification", "id": msg.body[0]})
            conn.send(new_method_return(msg))
            conn.send(new_signal(emitter, "NotificationClosed", "uu", (msg.body[0], 3)))
        elif member == "GetCapabilities":
            conn.send(new_method_return(msg, "as", (["actions", "body"],)))
        elif member == "GetServerInformation":
            conn.send(new_method_return(msg, "ssss", ("fake", "tests", "1", "1.2")))
        else:
            conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
