# A server that timestamps its own writes (SO_TIMESTAMPING: TX_ACK with
# OPT_ID, software, timestamps only) for test/trace/servers.test.ts. It
# accepts one connection on 127.0.0.1:PORT, writes N pieces of SIZE bytes
# 10 ms apart, then reads its error queue until every piece's ACK record has
# come (or 5 s passed) and prints {"ids": [...], "other": n}: the OPT_ID of
# every timestamp record it got, and how many error-queue messages were not
# timestamp records of its own kind.
import json, select, socket, struct, sys, time

port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
SO_TIMESTAMPING = 37
FLAGS = (1 << 4) | (1 << 7) | (1 << 9) | (1 << 11)  # SOFTWARE | OPT_ID | TX_ACK | OPT_TSONLY
SO_EE_ORIGIN_TIMESTAMPING = 4
MSG_ERRQUEUE = 0x2000
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(('127.0.0.1', port))
ls.listen(1)
print('listening', flush=True)
c, _ = ls.accept()
c.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, FLAGS)
c.recv(100)  # the client's go
for i in range(n):
    c.sendall(b'x' * size)
    time.sleep(0.01)
ids, other = [], 0
end = time.time() + 5
while len(ids) < n and time.time() < end:
    select.select([], [], [c], 0.2)
    try:
        _, anc, _, _ = c.recvmsg(0, 512, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except BlockingIOError:
        continue
    got = False
    for level, kind, data in anc:
        if level in (0, 41) and len(data) >= 16:  # SOL_IP, SOL_IPV6
            _, origin, _, _, _, _, ident = struct.unpack('=IBBBBII', data[:16])
            if origin == SO_EE_ORIGIN_TIMESTAMPING:
                ids.append(ident)
                got = True
    if not got:
        other += 1
print(json.dumps({'ids': ids, 'other': other}), flush=True)
c.close()
