#!/usr/bin/env python3
"""Holds established loopback TCP connections in several network namespaces
until stdin closes. Arguments: PATH:N ... (a namespace file, /run/netns/NAME,
and how many connections in it: 2N sockets). The sockets of each are made
after entering it (setns through libc: a socket keeps the namespace it was
made in), as hold.py makes them: 100 bytes each way. Prints "ready TOTAL"."""
import ctypes
import os
import resource
import socket
import sys

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

held = []
total = 0
for arg in sys.argv[1:]:
    path, n = arg.rsplit(":", 1)
    n = int(n)
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns {path}: {os.strerror(e)}")
    os.close(fd)
    listeners = []
    for _ in range(4):  # ephemeral ports repeat across destinations
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(4096)
        listeners.append(ls)
    for i in range(n):
        ls = listeners[i % len(listeners)]
        c = socket.socket()
        c.connect(ls.getsockname())
        s, _ = ls.accept()
        c.send(b"x" * 100)
        s.send(b"y" * 100)
        held.append((c, s))
    held.append(listeners)
    total += n
print(f"ready {total}", flush=True)
sys.stdin.read()
