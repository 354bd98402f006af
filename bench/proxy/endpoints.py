# Traffic endpoints for the proxy benchmark (Python: the socket work happens in C).
#   server MODE           listens on 127.0.0.1:0, prints its port; MODE raw: sends
#                         without end on every connection; http: answers each GET on
#                         a keep-alive connection with one SEGMENT-byte response.
#   client MODE PORT STREAMS SECONDS
#                         opens STREAMS connections, reads (raw) or fetches segments
#                         back to back (http) for SECONDS; prints JSON with bytes.
import json, selectors, socket, sys, threading, time

SEGMENT = 4 * 1024 * 1024
HEAD = b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: video/mp2t\r\n\r\n' % SEGMENT
BODY = memoryview(bytes(SEGMENT))
BLOCK = memoryview(bytes(1 << 20))


def serve(mode):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('127.0.0.1', 0))
    ls.listen(1024)
    print(ls.getsockname()[1], flush=True)

    def handle(c):
        try:
            if mode == 'raw':
                while True:
                    c.sendall(BLOCK)
            else:
                buf = b''
                while True:
                    while b'\r\n\r\n' not in buf:
                        d = c.recv(65536)
                        if not d:
                            return
                        buf += d
                    _, _, buf = buf.partition(b'\r\n\r\n')
                    c.sendall(HEAD)
                    c.sendall(BODY)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def client(mode, port, streams, seconds):
    sel = selectors.DefaultSelector()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    per_response = len(HEAD) + SEGMENT
    state = {}
    for _ in range(streams):
        s = socket.create_connection(('127.0.0.1', port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        state[s] = 0  # bytes of the current response
        if mode == 'http':
            s.send(b'GET /seg HTTP/1.1\r\nHost: bench\r\n\r\n')
    total = 0
    responses = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                n = s.recv_into(view)
            except BlockingIOError:
                continue
            if n == 0:
                sel.unregister(s)
                continue
            total += n
            if mode == 'http':
                state[s] += n
                if state[s] >= per_response:
                    # Requests are sent one at a time, so no response runs over.
                    state[s] -= per_response
                    responses += 1
                    s.send(b'GET /seg HTTP/1.1\r\nHost: bench\r\n\r\n')
    elapsed = time.monotonic() - t0
    for s in list(state):
        s.close()
    print(json.dumps({'bytes': total, 'seconds': elapsed, 'responses': responses}), flush=True)


if __name__ == '__main__':
    if sys.argv[1] == 'server':
        serve(sys.argv[2])
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
