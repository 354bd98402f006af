// Benchmark: what instrumentation costs a Node segment server.
// Same run, same machine: uninstrumented vs one chunk per response
// (instrumentHttp) vs one chunk per write (64 KiB and 1 MiB writes). curl
// readers fetch 4 MiB segments over keep-alive loopback connections.
// The server is pinned to CPU 0 and the readers to CPU 1 so they do not
// steal from each other; cases are interleaved over several rounds and the
// median is printed. Figures: throughput, and the server's CPU seconds per GB
// served, each as a ratio to the uninstrumented server with the same writes.
// Usage: npm run build && node bench/instrument/run.mjs [segments per reader=60] [readers=2] [rounds=3]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

const segments = Number(process.argv[2] ?? 60);
const readers = Number(process.argv[3] ?? 2);
const rounds = Number(process.argv[4] ?? 3);
const SEGMENT = 4 * 1024 * 1024;
const server = new URL('./server.mjs', import.meta.url).pathname;

async function startServer(mode, writeSize, sample) {
  const child = spawn('taskset', ['-c', '0', process.execPath, server, mode, String(writeSize), String(SEGMENT), String(sample)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const it = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const port = Number((await it.next()).value);
  return { child, port, it };
}

// curl (C, cheap per byte), so the server is what the numbers describe. Each
// reader fetches `segments` segments over one keep-alive connection (URL
// globbing), bodies to /dev/null.
async function load(port) {
  const procs = Array.from({ length: readers }, () =>
    spawn('taskset', ['-c', '1', 'curl', '-s', '--fail', `http://127.0.0.1:${port}/seg[1-${segments}]`], { stdio: ['ignore', 'ignore', 'inherit'] }),
  );
  const codes = await Promise.all(procs.map((p) => once(p, 'exit').then(([c]) => c)));
  if (codes.some((c) => c !== 0)) throw new Error(`a reader failed: exit codes ${codes}`);
  return readers * segments * SEGMENT;
}

async function once_(mode, writeSize, sample) {
  const { child, port, it } = await startServer(mode, writeSize, sample);
  const t0 = performance.now();
  const bytes = await load(port);
  const elapsed = (performance.now() - t0) / 1000;
  child.kill('SIGTERM');
  const stats = JSON.parse((await it.next()).value);
  await once(child, 'exit');
  return { gbps: (bytes * 8) / elapsed / 1e9, cpuPerGB: stats.cpu / (bytes / 1e9), recordsPerSec: stats.records / elapsed, chunksPerSec: stats.chunks / elapsed };
}

const cases = [
  { label: 'uninstrumented', mode: 'none', size: 65536, sample: 1 },
  { label: 'one chunk per response', mode: 'response', size: 65536, sample: 1 },
  { label: 'one chunk per response, sample 1/16', mode: 'response', size: 65536, sample: 16 },
  { label: 'one chunk per write', mode: 'write', size: 65536, sample: 1 },
  { label: 'one chunk per write, sample 1/16', mode: 'write', size: 65536, sample: 16 },
  { label: 'uninstrumented', mode: 'none', size: 1 << 20, sample: 1 },
  { label: 'one chunk per write', mode: 'write', size: 1 << 20, sample: 1 },
];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`tcp-chronograph instrumentation cost: ${readers} curl readers x ${segments} segments of 4 MiB, median of ${rounds} rounds`);
const runs = cases.map(() => []);
for (let r = 0; r < rounds; r++) for (const [i, c] of cases.entries()) runs[i].push(await once_(c.mode, c.size, c.sample));
const results = cases.map((c, i) => ({
  ...c,
  gbps: median(runs[i].map((x) => x.gbps)),
  cpuPerGB: median(runs[i].map((x) => x.cpuPerGB)),
  recordsPerSec: median(runs[i].map((x) => x.recordsPerSec)),
}));
for (const r of results) {
  const base = results.find((b) => b.mode === 'none' && b.size === r.size);
  const writes = r.size >= 1 << 20 ? '1 MiB writes' : '64 KiB writes';
  console.log(
    `${`${writes}, ${r.label}`.padEnd(50)} ${r.gbps.toFixed(2).padStart(6)} Gbit/s (${(r.gbps / base.gbps).toFixed(2)}x)   ` +
      `server CPU ${r.cpuPerGB.toFixed(3)} s/GB (${(r.cpuPerGB / base.cpuPerGB).toFixed(2)}x)   ${Math.round(r.recordsPerSec)} records/s`,
  );
}
