// The relay on real loopback sockets: bytes both ways, half-close, resets,
// upstream failures, PROXY protocol headers, backpressure, and chunk records
// per HTTP response (keep-alive, pipelined, chunked) with route labels.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TcpProxy, type ProxyChunkRecord, type ProxyOptions } from '../../agent/proxy/relay.js';
import { RouteMap, parseRoute } from '../../agent/proxy/routes.js';
import { collect, listen, portOf, sleep, slowReader } from '../helpers/loopback.js';

/** Waits until `cond` holds (counters are updated by events that may come a turn later). */
async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(5);
}

const KiB = 1024;
const MiB = 1024 * KiB;

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()!();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function upstreamServer(host: '127.0.0.1' | '::1', onConn: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, onConn);
  server.listen(0, host);
  await once(server, 'listening');
  cleanup.push(() => server.close());
  return server;
}

async function startProxy(upstreamPort: number, opts: Partial<ProxyOptions> = {}, host: '127.0.0.1' | '::1' = '127.0.0.1'): Promise<Proxy> {
  const proxy = new TcpProxy({ listen: { host, port: 0 }, upstream: { host, port: upstreamPort }, ...opts });
  await proxy.start();
  cleanup.push(() => proxy.close(100));
  return proxy;
}

function connectTo(proxy: TcpProxy, host = '127.0.0.1', allowHalfOpen = false): Promise<net.Socket> {
  const s = net.connect({ host, port: proxy.address.port, allowHalfOpen });
  cleanup.push(() => s.destroy());
  return once(s, 'connect').then(() => s);
}

function readAll(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

/** Resolves with the first error or 'close' of a socket. */
function outcome(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    s.once('close', () => resolve('close'));
  });
}

describe('relay', () => {
  it('copies large transfers both ways at once, byte for byte', async () => {
    const down = randomBytes(24 * MiB);
    const up = randomBytes(8 * MiB);
    let upstreamGot: Promise<Buffer> | undefined;
    const server = await upstreamServer('127.0.0.1', (s) => {
      upstreamGot = readAll(s);
      s.end(down);
    });
    const proxy = await startProxy(portOf(server));
    const client = await connectTo(proxy);
    const got = readAll(client);
    client.end(up);
    expect(sha(await got)).toBe(sha(down));
    expect(sha(await upstreamGot!)).toBe(sha(up));
    await until(() => proxy.counters.bytesToUpstream === up.length);
    expect(proxy.counters.bytesToClient).toBe(down.length);
    expect(proxy.counters.bytesToUpstream).toBe(up.length);
    expect(proxy.counters.upstreamErrors.refused).toBe(0);
  });

  it('relays a half-close from the client: the server still answers after its EOF', async () => {
    const answer = randomBytes(2 * MiB);
    const server = await upstreamServer('127.0.0.1', (s) => {
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('end', () => {
        // The request is complete only at EOF: answer now.
        s.write(Buffer.concat(parts));
        s.end(answer);
      });
    });
    const proxy = await startProxy(portOf(server));
    const client = await connectTo(proxy, '127.0.0.1', true);
    const got = readAll(client);
    client.end('question');
    const all = await got;
    expect(all.subarray(0, 8).toString()).toBe('question');
    expect(sha(all.subarray(8))).toBe(sha(answer));
  });

  it('relays a half-close from the server: the client still sends after its EOF', async () => {
    let serverGot: Promise<Buffer> | undefined;
    const server = await upstreamServer('127.0.0.1', (s) => {
      serverGot = readAll(s);
      s.end('banner');
    });
    const proxy = await startProxy(portOf(server));
    const client = await connectTo(proxy, '127.0.0.1', true);
    const got = await readAll(client);
    expect(got.toString()).toBe('banner');
    const late = randomBytes(1 * MiB);
    client.end(late);
    expect(sha(await serverGot!)).toBe(sha(late));
  });

  it('propagates a reset from the client to the server', async () => {
    let serverSide: Promise<string> | undefined;
    const accepted = new Promise<void>((resolve) => {
      void upstreamServer('127.0.0.1', (s) => {
        serverSide = outcome(s);
        s.write('hi');
        resolve();
      }).then((server) => void startProxy(portOf(server)).then(async (proxy) => {
        const client = await connectTo(proxy);
        await once(client, 'data');
        client.resetAndDestroy();
      }));
    });
    await accepted;
    expect(await serverSide!).toBe('ECONNRESET');
  });

  it('propagates a reset from the server to the client', async () => {
    const server = await upstreamServer('127.0.0.1', (s) => {
      s.write('hi');
      setTimeout(() => s.resetAndDestroy(), 20);
    });
    const proxy = await startProxy(portOf(server));
    const client = await connectTo(proxy);
    const result = outcome(client);
    client.resume();
    expect(await result).toBe('ECONNRESET');
    await until(() => proxy.counters.upstreamErrors.reset === 1 && proxy.counters.open === 0);
    expect(proxy.counters.upstreamErrors.reset).toBe(1);
    expect(proxy.counters.open).toBe(0);
  });

  it('an upstream that refuses: the client is reset, the failure counted, the proxy goes on', async () => {
    const closed = await upstreamServer('127.0.0.1', () => undefined);
    const port = portOf(closed);
    closed.close();
    await once(closed, 'close');
    const proxy = await startProxy(port);
    for (let i = 0; i < 3; i++) {
      const client = await connectTo(proxy);
      expect(['ECONNRESET', 'close']).toContain(await outcome(client));
    }
    await until(() => proxy.counters.upstreamErrors.refused === 3 && proxy.counters.open === 0);
    expect(proxy.counters.upstreamErrors.refused).toBe(3);
    expect(proxy.counters.accepted).toBe(3);
    expect(proxy.counters.open).toBe(0);
  });
});

