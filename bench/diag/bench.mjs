#!/usr/bin/env node
// sock_diag poll benchmark: 1k, 10k, 50k established loopback connections in
// a private network namespace. For each size, in the same run: the agent's
// poll (dump + decode + table update), the native dump alone, a minimal C
// program doing the same dump (rawdump.c), `ss -tin`, /metrics render time
// at the default cap and at 10k per-connection series, and table memory per
// tracked connection. Prints numbers; asserts nothing.
// Usage (root): npm run build && node bench/diag/bench.mjs [sizes, default 1000,10000,50000]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { holderReady } from './holder.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const sizes = (process.argv[2] ?? '1000,10000,50000').split(',').map(Number);
const ns = `tcb-${process.pid}`;
const work = mkdtempSync(join(tmpdir(), 'tcpchrono-bench-'));
const rawdump = join(work, 'rawdump');
const ITER = 7;

const cleanup = () => {
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  rmSync(work, { recursive: true, force: true });
};
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

execFileSync('gcc', ['-O2', '-o', rawdump, join(here, 'rawdump.c')]);
execFileSync('ip', ['netns', 'add', ns]);
execFileSync('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
const inNs = (cmd) => ['netns', 'exec', ns, 'sh', '-c', cmd];
// The open-files limit here may not be raisable (hard limit, no CAP_SYS_RESOURCE):
// spread the sockets over holders of at most PER_HOLDER connections (2 fds each).
const fdLimit = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()) || 1024;
const PER_HOLDER = Math.max(100, Math.floor((fdLimit - 64) / 2));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (ms) => `${ms.toFixed(1)} ms`;
const rows = [];

for (const n of sizes) {
  const t0 = Date.now();
  const holders = [];
  for (let left = n; left > 0; left -= PER_HOLDER) {
    const k = Math.min(left, PER_HOLDER);
    const holder = spawn('ip', inNs(`python3 ${join(here, 'hold.py')} ${k}`), { stdio: ['pipe', 'pipe', 'inherit'] });
    holders.push(holder);
    await holderReady(holder, 120, `holder for ${k}`);
  }
  process.stderr.write(`${n} connections up in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);

  const raw = execFileSync('ip', inNs(`${rawdump} ${ITER}`), { encoding: 'utf8' });
  const rawMs = Number(/median_ms=([\d.]+)/.exec(raw)[1]);
  const rawCpuMs = Number(/cpu_ms=([\d.]+)/.exec(raw)[1]);
  const rawSockets = Number(/sockets=(\d+)/.exec(raw)[1]);

  const ss = [];
  const ssCpu = [];
  for (let i = 0; i < 5; i++) {
    const t = process.hrtime.bigint();
    // bash's `times` prints the children's user and system CPU time.
    const out = execFileSync('ip', ['netns', 'exec', ns, 'bash', '-c', 'ss -tin >/dev/null; times'], { encoding: 'utf8' });
    ss.push(Number(process.hrtime.bigint() - t) / 1e6);
    const [u, s] = [...out.trim().split('\n').pop().matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60e3 + Number(m[2]) * 1e3);
    ssCpu.push(u + s);
  }
  const ssMs = median(ss);
  const ssCpuMs = median(ssCpu);

  const m = JSON.parse(execFileSync('ip', inNs(`node --expose-gc ${join(here, 'measure.mjs')} ${ITER}`), { encoding: 'utf8', maxBuffer: 1 << 26 }));
  await Promise.all(holders.map((h) => new Promise((r) => { h.once('exit', r); h.stdin.end(); })));
  rows.push({ n, rawSockets, rawMs, rawCpuMs, ssMs, ssCpuMs, ...m });
}

console.log('\nsock_diag poll, same namespace, same run (median of 7; ss: 5 runs incl. process start)');
console.log('connections | sockets | raw C dump | agent native dump | agent dump+decode | agent poll (dump+decode+table) | agent/raw | ss -tin | ss/raw | first poll');
console.log('(wall time: sensitive to other load on the machine)');
for (const r of rows) {
  console.log(
    [r.n, r.rawSockets, fmt(r.rawMs), fmt(r.nativeDumpMs), fmt(r.decodeMs), fmt(r.pollMs), (r.pollMs / r.rawMs).toFixed(2) + '×', fmt(r.ssMs), (r.ssMs / r.rawMs).toFixed(2) + '×', fmt(r.firstPollMs)].join(' | '),
  );
}
console.log('\nCPU time of one poll (user+system; ss: 10 ms resolution, includes process start)');
console.log('connections | raw C dump | agent poll | agent/raw | ss -tin | ss/raw');
for (const r of rows) {
  console.log([r.n, fmt(r.rawCpuMs), fmt(r.pollCpuMs), (r.pollCpuMs / r.rawCpuMs).toFixed(2) + '×', fmt(r.ssCpuMs), (r.ssCpuMs / r.rawCpuMs).toFixed(2) + '×'].join(' | '));
}
console.log('\n/metrics render (prom-client) and table memory');
console.log('connections | tracked | render @cap 200 | render @cap 10k | RSS / tracked conn | heap+external / tracked conn');
for (const r of rows) {
  const at = (cap) => r.renders.find((x) => x.cap === cap);
  const fmtR = (x) => (x === undefined ? '-' : `${fmt(x.ms)} (${x.exported} conns, ${(x.bytes / 1024).toFixed(0)} KiB)`);
  console.log([r.n, r.tracked, fmtR(at(200)), fmtR(at(10_000)), `${(r.rssPerConn / 1024).toFixed(2)} KiB`, `${(r.heapPerConn / 1024).toFixed(2)} KiB`].join(' | '));
}
