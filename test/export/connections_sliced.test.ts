// /api/connections and /api/overview built in slices (agent/export/query.ts):
// the bytes are those of the one-go handler they replace, on a synthetic table
// of a few thousand connections (every sort, pages below and above the
// one-go size, many ties, owners, IPv6, with and without --redact), and on a
// real `watch` over loopback (a frozen table: one poll an hour). Also: the
// ranking against Array.prototype.sort on random keys, a client that goes
// away mid-body, HEAD.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import type { Request, Response } from 'express';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { connectionRoutes, listenApp, ONE_GO_MAX, plainApp, SORT_KEYS, SORTS, type Listening } from '../../agent/export/http.js';
import { rankTop, rankTopSync, type RankKeys } from '../../agent/model/rank.js';
import { Slicer } from '../../agent/export/query.js';
import { LiveView } from '../../agent/export/live.js';
import { configureRedaction } from '../../agent/export/redact.js';
import { connectionJson, ConnectionTable } from '../../agent/model/connections.js';
import type { InetDiagSocket } from '../../agent/parse/inet_diag.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { stopChild, waitForLine } from '../../lab/lab.js';

/** n connections over two polls; a third of them idle (all-zero figures: ties everywhere), others with repeating values (more ties). */
function syntheticTable(n: number): ConnectionTable {
  const table = new ConnectionTable({ closeGraceMs: 0 });
  const listening = new Set([8080, 8443]);
  const sock = (i: number, grow: number): InetDiagSocket => {
    const idle = i % 3 === 0;
    const busy = idle ? 0 : ((i * 7) % 50) * grow;
    const v6 = i % 5 === 0;
    return {
      family: v6 ? 6 : 4,
      state: 1,
      timer: 0,
      retrans: 0,
      localAddress: v6 ? '2001:db8::1' : '10.0.0.1',
      localPort: i % 4 === 0 ? 8443 : 8080,
      remoteAddress: v6 ? `2001:db8:0:${i.toString(16)}::7` : `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      remotePort: 1024 + i,
      ifindex: 0,
      cookie: BigInt(1_000_000 + i),
      key: 1_000_000 + i,
      rqueue: 0,
      wqueue: 0,
      uid: 0,
      inode: 5000 + i,
      cong: i % 2 === 0 ? 'cubic' : 'bbr',
      chrono: {
        state: 1,
        busyTime: busy,
        rwndLimited: busy * ((i % 4) / 8),
        sndbufLimited: busy * ((i % 3) / 16),
        bytesAcked: idle ? 0 : ((i * 131) % 97) * 1000 * grow,
        bytesReceived: 10,
        bytesSent: 5000,
        bytesRetrans: i % 11 === 0 ? 1448 : 0,
        deliveryRate: 1e6 + (i % 10),
        rtt: 0.0001 * (1 + (i % 20)),
        sndCwnd: 10,
        totalRetrans: 0,
        notsentBytes: 0,
        appLimited: i % 2 === 0,
        sndMss: 1448,
        unacked: 0,
        ...(i % 9 !== 0 && { sndWnd: 65535 }),
      },
    };
  };
  const t0 = Date.UTC(2025, 5, 1, 12);
  table.applyPoll(Array.from({ length: n }, (_, i) => sock(i, 1)), t0, listening);
  table.applyPoll(Array.from({ length: n }, (_, i) => sock(i, 1.5)), t0 + 1000, listening);
  let i = 0;
  for (const c of table.open.values()) if (i++ % 4 === 1) c.owner = { pid: 100 + (i % 7), comm: i % 2 === 0 ? 'nginx' : 'weird "comm"\\' };
  return table;
}

const servers: Listening[] = [];
afterEach(async () => {
  configureRedaction({ kind: 'none' });
  while (servers.length > 0) await servers.pop()!.close();
});

/** The table's /api/connections, and /old: the handler as it was (sort everything, map, res.json in one go), on one listener. */
async function serve(table: ConnectionTable): Promise<string> {
  const app = plainApp(); // as the mode runtime's
  app.get('/old', (req: Request, res: Response) => {
    const sort = req.query.sort as keyof typeof SORTS;
    const all = [...table.open.values()].sort(SORTS[sort]);
    res.json({ total: all.length, sort, connections: all.slice(0, Number(req.query.limit)).map(connectionJson) });
  });
  app.use(connectionRoutes({ table }));
  const l = await listenApp(app, '127.0.0.1', 0);
  servers.push(l);
  return `http://127.0.0.1:${l.address.port}`;
}

async function bytes(url: string, init?: RequestInit): Promise<{ status: number; type: string | null; body: Buffer }> {
  const r = await fetch(url, init);
  return { status: r.status, type: r.headers.get('content-type'), body: Buffer.from(await r.arrayBuffer()) };
}

describe('/api/connections in slices: the bytes of the one-go handler', () => {
  const N = 3000;
  const table = syntheticTable(N);
  const limits = [1, 37, ONE_GO_MAX, ONE_GO_MAX + 1, 700, 1000, N - 1, N, 100_000];

  for (const redact of ['none', 'remote=prefix/24', 'remote=hash'] as const) {
    it(`every sort, pages of 1 to all ${N} connections (redact: ${redact})`, async () => {
      if (redact === 'remote=prefix/24') configureRedaction({ kind: 'prefix', v4: 24, v6: 48 });
      if (redact === 'remote=hash') configureRedaction({ kind: 'hash', key: Buffer.alloc(32, 7) });
      const base = await serve(table);
      for (const sort of Object.keys(SORTS)) {
        for (const limit of redact === 'none' ? limits : [ONE_GO_MAX + 1, N]) {
          const [sliced, old] = await Promise.all([bytes(`${base}/api/connections?sort=${sort}&limit=${limit}`), bytes(`${base}/old?sort=${sort}&limit=${limit}`)]);
          expect(sliced.status).toBe(200);
          expect(sliced.type).toBe(old.type);
          expect(sliced.body.length, `sort=${sort} limit=${limit}`).toBe(old.body.length);
          expect(sliced.body.equals(old.body), `sort=${sort} limit=${limit}`).toBe(true);
        }
      }
      const all = JSON.parse((await bytes(`${base}/api/connections?limit=${N}`)).body.toString()) as { total: number; connections: Array<{ remote: string; pid: number | null }> };
      expect(all.total).toBe(N);
      expect(all.connections).toHaveLength(N);
      expect(all.connections.some((c) => c.pid !== null)).toBe(true);
      if (redact === 'none') expect(all.connections.some((c) => c.remote.startsWith('[2001:db8:0:'))).toBe(true);
      else expect(all.connections.every((c) => !/^10\.\d+\.\d+\.[1-9]|^\[2001:db8:0:[0-9a-f]+::7\]/.test(c.remote))).toBe(true);
    }, 60_000);
  }

  it('HEAD gets the headers only; a client that goes away mid-body leaves the server serving', async () => {
    const base = await serve(table);
    const head = await bytes(`${base}/api/connections?limit=${N}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.type).toBe('application/json; charset=utf-8');
    expect(head.body.length).toBe(0);
    // Read the first bytes of the whole table, then hang up, a few times over.
    for (let i = 0; i < 5; i++) {
      const s = net.connect(Number(new URL(base).port), '127.0.0.1');
      s.write(`GET /api/connections?limit=${N} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await once(s, 'data');
      s.destroy();
    }
    const again = await bytes(`${base}/api/connections?limit=${N}`);
    const old = await bytes(`${base}/old?sort=stall&limit=${N}`);
    expect(again.body.equals(old.body)).toBe(true);
  }, 30_000);
});

describe('/api/overview', () => {
  it('the worst connections in the order sorting them all gave, the timeline and the per-port figures as before', async () => {
    const table = syntheticTable(3000);
    const base = await serve(table);
    const got = JSON.parse((await bytes(`${base}/api/overview?limit=200`)).body.toString()) as {
      connections: number;
      ports: Array<{ port: string; open: number }>;
      timeline: Array<{ t: number; ports: Record<string, { connections: number; seconds: number }> }>;
      worst: Array<Record<string, unknown>>;
    };
    const all = [...table.open.values()];
    const want = [...all]
      .sort((a, b) => b.recentStall - a.recentStall || b.rwndLimited + b.sndbufLimited - (a.rwndLimited + a.sndbufLimited) || b.recentBytes - a.recentBytes)
      .slice(0, 200);
    expect(got.worst.map((w) => w.id)).toEqual(want.map((c) => String(c.cookie)));
    expect(JSON.stringify(got.worst.map(({ lastShares: _, ...w }) => w))).toBe(JSON.stringify(want.map(connectionJson)));
    expect(got.connections).toBe(3000);
    expect(got.ports.map((p) => [p.port, p.open])).toEqual([
      ['8443', 750],
      ['8080', 2250],
    ]);
    // One point, of the last poll: every connection that moved in it, by port.
    expect(got.timeline).toHaveLength(1);
    const moved = all.filter((c) => c.delta.seconds > 0);
    expect(Object.keys(got.timeline[0]!.ports).sort()).toEqual([...new Set(moved.map((c) => c.port))].sort());
    expect(got.timeline[0]!.ports['8080']!.connections).toBe(moved.filter((c) => c.port === '8080').length);
    expect(got.timeline[0]!.t).toBe(Math.max(...all.map((c) => c.lastSeen)));
  });
});

describe('LiveView.sample: one pass, the point of the latest poll as the two passes made it', () => {
  it('connections last seen in earlier polls (missing, within the close grace) are left out; each poll is sampled once', async () => {
    const table = new ConnectionTable({ closeGraceMs: 60_000 });
    const listening = new Set([80, 443, 8080]);
    const sock = (i: number, grow: number): InetDiagSocket => ({
      family: 4,
      state: 1,
      timer: 0,
      retrans: 0,
      localAddress: '10.0.0.1',
      localPort: [80, 443, 8080][i % 3]!,
      remoteAddress: '10.9.0.1',
      remotePort: 2000 + i,
      ifindex: 0,
      cookie: BigInt(i + 1),
      key: i + 1,
      rqueue: 0,
      wqueue: 0,
      uid: 0,
      inode: 1,
      chrono: { state: 1, busyTime: i * grow, rwndLimited: (i % 5) * grow, sndbufLimited: (i % 2) * grow, bytesAcked: i * 100 * grow, bytesReceived: 0, deliveryRate: 1, rtt: 0.001, sndCwnd: 10, totalRetrans: 0, notsentBytes: 0, appLimited: false, sndMss: 1448, unacked: 0 },
    });
    // The two-pass sample as it was, for one table state.
    const twoPass = (): Record<string, unknown> => {
      let poll = 0;
      for (const c of table.open.values()) if (c.lastSeen > poll) poll = c.lastSeen;
      const sums = new Map<string, { seconds: number; busy: number; rwndLimited: number; sndbufLimited: number; connections: number }>();
      for (const c of table.open.values()) {
        const d = c.delta;
        if (c.lastSeen !== poll || !(d.seconds > 0)) continue;
        let x = sums.get(c.port);
        if (x === undefined) sums.set(c.port, (x = { seconds: 0, busy: 0, rwndLimited: 0, sndbufLimited: 0, connections: 0 }));
        x.connections++;
        x.seconds += d.seconds;
        x.busy += d.busy;
        x.rwndLimited += d.rwndLimited;
        x.sndbufLimited += d.sndbufLimited;
      }
      return { t: poll, sums: [...sums] };
    };
    const live = new LiveView(table);
    const seen: Array<Record<string, unknown>> = [];
    const ids = Array.from({ length: 300 }, (_, i) => i);
    for (let p = 1; p <= 5; p++) {
      // Poll p sees a different subset: the rest keep an older lastSeen.
      table.applyPoll(ids.filter((i) => (i + p) % 4 !== 0).map((i) => sock(i, p)), p * 1000, listening);
      const want = twoPass();
      const point = (await live.overview(1, 0)).timeline as Array<{ t: number; ports: Record<string, { connections: number; seconds: number }> }>;
      const last = point[point.length - 1]!;
      expect(last.t).toBe(want.t);
      const byPort = Object.fromEntries((want.sums as Array<[string, { connections: number; seconds: number }]>).map(([port, x]) => [port, [x.connections, x.seconds]]));
      expect(Object.fromEntries(Object.entries(last.ports).map(([port, x]) => [port, [x.connections, x.seconds]]))).toEqual(byPort);
      seen.push(last);
      await live.overview(1, 0); // the same poll again: no second point
      expect(((await live.overview(1, 0)).timeline as unknown[]).length).toBe(p);
    }
  });
});

describe('rankTop: the first k of a stable sort', () => {
  const sortTop = (xs: number[][], k: number): number[][] =>
    [...xs].sort((a, b) => {
      for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) return b[j]! - a[j]!;
      return 0;
    }).slice(0, k);

  it('equals [...items].sort(by keys, descending).slice(0, k), ties in input order, heap and merge sort alike', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }).chain((width) =>
          fc.tuple(fc.array(fc.array(fc.integer({ min: -3, max: 3 }), { minLength: width, maxLength: width }), { maxLength: 6000 }), fc.integer({ min: 0, max: 7000 })),
        ),
        async ([rows, k]) => {
          const items = rows.map((r, i) => ({ r, i }));
          const width = rows[0]?.length ?? 1;
          const keys: RankKeys<{ r: number[]; i: number }> = Array.from({ length: width }, (_, j) => (x: { r: number[] }) => x.r[j]!);
          const want = sortTop(rows, k);
          const sync = rankTopSync(items, keys, k);
          expect(sync.map((x) => x.r)).toEqual(want);
          // Stable: equal keys keep their input order.
          for (let a = 1; a < sync.length; a++) if (sync[a]!.r.join() === sync[a - 1]!.r.join()) expect(sync[a]!.i).toBeGreaterThan(sync[a - 1]!.i);
          const sliced = await rankTop(items, keys, k, new Slicer());
          expect(sliced).toEqual(sync);
        },
      ),
      { numRuns: 60 },
    );
  }, 120_000);

  it('the same on large inputs (runs merged past one step of 2048) and every k around the heap/merge switch', async () => {
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (const n of [2047, 2048, 2049, 6000, 9001]) {
      const rows = Array.from({ length: n }, () => [Math.floor(rnd() * 5), Math.floor(rnd() * 5) - 2]);
      const items = rows.map((r, i) => ({ r, i }));
      const keys: RankKeys<{ r: number[] }> = [(x) => x.r[0]!, (x) => x.r[1]!];
      for (const k of [0, 1, 100, Math.floor(n / 4) - 1, Math.floor(n / 4), Math.floor(n / 4) + 1, n - 1, n, n + 5]) {
        const want = [...items].sort((a, b) => b.r[0]! - a.r[0]! || b.r[1]! - a.r[1]!).slice(0, k);
        expect(rankTopSync(items, keys, k), `n=${n} k=${k}`).toEqual(want);
        expect(await rankTop(items, keys, k, new Slicer()), `n=${n} k=${k} sliced`).toEqual(want);
      }
    }
  }, 60_000);

  it('connections by every sort of /api/connections: the order of SORTS', () => {
    const all = [...syntheticTable(5000).open.values()];
    for (const sort of Object.keys(SORTS) as Array<keyof typeof SORTS>) {
      for (const k of [1, 200, 1249, 1250, 5000]) {
        expect(rankTopSync(all, SORT_KEYS[sort], k).map((c) => c.key), `${sort} ${k}`).toEqual([...all].sort(SORTS[sort]).slice(0, k).map((c) => c.key));
      }
    }
  });
});

