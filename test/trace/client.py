# An HTTP/1.1 keep-alive client for the trace tests: N requests of one path on
# one connection, one after the other; optionally a small receive buffer and a
# pause between reads (a slow player), or no reading at all after the headers
# (a stalled one). Prints {"local": port} once connected, then one line per
# response read.
import json, re, socket, sys, time

host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rcvbuf = int(sys.argv[5]) if len(sys.argv) > 5 else 0
pace = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
stall = len(sys.argv) > 7 and sys.argv[7] == 'stall'
SO_RCVBUFFORCE = 33  # Linux; not in Python's socket module
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
if rcvbuf:
    # FORCE (CAP_NET_ADMIN): the size asked for, past net.core.rmem_max (a fresh
    # machine's 208 KiB); set before connect, so the window scale fits it.
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    except PermissionError:  # no CAP_NET_ADMIN: capped by rmem_max
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
s.connect((host, port))
print(json.dumps({"local": s.getsockname()[1]}), flush=True)
buf = b''
for i in range(n):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    while b'\r\n\r\n' not in buf:
        buf += s.recv(65536)
    head, buf = buf.split(b'\r\n\r\n', 1)
    length = int(re.search(rb'content-length: *(\d+)', head, re.I).group(1))
    if stall:
        time.sleep(3600)
    while len(buf) < length:
        d = s.recv(16384 if pace else 1 << 20)
        if not d:
            sys.exit('closed early')
        buf += d
        if pace:
            time.sleep(pace)
    buf = buf[length:]
    print(json.dumps({"response": i, "bytes": length, "head": len(head) + 4}), flush=True)
s.close()
