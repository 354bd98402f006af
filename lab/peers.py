#!/usr/bin/env python3
"""Client-side programs of the lab (lab/README in the top-level README,
section "The lab: ground truth and accuracy"). Every mode is bounded in time.

  client --host H --port P --plan JSON [--rcvbuf B] [--limit S] [--go-file F]
      One keep-alive HTTP/1.1 connection that fetches the segments of the
      plan in order (GET /seg?...), each read as the plan says: greedily, at a
      fixed rate, or with the reader stopping for a while (a decoder stall:
      the receive window closes), then waits the plan's think time (a player
      whose buffer is full). Prints JSON lines, times in CLOCK_REALTIME
      seconds (the clock the agent's chunk records use):
        {"event":"connected","local":"IP:PORT","t":...}
        {"event":"segment","i":N,"tReq":...,"tDone":...,"stall":[t0,t1,tFull]|null,"truth":"..."}
      (tFull: when the receive queue stopped growing, i.e. the window closed)
        {"event":"done","t":...}
      With --go-file, the client connects, prints "connected", and sends its
      first request only once F exists (the attach runner creates it when the
      agent lists the connection: byte offset 0 is then the first response).
  poll --url URL --port P --seconds S [--every 0.2]
      Polls the watch agent's /api/connections and prints every new
      per-interval delta of the connections on local port P, one JSON line:
        {"remote":...,"end":epoch_s,"seconds":...,"busy":...,"rwnd":...,"sndbuf":...,"acked":...}
"""
import argparse
import fcntl
import struct
import termios
import json
import os
import socket
import sys
import time
import urllib.request
from datetime import datetime


def now() -> float:
    return time.time()


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def read_headers(s: socket.socket, buf: bytearray, deadline: float) -> int:
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("no response headers before the limit")
        d = s.recv(65536)
        if not d:
            raise ConnectionError("server closed before the response")
        buf += d
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v.strip())
    raise ValueError("response without Content-Length")


def client(a) -> None:
    plan = json.loads(a.plan)
    deadline = time.monotonic() + a.limit
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.rcvbuf:
        # Before connect: fixes the window scale and turns receive autotuning off.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    s.settimeout(a.limit)
    s.connect((a.host, a.port))
    ip, port = s.getsockname()
    emit({"event": "connected", "local": f"{ip}:{port}", "t": now()})
    if a.go_file:
        while not os.path.exists(a.go_file):
            if time.monotonic() > deadline:
                raise TimeoutError("go file never appeared")
            time.sleep(0.02)
    buf = bytearray()
    for i, seg in enumerate(plan):
        if time.monotonic() > deadline:
            break
        q = "&".join(f"{k}={seg[k]}" for k in ("bytes", "pieces", "gapMs", "sndbuf") if seg.get(k))
        t_req = now()
        s.sendall(f"GET /seg?i={i}&{q} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
        length = read_headers(s, buf, deadline)
        got = min(len(buf), length)
        extra = bytes(buf[length:])
        buf[:] = extra
        rate = seg.get("readRate", 0)
        stall_after = seg.get("stallAfter", -1)
        stall = None
        t_body = time.monotonic()
        while got < length and time.monotonic() < deadline:
            if stall is None and 0 <= stall_after <= got:
                # The reader stops. The window closes only once the receive
                # queue is full: watch it (FIONREAD) and note when it stops
                # growing for 30 ms — the start of the receiver-side truth.
                t0 = now()
                end_stall = time.monotonic() + seg["stallSeconds"]
                last, same, t_full = -1, 0, None
                while time.monotonic() < end_stall:
                    time.sleep(0.01)
                    if t_full is None:
                        q = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
                        same = same + 1 if q == last else 0
                        last = q
                        if same >= 3:
                            t_full = now() - 0.03
                stall = [t0, now(), t_full if t_full is not None else t0]
                continue
            if rate and got > rate * (time.monotonic() - t_body):
                time.sleep(0.002)
                continue
            want = length - got
            if stall is None and stall_after >= 0:
                want = min(want, stall_after - got) or 1
            d = s.recv(min(want, 4096 if rate else 1 << 20))
            if not d:
                raise ConnectionError("server closed mid-response")
            got += len(d)
        emit({"event": "segment", "i": i, "tReq": t_req, "tDone": now(), "bytes": got, "stall": stall, "truth": seg["truth"]})
        think = seg.get("thinkSeconds", 0)
        if think:
            time.sleep(min(think, max(0, deadline - time.monotonic())))
    emit({"event": "done", "t": now()})
    s.close()


def poll(a) -> None:
    end = time.monotonic() + a.seconds
    seen = {}
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(a.url, timeout=2) as r:
                body = json.load(r)
        except OSError:
            time.sleep(a.every)
            continue
        for c in body.get("connections", []):
            if not c["local"].endswith(f":{a.port}"):
                continue
            li = c["lastInterval"]
            last = c["lastSeen"]
            if li["seconds"] <= 0 or seen.get(c["id"]) == last:
                continue
            seen[c["id"]] = last
            t = datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp()
            emit({"remote": c["remote"], "end": t, "seconds": li["seconds"], "busy": li["busySeconds"],
                  "rwnd": li["rwndLimitedSeconds"], "sndbuf": li["sndbufLimitedSeconds"],
                  "sndbufBound": li.get("sndbufBoundSeconds", 0), "acked": li["bytesAcked"]})
        time.sleep(a.every)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    cp = sub.add_parser("client")
    cp.add_argument("--host", required=True)
    cp.add_argument("--port", type=int, required=True)
    cp.add_argument("--plan", required=True)
    cp.add_argument("--rcvbuf", type=int, default=0)
    cp.add_argument("--limit", type=float, default=60)
    cp.add_argument("--go-file", default="")
    pp = sub.add_parser("poll")
    pp.add_argument("--url", required=True)
    pp.add_argument("--port", type=int, required=True)
    pp.add_argument("--seconds", type=float, required=True)
    pp.add_argument("--every", type=float, default=0.2)
    a = p.parse_args()
    {"client": client, "poll": poll}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
