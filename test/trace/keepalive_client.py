# A keep-alive HTTP client for test/trace/servers.test.ts: one connection to
# 127.0.0.1:PORT, over TLS with --tls (certificate not verified: the test
# made it), GET of each PATH in turn, reading each response to its Content-Length.
# Prints {"local": port} once connected, then per response
# {"response": i, "head": header bytes, "bytes": body bytes}.
import json, socket, ssl, sys

args = sys.argv[1:]
tls = args[0] == '--tls'
if tls:
    args = args[1:]
port, paths = int(args[0]), args[1:]
raw = socket.create_connection(('127.0.0.1', port), timeout=20)
s = raw
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(raw, server_hostname='localhost')
print(json.dumps({'local': s.getsockname()[1]}), flush=True)
buf = b''
for i, path in enumerate(paths):
    s.sendall(('GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n' % path).encode())
    while b'\r\n\r\n' not in buf:
        buf += s.recv(65536)
    head, _, buf = buf.partition(b'\r\n\r\n')
    length = next(int(l.split(b':')[1]) for l in head.split(b'\r\n') if l.lower().startswith(b'content-length:'))
    while len(buf) < length:
        buf += s.recv(65536)
    buf = buf[length:]
    print(json.dumps({'response': i, 'head': len(head) + 4, 'bytes': length}), flush=True)
s.close()