describe('latency', () => {
  it('small replies in several writes are not held back (Nagle toward the client, pushed when the upstream pauses)', async () => {
    const server = await upstreamServer('127.0.0.1', (s) => {
      s.setNoDelay(true); // a latency-minded server: any delay seen is the proxy's
      s.on('data', () => {
        // Three small writes a moment apart: the pattern Nagle + delayed ACKs delays by ~40 ms.
        s.write(Buffer.alloc(100, 1));
        setTimeout(() => s.write(Buffer.alloc(100, 2)), 1);
        setTimeout(() => s.write(Buffer.alloc(100, 3)), 2);
      });
    });
    const proxy = await startProxy(portOf(server));
    const client = await connectTo(proxy);
    client.setNoDelay(true);
    const rtts: number[] = [];
    let got = 0;
    let done: (() => void) | undefined;
    client.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= 300) {
        got -= 300;
        done?.();
      }
    });
    for (let i = 0; i < 40; i++) {
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        done = resolve;
        client.write('ping');
      });
      rtts.push(performance.now() - t0);
    }
    rtts.sort((a, b) => a - b);
    expect(rtts[Math.floor(rtts.length / 2)]).toBeLessThan(15);
    expect(rtts[Math.floor(rtts.length * 0.9)]).toBeLessThan(30);
  });
});

describe('PROXY protocol', () => {
  async function firstBytes(version: 'v1' | 'v2', host: '127.0.0.1' | '::1'): Promise<{ got: Buffer; client: net.Socket; proxy: TcpProxy }> {
    let resolveGot: (b: Buffer) => void;
    const gotP = new Promise<Buffer>((r) => (resolveGot = r));
    const server = await upstreamServer(host, (s) => {
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('end', () => resolveGot(Buffer.concat(parts)));
    });
    const proxy = await startProxy(portOf(server), { proxyProtocol: version }, host);
    const client = await connectTo(proxy, host);
    client.end('GET / HTTP/1.1\r\n\r\n');
    return { got: await gotP, client, proxy };
  }

  it('v1, IPv4: the text line, then the client bytes', async () => {
    const { got, client, proxy } = await firstBytes('v1', '127.0.0.1');
    expect(got.toString('latin1')).toBe(`PROXY TCP4 127.0.0.1 127.0.0.1 ${client.localPort} ${proxy.address.port}\r\nGET / HTTP/1.1\r\n\r\n`);
  });

  it('v1, IPv6', async () => {
    const { got, client, proxy } = await firstBytes('v1', '::1');
    expect(got.toString('latin1')).toBe(`PROXY TCP6 ::1 ::1 ${client.localPort} ${proxy.address.port}\r\nGET / HTTP/1.1\r\n\r\n`);
  });

  it('v2, IPv4 and IPv6: signature, command, family, addresses, ports', async () => {
    const sig = '0d0a0d0a000d0a515549540a';
    const hex = (n: number): string => n.toString(16).padStart(4, '0');
    {
      const { got, client, proxy } = await firstBytes('v2', '127.0.0.1');
      expect(got.subarray(0, 28).toString('hex')).toBe(`${sig}2111000c7f0000017f000001${hex(client.localPort!)}${hex(proxy.address.port)}`);
      expect(got.subarray(28).toString()).toBe('GET / HTTP/1.1\r\n\r\n');
    }
    {
      const { got, client, proxy } = await firstBytes('v2', '::1');
      const one = '00000000000000000000000000000001';
      expect(got.subarray(0, 52).toString('hex')).toBe(`${sig}21210024${one}${one}${hex(client.localPort!)}${hex(proxy.address.port)}`);
      expect(got.subarray(52).toString()).toBe('GET / HTTP/1.1\r\n\r\n');
    }
  });
});

