// Benchmark: the proxy against a direct connection, on loopback.
// Workloads: `bulk` (the server sends without end; a chunk per relay write, or
// per sampled write) and `segments` (HTTP/1.1 keep-alive, 4 MiB responses
// back to back; one chunk per response). 1 and 100 concurrent streams.
// The endpoints (endpoints.py, socket work in C) are pinned to CPU 1, the
// proxy to CPU 0, so the endpoints run the same way with and without it; the
// proxy's own cost is its CPU time (CPU-seconds per GB relayed, and share of
// its core, and the rate one core would carry at that cost). Cases are
// interleaved over rounds; medians are printed.
// Reading the ratios: a relay copies every byte in and out again, as much
// socket work as both endpoints together, and on loopback the kernel work of
// a transfer (ACK-clocked sends included) lands partly on the endpoints' CPU.
// On a 2-core machine the ratio to direct is bounded by that, not by the
// proxy's own CPU: the s/GB figure is the proxy's cost.
// Usage: npm run build && node bench/proxy/run.mjs [seconds=3] [rounds=3] [streams=1,100]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const seconds = Number(process.argv[2] ?? 3);
const rounds = Number(process.argv[3] ?? 3);
const streamCounts = (process.argv[4] ?? '1,100').split(',').map(Number);
const endpoints = new URL('./endpoints.py', import.meta.url).pathname;
const cli = new URL('../../dist/agent/cli/main.js', import.meta.url).pathname;
const TICK = 100; // USER_HZ

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK; // utime + stime
}

async function firstLine(child) {
  const it = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return (await it.next()).value;
}

async function startServer(mode) {
  const child = spawn('taskset', ['-c', '1', 'python3', endpoints, 'server', mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  return { child, port: Number(await firstLine(child)) };
}

async function startProxy(upstreamPort, flags) {
  const child = spawn(
    'taskset',
    ['-c', '0', process.execPath, cli, 'proxy', '--allow-root', '--listen', '127.0.0.1:0', '--upstream', `127.0.0.1:${upstreamPort}`, '--metrics-listen', '127.0.0.1:0', '--diag', 'off', ...flags],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const line = JSON.parse(await firstLine(child));
  const port = Number(line.listen.slice(line.listen.lastIndexOf(':') + 1));
  return { child, port, metrics: line.metrics };
}

async function runClient(mode, port, streams) {
  const child = spawn('taskset', ['-c', '1', 'python3', endpoints, 'client', mode, String(port), String(streams), String(seconds)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const out = JSON.parse(await firstLine(child));
  await once(child, 'exit');
  return out;
}

function metric(text, name) {
  let sum = 0;
  for (const l of text.split('\n')) if (l.startsWith(name)) sum += Number(l.slice(l.lastIndexOf(' ') + 1));
  return sum;
}

async function one(c, streams) {
  const server = await startServer(c.mode);
  let proxy;
  try {
    if (c.flags !== undefined) proxy = await startProxy(server.port, c.flags);
    const cpu0 = proxy ? cpuSeconds(proxy.child.pid) : 0;
    const r = await runClient(c.mode, proxy ? proxy.port : server.port, streams);
    const cpu = proxy ? cpuSeconds(proxy.child.pid) - cpu0 : 0;
    let chunks = 0;
    let rss = 0;
    if (proxy) {
      const text = await (await fetch(`${proxy.metrics}/metrics`)).text();
      chunks = metric(text, 'tcp_chrono_chunks_total') + metric(text, 'tcp_chrono_chunk_stalls_total');
      rss = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${proxy.child.pid}/status`, 'utf8'))[1]) * 1024;
    }
    return { gbps: (r.bytes * 8) / r.seconds / 1e9, cpuPerGB: cpu / (r.bytes / 1e9), cpuShare: cpu / r.seconds, chunksPerSec: chunks / r.seconds, rss };
  } finally {
    if (proxy) {
      proxy.child.kill('SIGTERM');
      await once(proxy.child, 'exit');
    }
    server.child.kill('SIGKILL');
    await once(server.child, 'exit');
  }
}

const cases = [
  { label: 'bulk, direct', mode: 'raw' },
  { label: 'bulk, relay only (--instrument off)', mode: 'raw', flags: ['--instrument', 'off'] },
  { label: 'bulk, chunk per relay write', mode: 'raw', flags: ['--http', 'off'] },
  { label: 'bulk, chunk per relay write, --sample 16', mode: 'raw', flags: ['--http', 'off', '--sample', '16'] },
  { label: 'segments, direct', mode: 'http' },
  { label: 'segments, relay only (--instrument off)', mode: 'http', flags: ['--instrument', 'off'] },
  { label: 'segments, chunk per response', mode: 'http', flags: [] },
];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
console.log(`tcp-chronograph proxy vs direct, loopback, ${seconds} s per run, median of ${rounds} rounds; endpoints on CPU 1, proxy on CPU 0`);
console.log(`load average at start: ${loadavg()} (other work on the machine skews every figure but the proxy's s/GB)`);
for (const streams of streamCounts) {
  const runs = cases.map(() => []);
  for (let r = 0; r < rounds; r++) for (const [i, c] of cases.entries()) runs[i].push(await one(c, streams));
  console.log(`\n${streams} stream${streams === 1 ? '' : 's'}:`);
  const results = cases.map((c, i) => ({
    ...c,
    gbps: median(runs[i].map((x) => x.gbps)),
    cpuPerGB: median(runs[i].map((x) => x.cpuPerGB)),
    cpuShare: median(runs[i].map((x) => x.cpuShare)),
    chunksPerSec: median(runs[i].map((x) => x.chunksPerSec)),
    rss: median(runs[i].map((x) => x.rss)),
  }));
  for (const r of results) {
    const base = results.find((b) => b.mode === r.mode && b.flags === undefined);
    const proxyPart =
      r.flags === undefined
        ? ''
        : `   proxy CPU ${r.cpuPerGB.toFixed(3)} s/GB (${(r.cpuShare * 100).toFixed(0)}% of a core; one core carries ~${(8 / r.cpuPerGB).toFixed(1)} Gbit/s)` +
          `   ${Math.round(r.chunksPerSec)} chunks/s   peak RSS ${(r.rss / 2 ** 20).toFixed(0)} MiB`;
    console.log(`  ${r.label.padEnd(44)} ${r.gbps.toFixed(2).padStart(6)} Gbit/s (${(r.gbps / base.gbps).toFixed(2)}x)${proxyPart}`);
  }
}
console.log(`\nload average at end: ${loadavg()}`);
