#!/usr/bin/env python3
"""Traffic peers for the namespace tests (test/watch, test/dashboards, test/console).
Every mode is bounded in time.

  server --port P [--bytes N] [--lifetime S]
      Accepts connections; sends N bytes to each (0 = stream until the peer
      goes or the lifetime ends), then closes. Prints "listening P".
  client --host H --port P --seconds S [--rcvbuf B] [--rate R]
      Connects (SO_RCVBUF set before connect if given), reads for S seconds,
      at most R bytes/s if given. Prints "connected LOCAL_IP:LOCAL_PORT".
  short --host H --port P --count N
      N sequential connections, each read to EOF and closed. Prints
      "done N BYTES".
  paced-server --port P --bytes B --every S --lifetime L
      Accepts connections; writes B bytes to each every S seconds (the
      sender is idle in between: app-limited). Prints "listening P".
  http-client --host H --port P --path PATH --seconds S [--rcvbuf B]
              [--read N] [--pause S] [--hold S]
      Repeats GET PATH (one connection each, Connection: close) for S
      seconds, reading N bytes per recv with a pause between reads.
      --hold S: send the request, read nothing for S seconds, then close
      (a stalled response). Prints "done REQUESTS BYTES".
"""
import argparse
import socket
import sys
import threading
import time


def serve(port, backlog, lifetime, feed):
    """Accepts on port until lifetime ends; feed(conn, end) runs in a thread per connection."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(backlog)
    ls.settimeout(0.5)
    print(f"listening {port}", flush=True)
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=feed, args=(c, end), daemon=True).start()


def server(a):
    chunk = b"x" * 65536

    def feed(c, end):
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

    serve(a.port, 128, a.lifetime, feed)


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


def paced_server(a):
    payload = b"p" * a.bytes

    def feed(c, end):
        try:
            while time.monotonic() < end:
                c.sendall(payload)
                time.sleep(a.every)
        except OSError:
            pass
        finally:
            c.close()

    serve(a.port, 16, a.lifetime, feed)


def http_client(a):
    end = time.monotonic() + a.seconds
    requests = 0
    total = 0
    while time.monotonic() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if a.rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
        s.settimeout(5)
        try:
            s.connect((a.host, a.port))
            s.sendall(f"GET {a.path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n".encode())
            requests += 1
            if a.hold:
                time.sleep(min(a.hold, max(0.0, end - time.monotonic())))
                continue
            while time.monotonic() < end:
                d = s.recv(a.read)
                if not d:
                    break
                total += len(d)
                if a.pause:
                    time.sleep(a.pause)
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    print(f"done {requests} {total}", flush=True)


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
    ps = sub.add_parser("paced-server")
    ps.add_argument("--port", type=int, required=True)
    ps.add_argument("--bytes", type=int, required=True)
    ps.add_argument("--every", type=float, required=True)
    ps.add_argument("--lifetime", type=float, default=60)
    hc = sub.add_parser("http-client")
    hc.add_argument("--host", required=True)
    hc.add_argument("--port", type=int, required=True)
    hc.add_argument("--path", required=True)
    hc.add_argument("--seconds", type=float, required=True)
    hc.add_argument("--rcvbuf", type=int, default=0)
    hc.add_argument("--read", type=int, default=1 << 20)
    hc.add_argument("--pause", type=float, default=0)
    hc.add_argument("--hold", type=float, default=0)
    a = p.parse_args()
    modes = {"server": server, "client": client, "short": short, "paced-server": paced_server, "http-client": http_client}
    modes[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
