// The lab's segment server: a minimal HTTP/1.1 keep-alive server whose
// behaviour is chosen per request by the client (lab/peers.py), so a scenario
// is just a plan of requests.
//
//   GET /seg?i=N&bytes=B[&pieces=K&gapMs=G][&sndbuf=S] HTTP/1.1
//
// answers B bytes of body; with pieces, the body is written in K writes G ms
// apart (a producer slower than the path: the app-limited cause); with
// sndbuf, SO_SNDBUF is set to S before the response (a cause that changes
// mid-connection). Writes wait for 'drain' (a well-behaved streaming server).
//
// With `instrument`, every connection gets instrument() and each response is
// one chunk (probe.unit() before its first write, endUnit() after its last),
// so chunk id k is the k-th segment of the connection.
import { once } from 'node:events';
import type { Server, Socket } from 'node:net';
import { instrument, type ChunkRecord, type Probe } from '../agent/index.js';
import { native } from '../agent/native.js';

const SOL_SOCKET = 1;
const SO_SNDBUF = 7;

export interface SegmentServerOptions {
  instrument: boolean;
  onChunk?: (remote: string, c: ChunkRecord) => void;
}

export interface SegmentServer {
  port: number;
  /** instrument(): records and stalls per remote ip:port. */
  chunks: Map<string, ChunkRecord[]>;
  close(): Promise<void>;
}

const MAX_BODY = 64 << 20;

/** The response header of a B-byte segment (the attach runner maps byte offsets to segments with its length). */
export const responseHead = (bytes: number): string => `HTTP/1.1 200 OK\r\nContent-Length: ${Math.min(MAX_BODY, bytes)}\r\nContent-Type: video/mp2t\r\n\r\n`;

/** Serves segments on a listening server (DelayLab.listen: the socket lives in the lab's server namespace). */
export function serveSegments(server: Server, opts: SegmentServerOptions): SegmentServer {
  const chunks = new Map<string, ChunkRecord[]>();
  const open = new Set<Socket>();
  const probes = new Set<Probe>();
  server.on('connection', (sock: Socket) => {
    open.add(sock);
    sock.once('close', () => open.delete(sock));
    sock.on('error', () => undefined);
    sock.setNoDelay(true);
    const remote = `${sock.remoteAddress}:${sock.remotePort}`;
    let probe: Probe | undefined;
    if (opts.instrument) {
      const p = instrument(sock, { stallAfterMs: 30_000 });
      probe = p;
      probes.add(p);
      const list: ChunkRecord[] = [];
      chunks.set(remote, list);
      const keep = (c: ChunkRecord): void => {
        list.push(c);
        opts.onChunk?.(remote, c);
      };
      p.on('chunk', keep);
      p.on('stall', keep);
      sock.once('close', () => {
        p.close();
        probes.delete(p);
      });
    }
    void handle(sock, probe).catch(() => sock.destroy());
    sock.resume();
  });
  const port = (server.address() as { port: number }).port;
  return {
    port,
    chunks,
    async close(): Promise<void> {
      server.close();
      for (const p of probes) p.close();
      for (const s of open) s.destroy();
    },
  };
}

async function handle(sock: Socket, probe: Probe | undefined): Promise<void> {
  let buf = '';
  const requests: string[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => {
    buf += d;
    for (let cut = buf.indexOf('\r\n\r\n'); cut >= 0; cut = buf.indexOf('\r\n\r\n')) {
      requests.push(buf.slice(0, cut));
      buf = buf.slice(cut + 4);
    }
    wake?.();
  });
  sock.once('end', () => {
    ended = true;
    wake?.();
    sock.end();
  });
  sock.once('close', () => {
    ended = true;
    wake?.();
  });
  for (;;) {
    while (requests.length === 0 && !ended) await new Promise<void>((r) => (wake = r));
    const req = requests.shift();
    if (req === undefined) return;
    const target = /^GET (\S+) HTTP\/1\.1/.exec(req)?.[1];
    const q = new URL(target ?? '/', 'http://lab').searchParams;
    const bytes = Math.min(MAX_BODY, Number(q.get('bytes') ?? 0));
    const pieces = Math.max(1, Number(q.get('pieces') ?? 1));
    const gapMs = Number(q.get('gapMs') ?? 0);
    const sndbuf = Number(q.get('sndbuf') ?? 0);
    if (sndbuf > 0) {
      const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
      native().setSockoptInt(fd, SOL_SOCKET, SO_SNDBUF, sndbuf);
    }
    probe?.unit('segment');
    await write(sock, Buffer.from(responseHead(bytes), 'latin1'));
    const size = Math.ceil(bytes / pieces);
    for (let off = 0, k = 0; off < bytes && !sock.destroyed; off += size, k++) {
      if (k > 0 && gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      await write(sock, Buffer.alloc(Math.min(size, bytes - off), 0x61 + (k % 26)));
    }
    probe?.endUnit();
  }
}

async function write(sock: Socket, b: Buffer): Promise<void> {
  if (sock.destroyed) return;
  if (sock.write(b)) return;
  const ac = new AbortController();
  const quiet = (p: Promise<unknown>): Promise<unknown> => p.catch(() => undefined);
  await Promise.race([quiet(once(sock, 'drain', { signal: ac.signal })), quiet(once(sock, 'close', { signal: ac.signal }))]);
  ac.abort();
}
