// inet_diag decoding and the kernel-side port filter, against this kernel
// (loopback sockets of this process) and against broken input.
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDiagBatch, portFilterBytecode, formatIPv6 } from '../../agent/parse/inet_diag.js';
import { walkMessages } from '../../agent/parse/netlink.js';
import { DiagSource, DEFAULT_STATES } from '../../agent/sources/diag.js';

describe('decoding, tolerant', () => {
  it('never throws on arbitrary bytes and counts what it could not decode', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        const b = parseDiagBatch(Buffer.from(bytes));
        expect(b.parseErrors).toBeGreaterThanOrEqual(0);
      }),
      { numRuns: 500 },
    );
  });

  it('formats IPv6 like RFC 5952 and v4-mapped as IPv4', () => {
    const b = Buffer.alloc(16);
    b.writeUInt16BE(0x2001, 0);
    b.writeUInt16BE(0xdb8, 2);
    b.writeUInt16BE(1, 14);
    expect(formatIPv6(b, 0)).toBe('2001:db8::1');
    const m = Buffer.from('00000000000000000000ffff0a000001', 'hex');
    expect(formatIPv6(m, 0)).toBe('10.0.0.1');
    expect(formatIPv6(Buffer.alloc(16), 0)).toBe('::');
  });
});

describe('live dump (loopback sockets of this process)', () => {
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  const ports: number[] = [];

  beforeAll(async () => {
    for (let i = 0; i < 3; i++) {
      const s = createServer((c) => {
        sockets.push(c);
        c.write(Buffer.alloc(100_000));
      });
      s.listen(0, '127.0.0.1');
      await once(s, 'listening');
      servers.push(s);
      ports.push((s.address() as { port: number }).port);
    }
    for (const p of ports) {
      const c = connect(p, '127.0.0.1');
      c.on('data', () => undefined);
      sockets.push(c);
      await once(c, 'connect');
    }
    await new Promise((r) => setTimeout(r, 100));
  });

  afterAll(() => {
    for (const s of sockets) s.destroy();
    for (const s of servers) s.close();
  });

  it('the port bytecode is accepted by the kernel and keeps only the chosen local ports', () => {
    const [a, b, c] = ports as [number, number, number];
    const src = new DiagSource({ ports: [{ from: a, to: a }, { from: c, to: c }], remoteCidrs: [], states: DEFAULT_STATES });
    const r = src.poll();
    const local = new Set(r.sockets.map((s) => s.localPort));
    expect(local).toEqual(new Set([a, c]));
    expect(r.listeningPorts).toEqual(new Set([a, c]));
    expect(r.listeningPorts.has(b)).toBe(false);
    expect(r.parseErrors).toBe(0);
    const conn = r.sockets.find((s) => s.localPort === a)!;
    expect(conn.chrono?.bytesAcked).toBeGreaterThanOrEqual(100_000);
    expect(conn.info?.bytesAcked).toBe(conn.chrono?.bytesAcked);
    expect(conn.cookie).toBe(BigInt(conn.key));
    expect(conn.cong).toBeTruthy();
    expect(conn.skmem?.sndbuf).toBeGreaterThan(0);
    expect(conn.inode).toBeGreaterThan(0);
  });

  it('a single range works too, and the remote filter applies', () => {
    const lo = Math.min(...ports);
    const hi = Math.max(...ports);
    const all = new DiagSource({ ports: [{ from: lo, to: hi }], remoteCidrs: ['127.0.0.0/8'], states: DEFAULT_STATES }).poll();
    for (const p of ports) expect(all.sockets.some((s) => s.localPort === p)).toBe(true);
    const none = new DiagSource({ ports: [{ from: lo, to: hi }], remoteCidrs: ['192.0.2.0/24'], states: DEFAULT_STATES }).poll();
    expect(none.sockets.filter((s) => ports.includes(s.localPort))).toEqual([]);
  });

  it('the fast tcp_info subset reads what parseTcpInfo reads', () => {
    const r = new DiagSource({ ports: [], remoteCidrs: [], states: DEFAULT_STATES }).poll();
    expect(r.sockets.length).toBeGreaterThan(0);
    for (const s of r.sockets) {
      const full = s.info!;
      const fast = s.chrono!;
      for (const k of Object.keys(fast) as (keyof typeof fast)[]) expect([k, fast[k]]).toEqual([k, full[k]]);
    }
  });

  it('streamed polls (reused, growing buffer) see what collected polls see', () => {
    const spec = { ports: [], remoteCidrs: [], states: DEFAULT_STATES };
    const collected = new DiagSource(spec).poll();
    const streamed: { key: number | string; remote: string; acked: number }[] = [];
    const src = new DiagSource(spec, undefined, 64); // far too small: grows on the first dump
    for (let i = 0; i < 2; i++) {
      streamed.length = 0;
      const r = src.poll((s) => streamed.push({ key: s.key, remote: `${s.remoteAddress}:${s.remotePort}`, acked: s.chrono!.bytesAcked }));
      expect(r.sockets).toEqual([]);
      expect(r.kept).toBe(streamed.length);
    }
    const mine = (k: number | string): boolean => collected.sockets.some((s) => s.key === k && ports.includes(s.localPort));
    const want = collected.sockets.filter((s) => ports.includes(s.localPort)).map((s) => `${s.key} ${s.remoteAddress}:${s.remotePort}`).sort();
    expect(streamed.filter((s) => mine(s.key)).map((s) => `${s.key} ${s.remote}`).sort()).toEqual(want);
  });

  it('IPv6 sockets decode with RFC 5952 addresses and bracketed endpoints', async () => {
    const srv = createServer((c) => c.end('hello'));
    srv.listen(0, '::1');
    await once(srv, 'listening');
    const port = (srv.address() as { port: number }).port;
    const c = connect(port, '::1');
    c.on('data', () => undefined);
    await once(c, 'end');
    const r = new DiagSource({ ports: [{ from: port, to: port }], remoteCidrs: ['::1/128'], states: [1, 4, 5, 8, 9, 11] }).poll();
    const s = r.sockets.find((x) => x.localPort === port);
    expect(s?.family).toBe(6);
    expect(s?.localAddress).toBe('::1');
    expect(r.listeningPorts.has(port)).toBe(true);
    const { ConnectionTable } = await import('../../agent/model/connections.js');
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll(r.sockets, Date.now(), r.listeningPorts);
    expect([...t.open.values()][0]?.remote).toMatch(/^\[::1\]:\d+$/);
    c.destroy();
    srv.close();
  });

  it('bytecode layout: one 16-byte block, or 20 per range plus 16 for the last', () => {
    expect(portFilterBytecode([])).toBeUndefined();
    expect(portFilterBytecode([{ from: 1, to: 2 }])?.length).toBe(16);
    expect(portFilterBytecode([{ from: 1, to: 2 }, { from: 5, to: 5 }])?.length).toBe(36);
  });

  it('a dump truncated anywhere yields fewer sockets and counted errors, never a throw', () => {
    const raw = (
      new DiagSource({ ports: [], remoteCidrs: [], states: DEFAULT_STATES }) as unknown as {
        binding: { diagDump(f: number, s: number, e: number): Buffer };
      }
    ).binding.diagDump(2, 0xfff, 0x42);
    const { messages } = walkMessages(raw, () => undefined);
    expect(messages).toBeGreaterThan(1);
    for (let cut = 0; cut < raw.length; cut += 37) {
      const b = parseDiagBatch(raw.subarray(0, cut));
      expect(b.sockets.length).toBeLessThanOrEqual(messages);
    }
  });
});
