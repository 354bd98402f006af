// Pieces shared by the soak harnesses (churn.mjs, scale.mjs,
// churn_instrument.mjs): the built agent, reading its /metrics, and
// /proc figures of a process.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/agent/cli/main.js', import.meta.url));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** VmRSS and VmHWM (peak RSS) of a process, KiB. */
export function procKiB(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const f = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: f('VmRSS'), hwm: f('VmHWM') };
}

export const rssKiB = (pid) => procKiB(pid).rss;
export const fds = (pid) => readdirSync(`/proc/${pid}/fd`).length;

/** Sum of a metric's samples with label port="P". */
export function metricValue(text, name, port) {
  let sum = 0;
  for (const l of text.split('\n')) if (l.startsWith(`${name}{`) && l.includes(`port="${port}"`)) sum += Number(l.slice(l.lastIndexOf(' ') + 1));
  return sum;
}

/** A sample's value: `name v`, or the first `name{labels} v` whose label set contains `match`; NaN if absent. */
export function sampleValue(text, name, match = '') {
  for (const l of text.split('\n')) {
    if (match === '' && l.startsWith(`${name} `)) return Number(l.slice(name.length + 1));
    if (l.startsWith(`${name}{`) && l.includes(match)) return Number(l.slice(l.lastIndexOf(' ') + 1));
  }
  return NaN;
}

/** The agent's own memory figures in a /metrics body (tcp_chrono_agent_memory_bytes), bytes. */
export function agentMemory(text) {
  const kind = (k) => sampleValue(text, 'tcp_chrono_agent_memory_bytes', `kind="${k}"`);
  return { rss: kind('rss'), heapUsed: kind('heap_used'), heapTotal: kind('heap_total'), external: kind('external'), arrayBuffers: kind('array_buffers') };
}

/**
 * Starts the built `tcp-chronograph watch` on a free loopback port; resolves
 * once it logs "watching". `nodeFlags` go to node, `cwd` is its directory.
 */
export async function startWatch(args, { nodeFlags = [], cwd } = {}) {
  const child = spawn('node', [...nodeFlags, CLI, 'watch', '--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TCP_CHRONOGRAPH_LOG_FORMAT: 'json' },
    cwd,
  });
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
export async function listenBelowEphemeral(server) {
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

/** MiB with one decimal. */
export const mib = (bytes) => (bytes / 2 ** 20).toFixed(1);
