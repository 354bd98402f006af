#!/usr/bin/env python3
"""Traffic peers for the dashboards end-to-end test (the bulk peers are
test/watch/peers.py). Every mode is bounded in time.

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


def paced_server(a):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", a.port))
    ls.listen(16)
    ls.settimeout(0.5)
    print(f"listening {a.port}", flush=True)
    end = time.monotonic() + a.lifetime
    payload = b"p" * a.bytes

    def feed(c):
        try:
            while time.monotonic() < end:
                c.sendall(payload)
                time.sleep(a.every)
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
    {"paced-server": paced_server, "http-client": http_client}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