// Precomposed responses, so the expected chunk sizes are known to the byte.
function contentLength(body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nContent-Type: video/mp2t\r\n\r\n`), body]);
}
function chunked(parts: Buffer[]): Buffer {
  const pieces: Buffer[] = [Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')];
  for (const p of parts) pieces.push(Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from('\r\n'));
  pieces.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(pieces);
}

describe('HTTP/1.1 through the relay: one chunk record per response', () => {
  const routes = new RouteMap([parseRoute('segment=/seg/'), parseRoute('manifest=/index')]);

  it('pipelined keep-alive requests: N responses → N records with exact byte counts and route labels', async () => {
    const requests = ['GET /seg/1.ts', 'GET /index.m3u8', 'GET /seg/2.ts', 'GET /other', 'HEAD /seg/3.ts', 'GET /seg/4.ts'];
    const responses = [
      contentLength(randomBytes(1 * MiB)),
      contentLength(Buffer.from('#EXTM3U\n'.repeat(12))),
      chunked([randomBytes(300 * KiB), randomBytes(300 * KiB), randomBytes(17)]),
      Buffer.from('HTTP/1.1 204 No Content\r\n\r\n'),
      Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n'), // HEAD: no body
      contentLength(randomBytes(64 * KiB + 3)),
    ];
    const all = Buffer.concat(responses);
    const server = await upstreamServer('127.0.0.1', (s) => {
      let seen = '';
      s.on('data', (d: Buffer) => {
        seen += d.toString('latin1');
        if (seen.split('\r\n\r\n').length - 1 < requests.length) return;
        // Every request is in: answer in odd-sized pieces, so response
        // boundaries fall inside the relay's reads.
        void (async () => {
          for (let at = 0; at < all.length; ) {
            const n = Math.min(all.length - at, 1 + Math.floor(Math.random() * 200 * KiB));
            s.write(all.subarray(at, at + n));
            at += n;
            if (Math.random() < 0.3) await sleep(2);
          }
        })();
      });
    });
    const proxy = await startProxy(portOf(server), { routes });
    const records = collect<ProxyChunkRecord>(proxy, 'chunk', responses.length, 20_000);
    const client = await connectTo(proxy);
    const received: Buffer[] = [];
    let n = 0;
    const done = new Promise<void>((resolve) =>
      client.on('data', (d: Buffer) => {
        received.push(d);
        n += d.length;
        if (n >= all.length) resolve();
      }),
    );
    client.write(requests.map((r) => `${r} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
    await done;
    expect(sha(Buffer.concat(received))).toBe(sha(all));
    const got = (await records).sort((a, b) => a.offset - b.offset);
    expect(got.map((c) => c.bytes)).toEqual(responses.map((r) => r.length));
    expect(got.map((c) => c.route)).toEqual(['segment', 'manifest', 'segment', undefined, 'segment', 'segment']);
    let offset = 0;
    for (const c of got) {
      expect(c.offset).toBe(offset);
      offset += c.bytes;
      expect(c.stalled).toBe(false);
      expect(c.ackTime).toBeDefined();
      expect(c.remote).toBe(`127.0.0.1:${client.localPort}`);
      expect(c.port).toBe(proxy.address.port);
    }
    // Records are asked for the last write of each response only. A response
    // whose last write is coalesced with the next (Node joins queued writes
    // into one writev) is timed by a later byte's record: `exact` false.
    expect(got.some((c) => c.exact)).toBe(true);
    expect(proxy.counters.httpResponses).toBe(responses.length);
  });

  it('a Node http server and client over keep-alive, chunked encoding: records match the bytes on the wire', async () => {
    const sizes = [3 * MiB, 10, 700 * KiB, 1];
    const upstream = http.createServer({ keepAlive: true }, (req, res) => {
      const size = sizes[Number(req.url!.split('/').pop())]!;
      // No Content-Length: Node uses chunked encoding.
      for (let left = size; left > 0; left -= 64 * KiB) res.write(Buffer.alloc(Math.min(left, 64 * KiB), 7));
      res.end();
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    cleanup.push(() => {
      upstream.closeAllConnections();
      upstream.close();
    });
    const proxy = await startProxy((upstream.address() as net.AddressInfo).port, { routes });
    const records = collect<ProxyChunkRecord>(proxy, 'chunk', sizes.length, 20_000);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.push(() => agent.destroy());
    const wire: number[] = [];
    let socket: net.Socket | undefined;
    let before = 0;
    for (let i = 0; i < sizes.length; i++) {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
        http.get({ host: '127.0.0.1', port: proxy.address.port, path: `/seg/${i}`, agent }, resolve).on('error', reject),
      );
      socket ??= res.socket as net.Socket;
      let body = 0;
      for await (const d of res) body += (d as Buffer).length;
      expect(body).toBe(sizes[i]);
      wire.push(socket.bytesRead - before);
      before = socket.bytesRead;
    }
    const got = (await records).sort((a, b) => a.offset - b.offset);
    expect(got.map((c) => c.bytes)).toEqual(wire);
    expect(got.every((c) => c.route === 'segment')).toBe(true);
  });

  it('garbage from the upstream: the response before it is one chunk, then one chunk per relay write', async () => {
    const response = contentLength(randomBytes(100 * KiB));
    const server = await upstreamServer('127.0.0.1', (s) => {
      void (async () => {
        await once(s, 'data'); // the request
        s.write(response);
        await sleep(50);
        for (let i = 0; i < 3; i++) {
          s.write(Buffer.alloc(10 * KiB, 0xff)); // not HTTP
          await sleep(50);
        }
        s.end();
      })();
    });
    const proxy = await startProxy(portOf(server), { routes });
    const records = collect<ProxyChunkRecord>(proxy, 'chunk', 4, 20_000);
    const client = await connectTo(proxy);
    client.write('GET /seg/a.ts HTTP/1.1\r\n\r\n');
    const got = await readAll(client);
    expect(got.length).toBe(response.length + 30 * KiB);
    const recs = (await records).sort((a, b) => a.offset - b.offset);
    expect(recs.map((c) => c.bytes)).toEqual([response.length, 10 * KiB, 10 * KiB, 10 * KiB]);
    expect(recs[0]!.route).toBe('segment');
    expect(recs.slice(1).every((c) => c.route === undefined)).toBe(true);
    expect(proxy.counters.rawFallbacks['not-http']).toBe(1);
  });

  it('a slow client: chunks are rwnd-limited, the upstream is held back, proxy memory stays bounded', async () => {
    // More than the proxy's socket buffers can take (the send buffer grows to
    // tcp_wmem's 4 MiB on loopback): the rest must wait in the upstream.
    const count = 12;
    const size = 1 * MiB;
    const response = contentLength(Buffer.alloc(size, 3));
    let upstreamBacklog = 0;
    const server = await upstreamServer('127.0.0.1', (s) => {
      // Unsolicited responses (the reader sends no request): all written at once.
      for (let i = 0; i < count; i++) s.write(response);
      s.end();
      const t = setInterval(() => (upstreamBacklog = Math.max(upstreamBacklog, s.writableLength)), 20);
      s.once('close', () => clearInterval(t));
    });
    const proxy = await startProxy(portOf(server));
    const chunks: ProxyChunkRecord[] = [];
    proxy.on('chunk', (c: ProxyChunkRecord) => chunks.push(c));
    const total = count * response.length;
    const reader = slowReader('127.0.0.1', proxy.address.port, { rcvbuf: 4096, chunk: 65536, pause: 0.001, total, limitSeconds: 30 });
    cleanup.push(() => reader.kill());
    let out = '';
    reader.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = await once(reader, 'exit');
    expect(code).toBe(0);
    expect(Number(out.trim())).toBe(total);
    for (let i = 0; i < 100 && chunks.length < count; i++) await sleep(50);
    expect(chunks).toHaveLength(count);
    expect(chunks.every((c) => c.bytes === response.length)).toBe(true);
    const rwnd = chunks.filter((c) => c.limit === 'rwnd');
    expect(rwnd.length).toBeGreaterThanOrEqual(count - 1);
    for (const c of rwnd) expect(c.rwndLimited / c.deliveryTime).toBeGreaterThan(0.5);
    // Backpressure: the proxy paused its upstream reads and held little;
    // the rest waited in the upstream server.
    expect(proxy.counters.pausesToClient).toBeGreaterThan(0);
    expect(proxy.counters.maxBuffered).toBeLessThanOrEqual(256 * KiB + 64 * KiB); // the read buffer, plus at most one client read
    expect(upstreamBacklog).toBeGreaterThan(1 * MiB);
  });
});
