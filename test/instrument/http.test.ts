// instrumentHttp(): one chunk record per HTTP response on a real keep-alive connection.
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { instrumentHttp, type HttpChunkRecord } from '../../agent/index.js';
import { collect, sleep } from '../helpers/loopback.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  while (cleanup.length > 0) cleanup.pop()!();
});

const SEGMENT = 4 * 1024 * 1024;

async function server(handler: http.RequestListener) {
  const srv = http.createServer({ keepAlive: true }, handler);
  const probe = instrumentHttp(srv, { route: (req) => (req.url?.startsWith('/seg') ? 'segment' : 'other') });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  cleanup.push(() => {
    probe.close();
    srv.closeAllConnections();
    srv.close();
  });
  return { srv, probe, port: (srv.address() as { port: number }).port };
}

// One keep-alive connection for all requests, one after the other.
async function fetchAll(port: number, paths: string[]): Promise<number[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  cleanup.push(() => agent.destroy());
  const sizes: number[] = [];
  for (const path of paths) {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get({ host: '127.0.0.1', port, path, agent }, resolve).on('error', reject),
    );
    let n = 0;
    for await (const d of res) n += (d as Buffer).length;
    sizes.push(n);
  }
  return sizes;
}

describe('instrumentHttp', () => {
  it('one chunk per response on a keep-alive connection, labelled by route', async () => {
    const { probe, port } = await server((req, res) => {
      if (req.url === '/seg/chunked') {
        // No Content-Length: chunked encoding, 64 KiB writes.
        for (let i = 0; i < SEGMENT / 65536; i++) res.write(Buffer.alloc(65536, 1));
        res.end();
      } else if (req.url === '/seg/sized') {
        res.setHeader('content-length', SEGMENT);
        for (let i = 0; i < SEGMENT / 65536; i++) res.write(Buffer.alloc(65536, 2));
        res.end();
      } else {
        res.end('manifest');
      }
    });
    const chunks = collect<HttpChunkRecord>(probe, 'chunk', 3, 20_000);
    const sizes = await fetchAll(port, ['/seg/chunked', '/index.m3u8', '/seg/sized']);
    expect(sizes).toEqual([SEGMENT, 8, SEGMENT]);
    const got = await chunks;
    expect(got.map((c) => c.label)).toEqual(['segment', 'other', 'segment']);
    // Each record covers headers + body of its response, nothing of the next.
    expect(got[0]!.bytes).toBeGreaterThan(SEGMENT);
    expect(got[0]!.bytes).toBeLessThan(SEGMENT + 64 * 1024); // chunk framing + headers
    expect(got[1]!.bytes).toBeGreaterThan(8);
    expect(got[1]!.bytes).toBeLessThan(400);
    expect(got[2]!.bytes).toBeGreaterThan(SEGMENT);
    expect(got[2]!.bytes).toBeLessThan(SEGMENT + 400);
    expect(got.map((c) => c.remote)).toEqual([got[0]!.remote, got[0]!.remote, got[0]!.remote]);
    expect(got[1]!.offset).toBe(got[0]!.offset + got[0]!.bytes);
    expect(got[2]!.offset).toBe(got[1]!.offset + got[1]!.bytes);
    for (const c of got) {
      expect(c.exact).toBe(true);
      expect(c.ackTime).toBeDefined();
      expect(c.remote).toMatch(/^127\.0\.0\.1:\d+$/);
    }
    expect(got[0]!.id).toBeLessThan(got[1]!.id);
  });
});

// Raw requests over one connection, all sent at once (pipelining); resolves with
// the bytes read until the server closes or `bytes` arrived.
async function rawExchange(port: number, requests: string, bytes: number): Promise<number> {
  const sock = net.connect(port, '127.0.0.1');
  cleanup.push(() => sock.destroy());
  await once(sock, 'connect');
  sock.write(requests);
  let n = 0;
  for await (const d of sock) {
    n += (d as Buffer).length;
    if (n >= bytes) break;
  }
  return n;
}