describe('a real watch over loopback (one poll an hour: the table stays as it is)', () => {
  const sockets: net.Socket[] = [];
  let server: net.Server | undefined;
  let agent: ChildProcess | undefined;

  afterAll(async () => {
    if (agent !== undefined) await stopChild(agent);
    for (const s of sockets) s.destroy();
    server?.close();
  });

  it('a page above the one-go size is valid JSON written canonically, ranked by the sort, and its head is the one-go page', async () => {
    ensureBuilt();
    const CONNECTIONS = 600;
    server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.write(Buffer.alloc(1000 + (c.remotePort! % 7) * 1000, 1));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    for (let i = 0; i < CONNECTIONS; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          const s = net.connect(port, '127.0.0.1');
          s.on('data', () => undefined);
          s.on('error', () => undefined);
          sockets.push(s);
          await once(s, 'connect');
        }),
      );
    }
    await new Promise((r) => setTimeout(r, 200)); // every reply written and acked
    agent = spawn('node', [CLI, 'watch', '--listen', '127.0.0.1:0', '--interval', '1h', '--port', String(port), '--owners', 'off', '--destroy-feed', 'off'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TCP_CHRONOGRAPH_LOG_FORMAT: 'json' },
    });
    const started = JSON.parse(await waitForLine(agent, /"msg":"watching"/, 15_000)) as { listen: string };
    for (const sort of Object.keys(SORTS)) {
      const whole = await bytes(`${started.listen}/api/connections?sort=${sort}&limit=100000`);
      expect(whole.status).toBe(200);
      const text = whole.body.toString();
      const parsed = JSON.parse(text) as { total: number; sort: string; connections: Array<{ id: string; stallSeconds: number; rwndShare: number; rwndLimitedSeconds: number; bytesAcked: number }> };
      expect(parsed.total).toBe(CONNECTIONS);
      expect(parsed.connections).toHaveLength(CONNECTIONS);
      // What JSON.stringify writes for this value in one go, byte for byte.
      expect(JSON.stringify(parsed)).toBe(text);
      const key = (c: (typeof parsed.connections)[number]): number[] =>
        sort === 'stall' ? [c.stallSeconds] : sort === 'bytes' ? [c.bytesAcked] : [c.rwndShare, c.rwndLimitedSeconds];
      for (let i = 1; i < parsed.connections.length; i++) {
        const [a, b] = [key(parsed.connections[i - 1]!), key(parsed.connections[i]!)];
        const j = a.findIndex((x, n) => x !== b[n]);
        if (j >= 0) expect(a[j]!).toBeGreaterThan(b[j]!);
      }
      // The one-go path (a page of ONE_GO_MAX) is the head of the sliced one.
      const small = await bytes(`${started.listen}/api/connections?sort=${sort}&limit=${ONE_GO_MAX}`);
      expect(small.body.toString()).toBe(JSON.stringify({ ...parsed, connections: parsed.connections.slice(0, ONE_GO_MAX) }));
    }
  }, 60_000);
});
