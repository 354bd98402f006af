#!/usr/bin/env python3
"""Traffic peers for the watch tests. Every mode is bounded in time.

  server --port P [--bytes N] [--lifetime S]
      Accepts connections; sends N bytes to each (0 = stream until the peer
      goes or the lifetime ends), then closes. Prints "listening P".
  client --host H --port P --seconds S [--rcvbuf B] [--rate R]
      Connects (SO_RCVBUF set before connect if given), reads for S seconds,
      at most R bytes/s if given. Prints "connected LOCAL_IP:LOCAL_PORT".
  short --host H --port P --count N
      N sequential connections, each read to EOF and closed. Prints
      "done N BYTES".
"""
import argparse
import socket
import sys
import threading
import time


def server(a):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", a.port))
    ls.listen(128)
    ls.settimeout(0.5)
    print(f"listening {a.port}", flush=True)
    end = time.monotonic() + a.lifetime
    chunk = b"x" * 65536

    def feed(c):
        try:
            if a.bytes > 0:
                left = a.bytes
                while left > 0 and time.monotonic() < end:
                    left -= c.send(chunk[: min(left, len(chunk))])
            else:
                c.settimeout(1.0)
                while time.monotonic() < end:
                    try:
                        c.send(chunk)
                    except socket.timeout:
                        pass
        except OSError:
            pass
        finally:
            c.close()

    while time.monotonic() < end:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=feed, args=(c,), daemon=True).start()


def client(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    s.connect((a.host, a.port))
    ip, port = s.getsockname()
    print(f"connected {ip}:{port}", flush=True)
    s.settimeout(0.5)
    start = time.monotonic()
    got = 0
    while time.monotonic() - start < a.seconds:
        if a.rate and got > a.rate * (time.monotonic() - start):
            time.sleep(0.01)
            continue
        try:
            d = s.recv(4096 if a.rate else 1 << 20)
        except socket.timeout:
            continue
        if not d:
            break
        got += len(d)
    print(f"read {got}", flush=True)
    s.close()


def short(a):
    total = 0
    for _ in range(a.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((a.host, a.port))
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            total += len(d)
        s.close()
    print(f"done {a.count} {total}", flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    sp = sub.add_parser("server")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--bytes", type=int, default=0)
    sp.add_argument("--lifetime", type=float, default=60)
    cp = sub.add_parser("client")
    cp.add_argument("--host", required=True)
    cp.add_argument("--port", type=int, required=True)
    cp.add_argument("--seconds", type=float, required=True)
    cp.add_argument("--rcvbuf", type=int, default=0)
    cp.add_argument("--rate", type=int, default=0)
    shp = sub.add_parser("short")
    shp.add_argument("--host", required=True)
    shp.add_argument("--port", type=int, required=True)
    shp.add_argument("--count", type=int, required=True)
    a = p.parse_args()
    {"server": server, "client": client, "short": short}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
