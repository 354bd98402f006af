# A keep-alive HTTP/1.1 client driven by the test through stdin, for
# connections that must outlive one step of a test (opened before the agent
# starts, used after): connects to 127.0.0.1:PORT (retrying while refused), prints {"local": port};
# then per line "GET PATH" sends the request, reads the whole response and
# prints {"response": i, "head": header bytes, "bytes": body bytes}; "close"
# (or the end of stdin) closes the connection and exits.
import json, re, socket, sys, time

port = int(sys.argv[1])
# The server may still be starting (in another namespace the test cannot wait for it): 10 s of retries.
for attempt in range(200):
    try:
        s = socket.create_connection(('127.0.0.1', port), timeout=20)
        break
    except ConnectionRefusedError:
        if attempt == 199:
            raise
        time.sleep(0.05)
print(json.dumps({'local': s.getsockname()[1]}), flush=True)
buf = b''
i = 0
for line in sys.stdin:
    words = line.split()
    if not words or words[0] == 'close':
        break
    s.sendall(('GET %s HTTP/1.1\r\nHost: test\r\n\r\n' % words[1]).encode())
    while b'\r\n\r\n' not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit('closed early')
        buf += d
    head, buf = buf.split(b'\r\n\r\n', 1)
    length = int(re.search(rb'content-length: *(\d+)', head, re.I).group(1))
    while len(buf) < length:
        d = s.recv(1 << 20)
        if not d:
            sys.exit('closed early')
        buf += d
    buf = buf[length:]
    print(json.dumps({'response': i, 'head': len(head) + 4, 'bytes': length}), flush=True)
    i += 1
s.close()
