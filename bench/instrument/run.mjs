// Benchmark: what instrumentation costs a Node segment server.
// Same run, same machine: uninstrumented vs one chunk per response vs one chunk
// per write (64 KiB and 1 MiB writes). Loopback readers fetch 4 MiB segments
// over keep-alive connections for a fixed time. Prints throughput and the
// server's CPU (seconds of CPU per GB served), and ratios to the baseline.
// Usage: npm run build && node bench/instrument/run.mjs [seconds=5] [readers=4]
import { spawn } from 'node:child_process';
import http from 'node:http';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

const seconds = Number(process.argv[2] ?? 5);
const readers = Number(process.argv[3] ?? 4);
const SEGMENT = 4 * 1024 * 1024;

async function startServer(mode, writeSize) {
  const child = spawn(process.execPath, [new URL('./server.mjs', import.meta.url).pathname, mode, String(writeSize), String(SEGMENT)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const it = lines[Symbol.asyncIterator]();
  const port = Number((await it.next()).value);
  return { child, port, it };
}

async function load(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: readers });
  let bytes = 0;
  const deadline = Date.now() + seconds * 1000;
  const one = () =>
    new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/seg', agent }, (res) => {
        res.on('data', (d) => (bytes += d.length));
        res.on('end', resolve);
        res.on('error', reject);
      }).on('error', reject);
    });
  await Promise.all(Array.from({ length: readers }, async () => {
    while (Date.now() < deadline) await one();
  }));
  agent.destroy();
  return bytes;
}

async function run(label, mode, writeSize) {
  const { child, port, it } = await startServer(mode, writeSize);
  const t0 = performance.now();
  const bytes = await load(port);
  const elapsed = (performance.now() - t0) / 1000;
  child.kill('SIGTERM');
  const stats = JSON.parse((await it.next()).value);
  await once(child, 'exit');
  return { label, gbps: (bytes * 8) / elapsed / 1e9, cpuPerGB: stats.cpu / (bytes / 1e9), cpuShare: stats.cpu / elapsed, recordsPerSec: stats.records / elapsed, chunks: stats.chunks };
}

const cases = [
  ['baseline (uninstrumented), 64 KiB writes', 'none', 65536],
  ['one chunk per response, 64 KiB writes', 'response', 65536],
  ['one chunk per write, 64 KiB writes', 'write', 65536],
  ['baseline (uninstrumented), 1 MiB writes', 'none', 1 << 20],
  ['one chunk per write, 1 MiB writes', 'write', 1 << 20],
];
console.log(`tcp-chronograph instrumentation cost: ${readers} loopback readers, 4 MiB segments, ${seconds} s per case`);
const results = [];
for (const [label, mode, size] of cases) results.push(await run(label, mode, size));
for (const r of results) {
  const base = results.find((b) => b.label.startsWith('baseline') && b.label.endsWith(r.label.slice(r.label.lastIndexOf(','))));
  console.log(
    `${r.label.padEnd(44)} ${r.gbps.toFixed(2).padStart(6)} Gbit/s (${(r.gbps / base.gbps).toFixed(2)}x)  ` +
      `server CPU ${r.cpuPerGB.toFixed(3)} s/GB (${(r.cpuPerGB / base.cpuPerGB).toFixed(2)}x), ${(r.cpuShare * 100).toFixed(0)}% of a core  ` +
      `${Math.round(r.recordsPerSec)} records/s`,
  );
}
