// instrumentHttp(): one chunk record per HTTP response on a real keep-alive connection.
import { once } from 'node:events';
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { instrumentHttp, type HttpChunkRecord } from '../../agent/index.js';
import { collect } from '../helpers/loopback.js';

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
