#!/usr/bin/env python3
# A delay line between two interfaces of one network namespace (the middle of
# DelayLab, test/lab/delay.ts): every frame received on one interface is held
# for DELAY_MS, then sent out of the other one, with its Ethernet addresses
# rewritten as a router would (source: our outgoing interface, destination: the
# host behind it). No netem on our machines: this is where the propagation
# delay comes from.
#
#   forwarder.py IF_A IF_B DELAY_MS MAC_A MAC_B MAC_HOST_A MAC_HOST_B LIFETIME_S
#
# MAC_A/MAC_B are this namespace's interfaces, MAC_HOST_A/MAC_HOST_B the
# hosts behind them. One AF_PACKET socket per interface, bound with ETH_P_ALL
# (protocol 0 would receive nothing); frames we sent ourselves come back as
# PACKET_OUTGOING and are skipped. ARP is not forwarded (the ends use static
# neighbour entries). Prints "ready" once both sockets are bound; on SIGTERM
# prints one JSON line of counters and exits. Dies with its parent
# (PR_SET_PDEATHSIG) and after LIFETIME_S in any case.
import collections
import ctypes
import json
import os
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS: struct timespec, CLOCK_REALTIME
PR_SET_PDEATHSIG = 1
BATCH = 16


def main() -> None:
    if_a, if_b = sys.argv[1], sys.argv[2]
    delay = float(sys.argv[3]) / 1000.0
    mac_a, mac_b, host_a, host_b = (bytes.fromhex(m.replace(':', '')) for m in sys.argv[4:8])
    lifetime = float(sys.argv[8])

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Real-time priority, so a busy sender or reader on the same cores does not
    # delay the forwarder's sends (it blocks in select() between frames).
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        realtime = True
    except OSError:
        realtime = False

    socks = {}
    for name in (if_a, if_b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
        # Kernel receive timestamps: the delay counts from the frame's arrival,
        # not from when we got round to reading it.
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((name, ETH_P_ALL))
        s.setblocking(False)
        socks[name] = s
    sa, sb = socks[if_a], socks[if_b]
    # Frames from A leave through B towards host B, and the reverse.
    route = {
        sa.fileno(): (sb, host_b + mac_b, collections.deque()),
        sb.fileno(): (sa, host_a + mac_a, collections.deque()),
    }
    queues = [r[2] for r in route.values()]
    outs = {id(r[2]): r[0] for r in route.values()}
    counters = {'forwarded': 0, 'sendErrors': 0, 'skippedArp': 0, 'maxLateUs': 0, 'maxReadLagUs': 0, 'realtime': realtime}

    def stop(*_: object) -> None:
        print(json.dumps(counters), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print('ready', flush=True)
    deadline = time.monotonic() + lifetime
    readers = [sa, sb]
    while True:
        now = time.monotonic()
        if now > deadline:
            stop()
        # Send what is due. Each direction is a FIFO with a constant delay, so due times are in order.
        timeout = deadline - now
        for q in queues:
            out = outs[id(q)]
            while q and q[0][0] <= now:
                due, frame = q.popleft()
                late = int((now - due) * 1e6)
                if late > counters['maxLateUs']:
                    counters['maxLateUs'] = late
                try:
                    out.send(frame)
                    counters['forwarded'] += 1
                except OSError:
                    # ENOBUFS from a full shaping qdisc: the frame is dropped, as a router would.
                    counters['sendErrors'] += 1
            if q:
                timeout = min(timeout, q[0][0] - now)
        ready, _, _ = select.select(readers, [], [], max(timeout, 0))
        # CLOCK_REALTIME → CLOCK_MONOTONIC, once per wakeup.
        offset = time.monotonic() - time.time()
        for s in ready:
            _, header, q = route[s.fileno()]
            # A bounded batch per socket, then back to the due frames: a burst
            # arriving must not make the other direction's frames late.
            for _ in range(BATCH):
                try:
                    frame, anc, _flags, addr = s.recvmsg(65536, 64)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                if addr[1] == ETH_P_ARP:
                    counters['skippedArp'] += 1
                    continue
                arrived = None
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                        sec, nsec = struct.unpack('qq', data[:16])
                        arrived = sec + nsec * 1e-9 + offset
                now = time.monotonic()
                if arrived is None or arrived > now:
                    arrived = now
                lag = int((now - arrived) * 1e6)
                if lag > counters['maxReadLagUs']:
                    counters['maxReadLagUs'] = lag
                q.append((arrived + delay, header + frame[12:]))


if __name__ == '__main__':
    main()
