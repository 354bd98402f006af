#!/usr/bin/env python3
"""Holds established loopback TCP connections in several network namespaces
until stdin closes. Arguments: PATH:N ... (a namespace file, /run/netns/NAME,
and how many connections in it: 2N sockets). The sockets of each are made
after entering it (setns through libc: a socket keeps the namespace it was
made in), as hold.py makes them: 100 bytes each way. Prints "ready TOTAL"."""
import ctypes
import os
import resource
import sys

from hold import hold  # bench/diag/hold.py, beside this file

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
    held.append(hold(n))
    total += n
print(f"ready {total}", flush=True)
sys.stdin.read()