describe('instrumentHttp without touching the writes', () => {
  it('pipelined requests: one exact chunk per response, in order, back to back, each of its own bytes', async () => {
    const sizes = [3 * 65536 + 17, 10, 2 * 65536];
    const { probe, port } = await server((req, res) => {
      const i = Number(req.url!.slice(1));
      const body = Buffer.alloc(sizes[i]!, 0x61 + i);
      if (i === 1) {
        // chunked, ended later
        res.write(body);
        setTimeout(() => res.end(), 20);
      } else {
        res.setHeader('content-length', body.length);
        // written in pieces, the last later than the rest
        res.write(body.subarray(0, 65536));
        setTimeout(() => res.end(body.subarray(65536)), 10);
      }
    });
    const chunks = collect<HttpChunkRecord>(probe, 'chunk', 3, 20_000);
    const stalls: HttpChunkRecord[] = [];
    probe.on('stall', (c) => stalls.push(c));
    const sock = net.connect(port, '127.0.0.1');
    cleanup.push(() => sock.destroy());
    await once(sock, 'connect');
    let total = 0;
    sock.on('data', (d: Buffer) => (total += d.length));
    // Three requests in one segment: the second and third responses wait their turn.
    sock.write([0, 1, 2].map((i) => `GET /${i} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
    const got = await chunks;
    await sleep(200);
    expect(stalls).toEqual([]);
    expect(got.map((c) => c.id)).toEqual([0, 1, 2]);
    expect(got[0]!.offset).toBe(0);
    for (let i = 1; i < 3; i++) expect(got[i]!.offset).toBe(got[i - 1]!.offset + got[i - 1]!.bytes);
    // The chunks cover every byte the client received, nothing more.
    const end = got[2]!.offset + got[2]!.bytes;
    for (let t = 0; t < 100 && total < end; t++) await sleep(50);
    expect(end).toBe(total);
    for (const [i, c] of got.entries()) {
      // The next response's bytes follow at once: while the client is slow to
      // read (a loaded machine), the kernel appends them to the unsent last
      // segment of this one and keys that segment's record at their end, so
      // only the last response is sure to be matched at its own last byte.
      if (i === got.length - 1) expect(c.exact, `response ${i}`).toBe(true);
      expect(c.ackTime, `response ${i}`).toBeDefined();
      expect(c.bytes).toBeGreaterThan(sizes[i]!);
      expect(c.bytes).toBeLessThan(sizes[i]! + 300);
      expect(c.writeTime).toBeLessThanOrEqual(c.lastWriteTime);
      expect(c.ackTime!).toBeGreaterThanOrEqual(c.lastWriteTime);
    }
  });

  it('a Content-Length body completed by write() and ended later (as pipe() does) is exact; so is a piped stream', async () => {
    const { probe, port } = await server((req, res) => {
      if (req.url === '/pipe') {
        res.setHeader('content-length', 5 * 65536);
        Readable.from(Array.from({ length: 5 }, () => Buffer.alloc(65536, 3))).pipe(res);
      } else {
        res.setHeader('content-length', 65536 + 5);
        res.write(Buffer.alloc(65536, 1));
        res.write('hello');
        setTimeout(() => res.end(), 50);
      }
    });
    const chunks = collect<HttpChunkRecord>(probe, 'chunk', 2, 20_000);
    const sizes = await fetchAll(port, ['/later', '/pipe']);
    expect(sizes).toEqual([65536 + 5, 5 * 65536]);
    const got = await chunks;
    for (const c of got) expect(c.exact).toBe(true);
    expect(got[1]!.offset).toBe(got[0]!.offset + got[0]!.bytes);
  });

  it('a response written after async work: writeTime is its first write, not the request', async () => {
    let firstWrite = 0;
    const { probe, port } = await server((req, res) => {
      setTimeout(() => {
        firstWrite = Date.now() / 1000;
        res.end(Buffer.alloc(1000));
      }, 150);
    });
    const chunks = collect<HttpChunkRecord>(probe, 'chunk', 1, 20_000);
    await fetchAll(port, ['/x']);
    const [c] = await chunks;
    expect(c!.exact).toBe(true);
    expect(Math.abs(c!.writeTime - firstWrite)).toBeLessThan(0.02);
    expect(c!.deliveryTime).toBeLessThan(2);
  });

  it('short connections (Connection: close): each response one exact chunk, nothing stalled or pending', async () => {
    const { probe, port } = await server((req, res) => {
      res.setHeader('connection', 'close');
      res.end(Buffer.alloc(2000 + Number(req.url!.slice(1))));
    });
    const n = 40;
    const got: HttpChunkRecord[] = [];
    const stalls: HttpChunkRecord[] = [];
    probe.on('chunk', (c) => got.push(c));
    probe.on('stall', (c) => stalls.push(c));
    await Promise.all(Array.from({ length: n }, (_, i) => rawExchange(port, `GET /${i} HTTP/1.1\r\nHost: x\r\n\r\n`, Infinity)));
    for (let t = 0; t < 200 && got.length + stalls.length < n; t++) await sleep(50);
    await sleep(100);
    // One record per response. The server closes the fd right after its FIN:
    // an ACK the kernel had not processed by then makes that one a stall
    // (the socket closed first), which a loaded machine can cause.
    expect(got.length + stalls.length).toBe(n);
    expect([...got, ...stalls].every((c) => c.offset === 0 && c.id === 0)).toBe(true);
    expect(got.every((c) => c.exact)).toBe(true);
    expect(new Set([...got, ...stalls].map((c) => c.remote)).size).toBe(n);
    expect(probe.connections).toBe(0);
  });

  it("leaves the server's sockets, handles and responses as Node made them", async () => {
    let seen: { socket: object; handle: object; res: object } | undefined;
    const { probe, port } = await server((req, res) => {
      seen = { socket: req.socket, handle: (req.socket as unknown as { _handle: object })._handle, res };
      res.end('ok');
    });
    const chunks = collect<HttpChunkRecord>(probe, 'chunk', 1, 20_000);
    await fetchAll(port, ['/x']);
    await chunks;
    const own = (o: object): string[] => Object.getOwnPropertyNames(o);
    for (const m of ['write', 'end']) expect(own(seen!.socket)).not.toContain(m);
    for (const m of ['writeBuffer', 'writev', 'writeLatin1String', 'writeUtf8String', 'close']) expect(own(seen!.handle)).not.toContain(m);
    for (const m of ['write', 'end']) expect(own(seen!.res)).not.toContain(m);
  });

  it('two instrumented servers: closing one leaves the other whole', async () => {
    const a = await server((req, res) => res.end(Buffer.alloc(3000)));
    const b = await server((req, res) => res.end(Buffer.alloc(5000)));
    const first = collect<HttpChunkRecord>(a.probe, 'chunk', 1, 20_000);
    await fetchAll(a.port, ['/x']);
    await first;
    a.probe.close();
    const chunks = collect<HttpChunkRecord>(b.probe, 'chunk', 3, 20_000);
    await fetchAll(b.port, ['/1', '/2', '/3']);
    const got = await chunks;
    expect(got.map((c) => c.id)).toEqual([0, 1, 2]);
    for (const c of got) expect(c.exact).toBe(true);
  });
});
