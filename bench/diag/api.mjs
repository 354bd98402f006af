#!/usr/bin/env node
// Cost of the JSON API on a big connection table: /api/connections and
// /api/overview over a synthetic table (no kernel, no root), in the process
// that would run the polls. Prints, per size:
//
//   - the synchronous parts, each alone (median of 7): choosing the page
//     (sort or top-k), connectionJson for the page, JSON.stringify of it, and
//     the whole one-go handler as it was (sort + map + stringify);
//   - the handlers as served (agent/export/http.ts over HTTP on loopback, curl
//     as the client), and the one-go handler as it was before the slicing:
//     the response time and the longest stretch the event loop was held (a
//     1 ms interval timer's worst lateness; GC pauses and the machine's own
//     noise included: an idle baseline is printed), one request and four at
//     once, medians of a few runs;
//   - the same for /api/overview.
//
// Usage: npm run build && node bench/diag/api.mjs [sizes, default 10000,50000]
// Asserts nothing.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import express from 'express';
import { connectionJson, ConnectionTable } from '../../dist/agent/model/connections.js';
import { connectionRoutes, listenApp, plainApp, SORT_KEYS, SORTS } from '../../dist/agent/export/http.js';
import { rankTopSync } from '../../dist/agent/model/rank.js';
import { LiveView } from '../../dist/agent/export/live.js';

const sizes = (process.argv[2] ?? '10000,50000').split(',').map(Number);
const ITER = 7;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x) => `${x.toFixed(1)} ms`;

