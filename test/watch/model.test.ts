// Connection table accounting and metric exposition, on synthetic sockets.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { InetDiagSocket, TcpChrono } from '../../agent/parse/inet_diag.js';
import { ConnectionTable } from '../../agent/model/connections.js';
import { WatchMetrics, type SelfSnapshot } from '../../agent/export/metrics.js';
import { syntheticSocket } from '../helpers/synthetic.js';

let nextKey = 1;
const sock = (over: Partial<InetDiagSocket> & { key?: number }, chrono: Partial<TcpChrono>): InetDiagSocket => syntheticSocket(over.key ?? nextKey++, over, chrono);

const LISTEN = new Set([8080]);
const SELF: SelfSnapshot = {
  polls: 1,
  pollErrors: 0,
  parseErrors: { dump: 0, destroy: 0 },
  dumpInterrupted: 0,
  socketsSeen: 0,
  destroyFeedUp: true,
  destroyedSockets: 0,
  destroyFeedLost: 0,
  ownerScans: 0,
};

function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').pop());
  }
  return undefined;
}

describe('ConnectionTable', () => {
  it('adds growth between observations to the port aggregate', () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll([sock({ key: 1 }, { busyTime: 1, rwndLimited: 0.5, bytesAcked: 100 })], 1000, LISTEN);
    t.applyPoll([sock({ key: 1 }, { busyTime: 3, rwndLimited: 1.5, bytesAcked: 300 })], 2000, LISTEN);
    const a = t.aggregates.get('8080')!;
    expect(a.busy).toBeCloseTo(3);
    expect(a.rwndLimited).toBeCloseTo(1.5);
    expect(a.bytesAcked).toBe(300);
    const c = t.open.get(1)!;
    expect(c.delta.busy).toBeCloseTo(2);
    expect(c.delta.seconds).toBe(1);
    expect(c.firstSeen).toBe(1000);
    expect(c.lastSeen).toBe(2000);
  });

  it('infers sndbuf-bound time from a send buffer smaller than the window, at either end of an interval', async () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    const mem = (sndbuf: number, wmemQueued: number) => ({ rmemAlloc: 0, rcvbuf: 0, wmemAlloc: 0, sndbuf, fwdAlloc: 0, wmemQueued, optmem: 0, backlog: 0, drops: 0 });
    const capped = (key: number, busy: number, sndbufLimited: number, wmemQueued: number, sndbuf = 32768) =>
      sock({ key, skmem: mem(sndbuf, wmemQueued) }, { busyTime: busy, sndbufLimited, sndCwnd: 100, sndMss: 1448 });
    t.applyPoll([capped(1, 0, 0, 30000), capped(2, 0, 0, 30000, 1451520)], 1000, LISTEN);
    t.applyPoll([capped(1, 1, 0.2, 30000), capped(2, 1, 0, 1400000, 1451520)], 2000, LISTEN);
    const c = t.open.get(1)!;
    expect(c.delta.sndbufBound).toBeCloseTo(0.8); // 32 KiB < 100 x 1448 B, full
    expect(c.sndbuf).toBe(32768);
    expect(t.open.get(2)!.delta.sndbufBound).toBe(0); // autotuned: seven windows
    // Polled between two writes (buffer empty): bound at the interval's start still counts.
    t.applyPoll([capped(1, 2, 0.4, 0)], 3000, LISTEN);
    expect(c.delta.sndbufBound).toBeCloseTo(0.8);
    // Two polls without a full buffer: not bound.
    t.applyPoll([capped(1, 3, 0.6, 0)], 4000, LISTEN);
    expect(c.delta.sndbufBound).toBe(0);
    expect(c.sndbufBound).toBeCloseTo(1.6);
    expect(t.aggregates.get('8080')!.sndbufBound).toBeCloseTo(1.6);
    // The kernel's own counter is untouched.
    expect(c.sndbufLimited).toBeCloseTo(0.6);
    const text = await new WatchMetrics(t, undefined, () => SELF, { maxConnections: 10, info: { version: 'test', kernel: 'test', destroyFeed: 'on' } }).render();
    expect(metricValue(text, 'tcp_chrono_sndbuf_bound_seconds_total', { port: '8080' })).toBeCloseTo(1.6);
    expect(metricValue(text, 'tcp_chrono_sndbuf_limited_seconds_total', { port: '8080' })).toBeCloseTo(0.6);
  });

  it('labels connections without a listener on their local port "ephemeral"', () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll([sock({ localPort: 51000 }, { bytesAcked: 5 })], 1000, LISTEN);
    expect([...t.aggregates.keys()]).toEqual(['ephemeral']);
  });

  it('closes a vanished connection with its last figures (no feed)', () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll([sock({ key: 2 }, { busyTime: 2, bytesAcked: 50 })], 1000, LISTEN);
    t.applyPoll([], 2000, LISTEN);
    expect(t.open.size).toBe(0);
    expect(t.aggregates.get('8080')).toMatchObject({ closed: 1, bytesAcked: 50 });
    expect(t.takeClosed().map((c) => c.closed?.how)).toEqual(['vanished']);
    expect(t.takeClosed()).toEqual([]);
  });

  it('waits for the destroy message, which adds the final growth exactly once', () => {
    const t = new ConnectionTable({ closeGraceMs: 3000 });
    t.applyPoll([sock({ key: 3 }, { busyTime: 2, bytesAcked: 50 })], 1000, LISTEN);
    t.applyPoll([], 2000, LISTEN); // missing, within grace
    expect(t.open.size).toBe(1);
    t.applyDestroyed([sock({ key: 3, state: 7 }, { busyTime: 2.5, bytesAcked: 80 })], 2100);
    t.applyDestroyed([sock({ key: 3, state: 7 }, { busyTime: 2.5, bytesAcked: 80 })], 2200); // duplicate
    expect(t.open.size).toBe(0);
    expect(t.aggregates.get('8080')).toMatchObject({ closed: 1, bytesAcked: 80, busy: 2.5 });
  });

  it('a destroy message after the connection vanished adds only the remainder', () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll([sock({ key: 4 }, { busyTime: 1, bytesAcked: 10 })], 1000, LISTEN);
    t.applyPoll([], 2000, LISTEN);
    t.applyDestroyed([sock({ key: 4, state: 7 }, { busyTime: 1.25, bytesAcked: 15 })], 2500);
    expect(t.aggregates.get('8080')).toMatchObject({ closed: 1, bytesAcked: 15, busy: 1.25 });
  });

  it('counts a connection born and gone between polls from its destroy message', () => {
    const t = new ConnectionTable({ closeGraceMs: 2000 });
    t.applyPoll([], 1000, LISTEN);
    t.applyDestroyed([sock({ key: 5, state: 7 }, { busyTime: 0.008, bytesAcked: 1e6 })], 1500);
    t.applyDestroyed([sock({ key: 6, state: 7 }, { bytesAcked: 0, bytesReceived: 0 })], 1500); // never carried data
    expect(t.aggregates.get('8080')).toMatchObject({ closed: 1, bytesAcked: 1e6 });
  });

  it('a dump older than a destroy message does not reopen (and close again) the connection', () => {
    // Cookies are never reused: a socket seen after its destroy message is the
    // same connection, already counted closed.
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll([], 1000, LISTEN);
    t.applyDestroyed([sock({ key: 7, state: 7 }, { busyTime: 0.5, bytesAcked: 100 })], 1500);
    t.applyPoll([sock({ key: 7, state: 1 }, { busyTime: 0.4, bytesAcked: 90 })], 2000, LISTEN);
    expect(t.open.size).toBe(0);
    t.applyPoll([], 3000, LISTEN);
    expect(t.aggregates.get('8080')).toMatchObject({ closed: 1, bytesAcked: 100, busy: 0.5 });
  });

  it('keeps connections open through an interrupted dump', () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll([sock({ key: 7 }, { bytesAcked: 1 })], 1000, LISTEN);
    t.applyPoll([], 2000, LISTEN, false);
    expect(t.open.size).toBe(1);
  });
});

