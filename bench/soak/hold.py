#!/usr/bin/env python3
"""Established loopback connections for bench/soak/scale.mjs, held open.

The open-files limit may not be raisable (here: a hard limit of 20 000 and no
CAP_SYS_RESOURCE, even as root), so the sockets are spread over processes of
two kinds, each with at most a few thousand fewer fds than its limit:

  hold.py server PORT TRICKLE_EVERY TRICKLE_BYTES MAX_SECONDS
    Listens on 127.0.0.1:PORT with SO_REUSEPORT (several servers share the
    port; the kernel spreads connections over them by hash) and accepts what
    comes. Every second, sends TRICKLE_BYTES bytes on every TRICKLE_EVERY-th
    accepted connection (a different share each second; 0 turns it off).
    Prints `listening`, then answers stdin commands: `count` -> `count N`;
    `stop` (stop the trickle) -> `stopped {"sent": bytes, "connections": N}`.

  hold.py client PORT COUNT FIRST PER_ADDRESS MAX_SECONDS
    Connects COUNT sockets from source addresses 127.0.FIRST.1,
    127.0.FIRST+1.1, ..., PER_ADDRESS from each (bind() to port 0 searches
    an address's ports one by one: it slows down as they fill up), and prints `ready {"connections": N, "seconds": s}`. Never
    reads: the trickled bytes wait in the receive buffers, far below the limit.

Both close every socket and exit at end of stdin, or after MAX_SECONDS.
"""
import json
import os
import resource
import selectors
import socket
import sys
import time

role = sys.argv[1]
port = int(sys.argv[2])

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


pending = b""


def commands():
    """The complete lines now readable on stdin (unbuffered); None at end of input."""
    global pending
    data = os.read(0, 4096)
    if data == b"":
        return None
    pending += data
    *lines, pending = pending.split(b"\n")
    return [l.decode().strip() for l in lines]


if role == "client":
    count, first, per_address, max_seconds = (int(a) for a in sys.argv[3:7])
    if count + 16 > hard:
        sys.exit(f"{count} sockets do not fit the open-files limit {hard}")
    deadline = time.monotonic() + max_seconds
    t0 = time.monotonic()
    held = []
    for k in range(count):
        if time.monotonic() > deadline:
            sys.exit("deadline passed while connecting")
        c = socket.socket()
        c.bind((f"127.0.{first + k // per_address}.1", 0))
        c.connect(("127.0.0.1", port))
        held.append(c)
    out("ready " + json.dumps({"connections": len(held), "seconds": time.monotonic() - t0}))
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(max(0.0, deadline - time.monotonic())) and commands() is None:
            break
    for c in held:
        c.close()
    sys.exit(0)

every, trickle_bytes, max_seconds = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
deadline = time.monotonic() + max_seconds
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
ls.bind(("127.0.0.1", port))
ls.listen(4096)
ls.setblocking(False)
out("listening")
accepted = []
sent = 0
trickling = every > 0 and trickle_bytes > 0
payload = b"t" * max(trickle_bytes, 1)
sel = selectors.DefaultSelector()
sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
sel.register(ls, selectors.EVENT_READ, "listener")
tick = 0
next_tick = time.monotonic() + 1.0
while time.monotonic() < deadline:
    if trickling and time.monotonic() >= next_tick:
        for s in accepted[tick % every::every]:
            sent += s.send(payload)
        tick += 1
        next_tick += 1.0
    wake = min(deadline, next_tick) if trickling else deadline
    for key, _ev in sel.select(max(0.0, wake - time.monotonic())):
        if key.data == "listener":
            while True:
                try:
                    s, _addr = ls.accept()
                except BlockingIOError:
                    break
                if len(accepted) + 32 > hard:
                    sys.exit(f"more connections than the open-files limit {hard} allows")
                s.setblocking(True)
                accepted.append(s)
            continue
        lines = commands()
        if lines is None:
            deadline = 0
            break
        for line in lines:
            if line == "count":
                out(f"count {len(accepted)}")
            elif line == "stop":
                trickling = False
                out("stopped " + json.dumps({"sent": sent, "connections": len(accepted)}))
for s in accepted:
    s.close()
ls.close()
