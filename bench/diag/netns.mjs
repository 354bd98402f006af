#!/usr/bin/env node
// watch --netns poll benchmark: the same TOTAL established loopback
// connections (default 10 000) spread over 1, 10 and 100 network namespaces
// (and "1+99": all in one, beside 99 namespaces without a TCP socket). For
// each spread, RUNS times (default 3), each in a fresh process: the agent's
// poll of those namespaces (netns_measure.mjs: NetnsSet + DiagPoller.pollScoped,
// as agent/cli/watch.ts), against the raw dump of the same sockets
// (rawdump.c: one sock_diag socket made inside each namespace, IPv4 as the
// agent dumps where sockstat shows no TCPv6 socket, decoding nothing), and
// memory per tracked connection. Prints the range over the runs; asserts nothing.
// Usage (root): npm run build && node bench/diag/netns.mjs [TOTAL] [SPREADS] [RUNS]
//   e.g. node bench/diag/netns.mjs 10000 1,10,100,1+99 3
// CHILD_EHASH=N: the namespaces get a TCP hash table of their own, of N
// buckets (sysctl net.ipv4.tcp_child_ehash_entries, Linux 6.1+, set only
// while they are created and put back right after: it is read at creation).
// Without it every namespace shares the host's table, and each namespace's
// dump walks every socket of every namespace.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { holderReady } from './holder.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const TOTAL = Number(process.argv[2] ?? 10_000);
const SPREADS = (process.argv[3] ?? '1,10,100,1+99').split(',');
const RUNS = Number(process.argv[4] ?? 3);
const ITER = 7;
const CHILD_EHASH = process.env.CHILD_EHASH;
const work = mkdtempSync(join(tmpdir(), 'tcpchrono-bench-netns-'));
const rawdump = join(work, 'rawdump');
const made = [];
const holders = new Set();

const cleanup = () => {
  for (const h of holders) h.kill('SIGKILL');
  for (const ns of made.splice(0)) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  rmSync(work, { recursive: true, force: true });
};
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

execFileSync('gcc', ['-O2', '-o', rawdump, join(here, 'rawdump.c')]);
// hold_netns.py raises its open-files limit to the hard one: 2 fds a connection.
const hard = Number(execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()) || 1024;
const PER_HOLDER = Math.max(100, Math.floor((hard - 1000) / 2));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const range = (xs, f) => {
  const lo = Math.min(...xs), hi = Math.max(...xs);
  return f(lo) === f(hi) ? f(lo) : `${f(lo)}–${f(hi)}`;
};
const ms = (x) => x.toFixed(x < 10 ? 2 : 1);
const ratio = (x) => `${x.toFixed(2)}×`;
const kib = (x) => (x / 1024).toFixed(2);

async function hold(pairs) {
  const h = spawn('python3', [join(here, 'hold_netns.py'), ...pairs], { stdio: ['pipe', 'pipe', 'inherit'] });
  holders.add(h);
  await holderReady(h, 300);
  return h;
}

const results = [];
for (const spread of SPREADS) {
  const [withConns, empty] = spread.split('+').map(Number);
  const names = Array.from({ length: withConns + (empty || 0) }, (_, i) => `tcbn-${process.pid}-${i}`);
  const SYSCTL = 'net.ipv4.tcp_child_ehash_entries';
  const before = CHILD_EHASH !== undefined ? execFileSync('sysctl', ['-n', SYSCTL], { encoding: 'utf8' }).trim() : undefined;
  try {
    if (CHILD_EHASH !== undefined) execFileSync('sysctl', ['-q', '-w', `${SYSCTL}=${CHILD_EHASH}`]);
    for (const ns of names) {
      execFileSync('ip', ['netns', 'add', ns]);
      made.push(ns);
    }
  } finally {
    if (before !== undefined) execFileSync('sysctl', ['-q', '-w', `${SYSCTL}=${before}`]);
  }
  for (const ns of names) execFileSync('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
  const paths = names.map((n) => `/run/netns/${n}`);
  const busy = paths.slice(0, withConns);
  // Each busy namespace's share, cut into holders of at most PER_HOLDER connections.
  const t0 = Date.now();
  const per = Math.floor(TOTAL / withConns);
  let batch = [], inBatch = 0;
  const running = [];
  for (const p of busy) {
    for (let left = per; left > 0; ) {
      const k = Math.min(left, PER_HOLDER - inBatch);
      batch.push(`${p}:${k}`);
      inBatch += k;
      left -= k;
      if (inBatch === PER_HOLDER) {
        running.push(await hold(batch));
        batch = [];
        inBatch = 0;
      }
    }
  }
  if (batch.length > 0) running.push(await hold(batch));
  process.stderr.write(`${spread}: ${per * withConns} connections in ${withConns} namespaces${empty ? ` (+${empty} empty)` : ''} up in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);

  const runs = [];
  for (let r = 0; r < RUNS; r++) {
    const raw = execFileSync(rawdump, [String(ITER), '-4', ...busy], { encoding: 'utf8' });
    const m = JSON.parse(execFileSync('node', ['--expose-gc', join(here, 'netns_measure.mjs'), String(ITER), ...paths], { encoding: 'utf8', maxBuffer: 1 << 26 }));
    runs.push({
      rawMs: Number(/median_ms=([\d.]+)/.exec(raw)[1]),
      rawCpuMs: Number(/cpu_ms=([\d.]+)/.exec(raw)[1]),
      rawSockets: Number(/sockets=(\d+)/.exec(raw)[1]),
      ...m,
    });
    process.stderr.write(`  run ${r + 1}: raw ${ms(runs.at(-1).rawMs)} ms, agent ${ms(m.pollMs)} ms, ${m.tracked} tracked\n`);
  }
  results.push({ spread, withConns, empty: empty || 0, runs });
  await Promise.all(running.map((h) => new Promise((res) => { h.once('exit', res); h.stdin.end(); })));
  for (const h of running) holders.delete(h);
  for (const ns of names) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  made.splice(0);
}

console.log(
  `\nwatch --netns: ${TOTAL} connections (${2 * TOTAL} sockets) spread over namespaces${CHILD_EHASH !== undefined ? `, each with a TCP hash table of its own (${CHILD_EHASH} buckets)` : ''}; range over ${RUNS} runs, each the median of ${ITER} polls`,
);
console.log('namespaces | sockets dumped | raw C dump | agent poll | agent/raw | raw CPU | agent CPU | agent/raw CPU | discovery | RSS / tracked conn | heap+external / tracked conn');
console.log('---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:');
for (const { spread, withConns, empty, runs } of results) {
  const label = empty > 0 ? `${withConns} (+${empty} without TCP)` : `${withConns}`;
  console.log(
    [
      label,
      range(runs.map((r) => r.rawSockets), String),
      `${range(runs.map((r) => r.rawMs), ms)} ms`,
      `${range(runs.map((r) => r.pollMs), ms)} ms`,
      range(runs.map((r) => r.pollMs / r.rawMs), ratio),
      `${range(runs.map((r) => r.rawCpuMs), ms)} ms`,
      `${range(runs.map((r) => r.pollCpuMs), ms)} ms`,
      range(runs.map((r) => r.pollCpuMs / r.rawCpuMs), ratio),
      `${range(runs.map((r) => r.refreshMs), ms)} ms`,
      `${range(runs.map((r) => r.rssPerConn), kib)} KiB`,
      `${range(runs.map((r) => r.heapPerConn), kib)} KiB`,
    ].join(' | '),
  );
  void spread;
}
console.log(JSON.stringify(results));
