#!/usr/bin/env python3
"""Holds N established loopback TCP connections (2N sockets) until stdin closes.
Each connection carries 100 bytes each way so tcp_info has figures.
Prints "ready N" when all are up. hold_netns.py uses hold() in each namespace."""
import socket
import sys


def hold(n):
    """N connections in this thread's network namespace; returns what keeps them open."""
    listeners = []
    for _ in range(4):  # 4 destinations: ephemeral ports repeat across them, so 50k fit
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(4096)
        listeners.append(ls)
    held = [listeners]
    for i in range(n):
        ls = listeners[i % len(listeners)]
        c = socket.socket()
        c.connect(ls.getsockname())
        s, _ = ls.accept()
        c.send(b"x" * 100)
        s.send(b"y" * 100)
        held.append((c, s))
    return held


if __name__ == "__main__":
    n = int(sys.argv[1])
    held = hold(n)
    print(f"ready {n}", flush=True)
    sys.stdin.read()
