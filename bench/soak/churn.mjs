// Churn: many short connections against a loopback server while the built
// `tcp-chronograph watch` runs, then its aggregates against ground truth
// (connections closed, bytes acknowledged), its RSS growth and its fd count.
// Used by test/reliability/churn.test.ts (CI size) and bench/soak/run.mjs
// (`npm run soak`, full size).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../dist/agent/cli/main.js', import.meta.url));

const rssKiB = (pid) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
const fds = (pid) => readdirSync(`/proc/${pid}/fd`).length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Sum of a metric's samples with label port="P". */
export function metricValue(text, name, port) {
  let sum = 0;
  for (const l of text.split('\n')) if (l.startsWith(`${name}{`) && l.includes(`port="${port}"`)) sum += Number(l.slice(l.lastIndexOf(' ') + 1));
  return sum;
}

export async function startWatch(args) {
  const child = spawn('node', [CLI, 'watch', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TCP_CHRONOGRAPH_LOG_FORMAT: 'json' } });
  const line = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d.toString();
      const l = buf.split('\n').find((x) => x.includes('"msg":"watching"'));
      if (l !== undefined) resolve(JSON.parse(l));
    });
    child.once('exit', (c) => reject(new Error(`watch exited ${c}`)));
  });
  return { child, base: line.listen };
}

/** Listens on 127.0.0.1 on a free port below net.ipv4.ip_local_port_range. */
async function listenBelowEphemeral(server) {
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = Math.max(1024, low - 1 - Math.floor(Math.random() * Math.min(10_000, low - 1025)));
    const ok = await new Promise((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) return port;
  }
  throw new Error('no free port below the ephemeral range');
}

/**
 * Opens `count` connections (`parallel` at a time) to a server that writes
 * `bytes` bytes and closes; resolves with the ground truth and the agent's figures.
 */
export async function churn({ count, parallel = 100, bytes = 2000, interval = '200ms', log = () => {} }) {
  const payload = Buffer.alloc(bytes, 120);
  let served = 0;
  let servedBytes = 0;
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end(payload, () => {
      served++;
      servedBytes += bytes;
    });
  });
  // The server's port must lie outside the ephemeral range: a client bound to
  // another source address may otherwise be given the same number as its own
  // local port, and watch --port rightly counts that client socket as one of
  // the port's connections (seen: 1-2 in 5k, 20 in 100k, 2 acked bytes each).
  const port = await listenBelowEphemeral(server);
  const { child, base } = await startWatch(['--port', String(port), '--interval', interval]);
  const scrape = async () => (await fetch(`${base}/metrics`)).text();
  await sleep(500);
  await scrape(); // the scraper's keep-alive connection is part of the baseline
  const fd0 = fds(child.pid);
  const rss0 = rssKiB(child.pid);
  const t0 = Date.now();
  let started = 0;
  let received = 0;
  // The server closes first, so each 4-tuple sits in TIME_WAIT for 60 s: spread
  // the clients over source addresses (about 28k ephemeral ports each).
  const sources = Math.max(1, Math.ceil(count / 20_000));
  const one = (i) =>
    new Promise((resolve, reject) => {
      const c = net.connect({ port, host: '127.0.0.1', localAddress: `127.0.${1 + (i % sources)}.1` });
      c.on('data', (d) => (received += d.length));
      c.on('error', reject);
      c.on('end', () => c.end());
      c.on('close', resolve);
    });
  const worker = async () => {
    while (started < count) {
      await one(started++);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  const seconds = (Date.now() - t0) / 1000;
  // Let the last closes reach the table (destroy feed, close grace).
  let closed = 0;
  let acked = 0;
  for (let i = 0; i < 50; i++) {
    await sleep(200);
    const text = await scrape();
    closed = metricValue(text, 'tcp_chrono_connections_closed_total', port);
    acked = metricValue(text, 'tcp_chrono_bytes_acked_total', port);
    if (closed >= count) break;
  }
  await sleep(1000);
  const text = await scrape();
  closed = metricValue(text, 'tcp_chrono_connections_closed_total', port);
  acked = metricValue(text, 'tcp_chrono_bytes_acked_total', port);
  const result = {
    count,
    seconds,
    served,
    servedBytes,
    received,
    closed,
    acked,
    rssStartKiB: rss0,
    rssEndKiB: rssKiB(child.pid),
    fdStart: fd0,
    fdEnd: fds(child.pid),
  };
  log(result);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  server.close();
  return result;
}