/** A table of n connections over two polls (so deltas and decayed figures are set), figures spread like a busy server's. */
export function syntheticTable(n, seed = 1) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const table = new ConnectionTable({ closeGraceMs: 0 });
  const listening = new Set([8080, 8443, 9000]);
  const ports = [8080, 8443, 9000];
  const base = [];
  for (let i = 0; i < n; i++) {
    base.push({
      family: i % 7 === 0 ? 6 : 4,
      localAddress: i % 7 === 0 ? '2001:db8::1' : '10.0.0.1',
      localPort: ports[i % 3],
      remoteAddress: i % 7 === 0 ? `2001:db8:${(i >> 8).toString(16)}::${(i & 255).toString(16)}` : `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      remotePort: 1024 + (i % 60000),
      busy: rnd() * 100,
      share: rnd(),
      acked: Math.floor(rnd() * 1e9),
    });
  }
  const poll = (t, grow) =>
    base.map((b, i) => ({
      family: b.family,
      state: 1,
      timer: 0,
      retrans: 0,
      localAddress: b.localAddress,
      localPort: b.localPort,
      remoteAddress: b.remoteAddress,
      remotePort: b.remotePort,
      ifindex: 0,
      cookie: BigInt(i + 1),
      key: i + 1,
      rqueue: 0,
      wqueue: 0,
      uid: 0,
      inode: 1000 + i,
      cong: 'cubic',
      chrono: {
        state: 1,
        busyTime: b.busy * grow,
        rwndLimited: b.busy * grow * b.share * 0.5,
        sndbufLimited: b.busy * grow * (1 - b.share) * 0.1,
        bytesAcked: Math.floor(b.acked * grow),
        bytesReceived: 100,
        bytesSent: Math.floor(b.acked * grow) + 1000,
        bytesRetrans: i % 13 === 0 ? 1448 : 0,
        deliveryRate: 1e6 + i,
        rtt: 0.0001 * (1 + (i % 50)),
        sndCwnd: 10 + (i % 90),
        totalRetrans: 0,
        notsentBytes: i % 5 === 0 ? 4096 : 0,
        appLimited: i % 2 === 0,
        sndWnd: 65535,
        sndMss: 1448,
        unacked: 0,
      },
    }));
  const t0 = Date.UTC(2025, 0, 1);
  table.applyPoll(poll(t0, 1), t0, listening);
  table.applyPoll(poll(t0 + 1000, 1.01), t0 + 1000, listening);
  return table;
}

function time(fn) {
  const xs = [];
  for (let i = 0; i < ITER; i++) {
    const t = performance.now();
    fn();
    xs.push(performance.now() - t);
  }
  return median(xs);
}

/** Worst lateness of a 1 ms interval timer while `work` runs: the longest the loop was held (and the longest GC pause in it). */
async function loopHeld(work) {
  let gc = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gc = Math.max(gc, e.duration);
  });
  obs.observe({ entryTypes: ['gc'] });
  let last = performance.now();
  let worst = 0;
  const t = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 1);
    last = now;
  }, 1);
  const t0 = performance.now();
  await work();
  const total = performance.now() - t0;
  clearInterval(t);
  await new Promise((r) => setImmediate(r)); // the observer's last entries
  obs.disconnect();
  return { total, worst, gc };
}

/**
 * GETs by curl in processes of their own (a client in this process would hold
 * this loop reading 45 MB bodies), started before the measurement (spawning
 * holds the loop too): `go()` lets them all send at once and resolves when
 * every one is answered.
 */
function clients(urls) {
  const script = 'read go; for u in "$@"; do curl -sS -o /dev/null -w "%{http_code} %{size_download}\\n" "$u" & done; wait';
  const p = spawn('sh', ['-c', script, 'sh', ...urls], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  return {
    async go() {
      p.stdin.end('go\n');
      await once(p, 'close');
      const lines = out.trim().split('\n');
      for (const l of lines) if (!l.startsWith('200 ')) throw new Error(`a request failed: ${l}`);
      if (lines.length !== urls.length) throw new Error(`${lines.length} of ${urls.length} answered`);
    },
  };
}

async function get(url) {
  await clients([url]).go();
}

const main = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
for (const n of main ? sizes : []) {
  const table = syntheticTable(n);
  const all = () => [...table.open.values()];
  console.log(`\n${n} connections`);
  for (const sort of Object.keys(SORTS)) {
    console.log(
      `  sort=${sort}: full sort ${ms(time(() => all().sort(SORTS[sort])))}; ranked (all work, unsliced) top 100 ${ms(time(() => rankTopSync(all(), SORT_KEYS[sort], 100)))}, ` +
        `all ${ms(time(() => rankTopSync(all(), SORT_KEYS[sort], n)))}`,
    );
  }
  const sorted = all().sort(SORTS.stall);
  for (const limit of [100, n]) {
    const page = sorted.slice(0, limit);
    const objs = page.map(connectionJson);
    const body = { total: n, sort: 'stall', connections: objs };
    console.log(
      `  limit=${limit}: connectionJson ${ms(time(() => page.map(connectionJson)))}, JSON.stringify ${ms(time(() => JSON.stringify(body)))} ` +
        `(${(JSON.stringify(body).length / 1e6).toFixed(1)} MB); one go (sort + map + stringify) ${ms(time(() => JSON.stringify({ total: n, sort: 'stall', connections: all().sort(SORTS.stall).slice(0, limit).map(connectionJson) })))}`,
    );
  }
  const live = new LiveView(table);
  console.log(
    `  overview parts: timeline sample ${ms(time(() => new LiveView(table).sample()))}, worst 200 (unsliced) ${ms(time(() => live.worst(200)))}, ` +
      `per-port counts ${ms(time(() => table.openCounts()))}`,
  );

  // As served: the loop stays responsive when the lateness stays near a slice.
  // "one go" is the handler as it was before the slicing (sort, map, res.json).
  const app = plainApp(); // as the mode runtime's
  app.use(connectionRoutes({ table }));
  const oneGo = express();
  oneGo.get('/one-go', (req, res) => {
    const limit = Number(req.query.limit);
    const all = [...table.open.values()].sort(SORTS.stall);
    res.json({ total: all.length, sort: 'stall', connections: all.slice(0, limit).map(connectionJson) });
  });
  // The overview as it was: two passes for the timeline point, every connection sorted for the worst 200.
  oneGo.get('/one-go-overview', (req, res) => {
    let poll = 0;
    for (const c of table.open.values()) if (c.lastSeen > poll) poll = c.lastSeen;
    const sums = new Map();
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
    const all = [...table.open.values()];
    all.sort((a, b) => b.recentStall - a.recentStall || b.rwndLimited + b.sndbufLimited - (a.rwndLimited + a.sndbufLimited) || b.recentBytes - a.recentBytes);
    res.json({
      now: Date.now(),
      connections: table.open.size,
      ports: [...table.openCounts()].map(([port, open]) => ({ port, open, ...table.aggregates.get(port) })),
      timeline: [{ t: poll, ports: Object.fromEntries(sums) }],
      worst: all.slice(0, Number(req.query.limit)).map(connectionJson),
    });
  });
  oneGo.use(app);
  const l = await listenApp(oneGo, '127.0.0.1', 0);
  const base = `http://127.0.0.1:${l.address.port}`;
  await get(`${base}/api/connections?limit=${n}`); // warm-up
  await get(`${base}/one-go?limit=${n}`);
  const REPEAT = 5;
  const idle = [];
  for (let i = 0; i < REPEAT; i++) idle.push((await loopHeld(() => new Promise((r) => setTimeout(r, 300)))).worst);
  console.log(`  idle 300 ms: loop held ${ms(median(idle))} (median of ${REPEAT}; max ${ms(Math.max(...idle))}): the machine's own noise`);
  for (const [what, path] of [
    ['/api/connections?limit=100', '/api/connections?limit=100'],
    ['  one go, as before', '/one-go?limit=100'],
    [`/api/connections?limit=${n}`, `/api/connections?limit=${n}`],
    ['  one go, as before', `/one-go?limit=${n}`],
    ['/api/overview', '/api/overview?limit=200'],
    ['  one go, as before', '/one-go-overview?limit=200'],
  ]) {
    const runs = { 1: [], 4: [] };
    for (const k of [1, 4]) {
      for (let i = 0; i < (n > 20000 && path.includes(`limit=${n}`) ? 3 : REPEAT); i++) {
        const c = clients(Array.from({ length: k }, () => base + path));
        await new Promise((r) => setTimeout(r, 100)); // the shell is up and waiting
        runs[k].push(await loopHeld(() => c.go()));
      }
    }
    const show = (rs) =>
      `${ms(median(rs.map((r) => r.total)))}, loop held ${ms(median(rs.map((r) => r.worst)))} (max ${ms(Math.max(...rs.map((r) => r.worst)))}; longest GC ${ms(Math.max(...rs.map((r) => r.gc)))})`;
    console.log(`  ${what}: one request ${show(runs[1])}; four at once ${show(runs[4])}`);
  }
  await l.close();
}
if (main) process.exit(0);