describe('WatchMetrics', () => {
  it('caps per-connection series, keeps the most stalled, and passes promtool', async () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    const socks = [0, 1, 2, 3, 4].map((i) => sock({ key: 100 + i }, { busyTime: 1, rwndLimited: i * 0.1, bytesAcked: 10 }));
    t.applyPoll(socks, 1000, LISTEN);
    const m = new WatchMetrics(t, undefined, () => SELF, {
      maxConnections: 2,
      info: { version: 'test', kernel: 'test', destroyFeed: 'on' },
    });
    const text = await m.render();
    const series = text.split('\n').filter((l) => l.startsWith('tcp_chrono_connection_busy_seconds_total{'));
    expect(series).toHaveLength(2);
    expect(series.some((l) => l.includes('remote="10.0.0.2:40104"'))).toBe(true);
    expect(series.some((l) => l.includes('remote="10.0.0.2:40103"'))).toBe(true);
    expect(metricValue(text, 'tcp_chrono_agent_dropped_connection_series')).toBe(3);
    expect(metricValue(text, 'tcp_chrono_busy_seconds_total', { port: '8080' })).toBe(5);
    expect(metricValue(text, 'tcp_chrono_connections', { port: '8080' })).toBe(5);
    execFileSync('promtool', ['check', 'metrics'], { input: text });
  });

  it('escapes label values (a comm may hold quotes, backslashes, newlines)', async () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    t.applyPoll([sock({ key: 300 }, { busyTime: 1, bytesAcked: 10 })], 1000, LISTEN);
    t.open.get(300)!.owner = { pid: 42, comm: 'we"ird\\na\nme' };
    const m = new WatchMetrics(t, undefined, () => SELF, { maxConnections: 10, info: { version: 'test', kernel: 'test', destroyFeed: 'on' } });
    const text = await m.render();
    expect(text).toContain('pid="42",comm="we\\"ird\\\\na\\nme"');
    execFileSync('promtool', ['check', 'metrics'], { input: text });
  });

  it('exports a closed connection once more, then drops its series', async () => {
    const t = new ConnectionTable({ closeGraceMs: 0 });
    const m = new WatchMetrics(t, undefined, () => SELF, {
      maxConnections: 10,
      info: { version: 'test', kernel: 'test', destroyFeed: 'on' },
    });
    t.applyPoll([sock({ key: 200 }, { busyTime: 1, bytesAcked: 10 })], 1000, LISTEN);
    expect(await m.render()).toContain('remote="10.0.0.2:40200"');
    t.applyDestroyed([sock({ key: 200, state: 7 }, { busyTime: 2, bytesAcked: 20 })], 1500);
    const last = await m.render();
    expect(metricValue(last, 'tcp_chrono_connection_bytes_acked_total', { remote: '10.0.0.2:40200' })).toBe(20);
    expect(metricValue(last, 'tcp_chrono_connections_closed_total', { port: '8080' })).toBe(1);
    const after = await m.render();
    expect(after).not.toContain('remote="10.0.0.2:40200"');
    expect(metricValue(after, 'tcp_chrono_bytes_acked_total', { port: '8080' })).toBe(20);
  });
});

describe('OwnerResolver', () => {
  it('finds the pid and comm of a socket of this process through /proc', async () => {
    const { OwnerResolver } = await import('../../agent/model/owners.js');
    const { createServer, connect } = await import('node:net');
    const { DiagSource, DEFAULT_STATES } = await import('../../agent/sources/diag.js');
    const srv = createServer((c) => c.write('hi')).listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const port = (srv.address() as { port: number }).port;
    const client = connect(port, '127.0.0.1');
    await new Promise((r) => client.once('data', r));
    const sock = new DiagSource({ ports: [{ from: port, to: port }], remoteCidrs: [], states: DEFAULT_STATES }).poll().sockets[0];
    expect(sock?.inode).toBeGreaterThan(0);
    const r = new OwnerResolver({ minRescanMs: 0 });
    const conn: { inode: number; owner?: { pid: number; comm: string } } = { inode: sock!.inode };
    r.request(conn);
    await r.flush();
    expect(conn.owner).toEqual({ pid: process.pid, comm: expect.any(String) });
    expect(r.stats.scans).toBe(1);
    client.destroy();
    srv.close();
  });
});
