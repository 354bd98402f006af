// Scale: N established loopback connections held open (bench/soak/hold.py,
// a few bytes trickled on a share of them every second) while the built
// `tcp-chronograph watch --port P --interval 1s` runs, in a network namespace
// of its own. Reports what the agent saw (connections tracked, per-port open
// gauge, sockets per dump, bytes acked against the bytes sent), polls done
// against the slots elapsed, polls missed, poll durations, agent RSS and heap.
// Used by test/reliability/scale.test.ts (CI size) and bench/soak/run.mjs
// (`npm run soak`, 50 000). Needs root (ip netns, a raised open-files limit).
//
// Poll durations are exact per poll: /metrics is scraped once a second, and
// between two scrapes one poll apart the growth of the duration histogram's
// _sum is that poll's time (scrapes further apart give an average, kept
// apart). A scrape a second is also the load of a Prometheus at 1 s.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { procKiB, sampleValue, sleep, startWatch } from './common.mjs';
import { runInNetns } from './netns.mjs';

export { sampleValue };

const HOLD = fileURLToPath(new URL('./hold.py', import.meta.url));

/**
 * Runs the scale check in a fresh network namespace and resolves with its figures.
 * count: connections; seconds: the measured window; interval: seconds.
 */
export function scale({ count, seconds = 30, interval = 1, trickleEvery = 10, trickleBytes = 100 }) {
  const limit = 120_000 + count * 3 + seconds * 1000 * 2;
  return runInNetns(new URL(import.meta.url), ['--inside', count, seconds, interval, trickleEvery, trickleBytes], { timeoutMs: limit });
}

/** The stdout lines of a child, awaited one by one (each line is consumed once). */
class Lines {
  constructor(child, what) {
    this.lines = [];
    this.waiters = [];
    this.what = what;
    this.exited = undefined;
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop();
      this.lines.push(...parts);
      this.wake();
    });
    child.once('exit', (c, sig) => {
      this.exited = `${what} exited ${c ?? sig}`;
      this.wake();
    });
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  /** The next line matching `re` (earlier non-matching lines are dropped). */
  next(re, ms) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`${this.what}: no line matching ${re} after ${ms} ms`)), ms);
      const check = () => {
        while (this.lines.length > 0) {
          const l = this.lines.shift();
          if (re.test(l)) return done(undefined, l);
        }
        if (this.exited !== undefined) done(new Error(this.exited));
      };
      const done = (err, l) => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        if (err !== undefined) reject(err);
        else resolve(l);
      };
      this.waiters.push(check);
      check();
    });
  }
}

const quantile = (xs, q) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

async function inside([count, seconds, interval, trickleEvery, trickleBytes]) {
  const children = [];
  const killAll = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  };
  process.on('exit', killAll);
  const progress = (m) => process.stderr.write(`scale: ${m}\n`);
  try {
    // hold.py: the sockets spread over processes that fit the open-files
    // limit (see there): servers sharing the port by SO_REUSEPORT, clients
    // each from a source address of its own.
    const maxSeconds = 120 + Math.ceil(count / 500) + seconds * 2;
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const port = low - 1; // a fresh namespace: free, and no client is given it as its own port
    const perClient = 15_000;
    const nServers = Math.max(1, Math.ceil(count / 10_000));
    const t0 = performance.now();
    const servers = [];
    for (let i = 0; i < nServers; i++) {
      const p = spawn('python3', [HOLD, 'server', port, trickleEvery, trickleBytes, maxSeconds], { stdio: ['pipe', 'pipe', 'inherit'] });
      children.push(p);
      const lines = new Lines(p, `hold.py server ${i}`);
      await lines.next(/^listening$/, 30_000);
      servers.push({ p, lines });
    }
    const clients = [];
    const perAddress = 2500;
    for (let i = 0, left = count; left > 0; i++, left -= perClient) {
      const first = 1 + (i * perClient) / perAddress;
      const p = spawn('python3', [HOLD, 'client', port, Math.min(perClient, left), first, perAddress, maxSeconds], { stdio: ['pipe', 'pipe', 'inherit'] });
      children.push(p);
      clients.push({ p, lines: new Lines(p, `hold.py client ${i}`) });
    }
    for (const c of clients) await c.lines.next(/^ready /, maxSeconds * 1000);
    const accepted = async () => {
      let n = 0;
      for (const sv of servers) {
        sv.p.stdin.write('count\n');
        n += Number((await sv.lines.next(/^count /, 10_000)).slice(6));
      }
      return n;
    };
    let established = await accepted();
    for (let i = 0; i < 100 && established < count; i++) {
      await sleep(100);
      established = await accepted();
    }
    const ready = { connections: established, seconds: (performance.now() - t0) / 1000, sources: Math.ceil(count / perAddress), clientProcs: clients.length, servers: nServers };
    progress(`${established} connections up in ${ready.seconds.toFixed(1)} s (${nServers} server and ${clients.length} client processes), port ${port}`);
    if (established !== count) throw new Error(`only ${established} of ${count} connections accepted`);

    const tStart = performance.now();
    const { child: agent, base } = await startWatch(['--port', String(port), '--interval', `${interval * 1000}ms`]);
    children.push(agent);
    // The agent starts its poll loop right after this line: polls are due at
    // about loopStart + k·interval. Scrapes are placed three quarters into
    // each slot, after a typical poll has ended and before the next starts,
    // so two consecutive scrapes are exactly one poll apart.
    const loopStart = performance.now();
    const startupSeconds = (loopStart - tStart) / 1000;
    const scrape = async () => {
      const r = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(30_000) });
      if (r.status !== 200) throw new Error(`/metrics: ${r.status}`);
      return r.text();
    };
    const read = (text) => ({
      polls: sampleValue(text, 'tcp_chrono_agent_polls_total'),
      missed: sampleValue(text, 'tcp_chrono_agent_polls_missed_total'),
      errors: sampleValue(text, 'tcp_chrono_agent_poll_errors_total'),
      durSum: sampleValue(text, 'tcp_chrono_agent_poll_duration_seconds_sum'),
      durCount: sampleValue(text, 'tcp_chrono_agent_poll_duration_seconds_count'),
      tracked: sampleValue(text, 'tcp_chrono_agent_connections_tracked'),
      seen: sampleValue(text, 'tcp_chrono_agent_sockets_seen'),
      open: sampleValue(text, 'tcp_chrono_connections', `port="${port}"`),
      closed: sampleValue(text, 'tcp_chrono_connections_closed_total', `port="${port}"`),
      acked: sampleValue(text, 'tcp_chrono_bytes_acked_total', `port="${port}"`),
      heapUsed: sampleValue(text, 'tcp_chrono_agent_memory_bytes', 'kind="heap_used"'),
      heapTotal: sampleValue(text, 'tcp_chrono_agent_memory_bytes', 'kind="heap_total"'),
      external: sampleValue(text, 'tcp_chrono_agent_memory_bytes', 'kind="external"'),
      ownerScans: sampleValue(text, 'tcp_chrono_agent_owner_scans_total'),
      renderMs: 0,
      t: 0,
      ...procKiB(agent.pid),
    });
    const sample = async () => {
      const t = performance.now();
      const s = read(await scrape());
      s.t = t;
      s.renderMs = performance.now() - t;
      return s;
    };

    // The window: one scrape an interval, from the second slot on.
    const I = interval * 1000;
    const at = async (k) => {
      await sleep(Math.max(0, loopStart + (k + 0.75) * I - performance.now()));
      return sample();
    };
    const first = await at(1);
    const samples = [first];
    progress(`watch up in ${startupSeconds.toFixed(1)} s (first poll included); ${first.tracked} tracked; measuring ${seconds} s`);
    for (let k = 2; k <= 1 + Math.round(seconds / interval); k++) samples.push(await at(k));
    const last = samples.at(-1);
    const windowSeconds = (last.t - first.t) / 1000;

    // Stop the trickle; once every byte sent is acked and polled, the per-port counter must equal it.
    let sent = 0;
    for (const sv of servers) {
      sv.p.stdin.write('stop\n');
      sent += JSON.parse((await sv.lines.next(/^stopped /, 10_000)).slice('stopped '.length)).sent;
    }
    await sleep(2.5 * interval * 1000);
    const final = await sample();
    // Time the agent's main thread was runnable but given no CPU (other
    // processes on a loaded machine), since it started: a poll slot can be
    // lost to that without the agent being slow.
    const runQueueWaitSeconds = Number(readFileSync(`/proc/${agent.pid}/task/${agent.pid}/schedstat`, 'utf8').trim().split(/\s+/)[1]) / 1e9;

    const exact = [];
    const averaged = [];
    for (let i = 1; i < samples.length; i++) {
      const dc = samples[i].durCount - samples[i - 1].durCount;
      const ds = samples[i].durSum - samples[i - 1].durSum;
      if (dc === 1) exact.push(ds * 1000);
      else if (dc > 1) averaged.push((ds * 1000) / dc);
    }
    const mib = (kib) => kib / 1024;
    const result = {
      count,
      established: ready.connections,
      setupSeconds: ready.seconds,
      servers: ready.servers,
      clientProcs: ready.clientProcs,
      sources: ready.sources,
      startupSeconds,
      interval,
      windowSeconds,
      trackedMin: Math.min(...samples.map((s) => s.tracked)),
      trackedMax: Math.max(...samples.map((s) => s.tracked)),
      openMin: Math.min(...samples.map((s) => s.open)),
      openMax: Math.max(...samples.map((s) => s.open)),
      seenMin: Math.min(...samples.map((s) => s.seen)),
      closed: final.closed,
      polls: last.polls - first.polls,
      pollsExpected: windowSeconds / interval,
      pollsTotal: final.polls,
      missed: last.missed - first.missed,
      missedTotal: final.missed,
      pollErrors: final.errors,
      runQueueWaitSeconds,
      pollMs: {
        exactPolls: exact.length,
        median: quantile(exact, 0.5),
        p90: quantile(exact, 0.9),
        max: exact.length > 0 ? Math.max(...exact) : NaN,
        averagedMax: averaged.length > 0 ? Math.max(...averaged) : NaN,
        meanAll: ((final.durSum - first.durSum) / (final.durCount - first.durCount)) * 1000,
      },
      scrapeMs: { median: quantile(samples.map((s) => s.renderMs), 0.5), max: Math.max(...samples.map((s) => s.renderMs)) },
      sent,
      acked: final.acked,
      ownerScans: final.ownerScans,
      rssMiB: { start: mib(first.rss), end: mib(final.rss), max: mib(Math.max(...samples.map((s) => s.rss))), peak: mib(final.hwm) },
      heapUsedMiB: { start: first.heapUsed / 2 ** 20, end: final.heapUsed / 2 ** 20, max: Math.max(...samples.map((s) => s.heapUsed)) / 2 ** 20 },
      heapTotalMiB: final.heapTotal / 2 ** 20,
      externalMiB: final.external / 2 ** 20,
    };
    agent.kill('SIGTERM');
    await new Promise((r) => (agent.exitCode !== null ? r() : agent.once('exit', r)));
    for (const h of [...servers, ...clients]) h.p.stdin.end();
    for (const h of [...servers, ...clients]) await new Promise((r) => (h.p.exitCode !== null ? r() : h.p.once('exit', r)));
    process.stdout.write(`result ${JSON.stringify(result)}\n`);
  } finally {
    killAll();
  }
}

/** One paragraph of figures for a person. */
export function describeScale(r) {
  const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
  return [
    `scale: ${r.established} established connections (set up in ${f1(r.setupSeconds)} s by ${r.servers} server and ${r.clientProcs} client processes, ${r.sources} source addresses), watch --interval ${r.interval}s for ${f1(r.windowSeconds)} s (startup incl. first poll ${f1(r.startupSeconds)} s)`,
    `  tracked ${r.trackedMin}..${r.trackedMax}, open gauge ${r.openMin}..${r.openMax}, sockets per dump >= ${r.seenMin}, closed ${r.closed}`,
    `  polls ${r.polls} in the window (expected ${f1(r.pollsExpected)}), missed ${r.missed} in the window, ${r.missedTotal} since start; poll errors ${r.pollErrors}; the agent waited ${f1(r.runQueueWaitSeconds * 1000)} ms for a CPU since start`,
    `  poll time: median ${f1(r.pollMs.median)} ms, p90 ${f1(r.pollMs.p90)} ms, max ${f1(r.pollMs.max)} ms (${r.pollMs.exactPolls} polls measured one by one; mean of all ${f1(r.pollMs.meanAll)} ms${Number.isFinite(r.pollMs.averagedMax) ? `, worst two-poll average ${f1(r.pollMs.averagedMax)} ms` : ''})`,
    `  scrape (/metrics, default cap of 200 series): median ${f1(r.scrapeMs.median)} ms, max ${f1(r.scrapeMs.max)} ms; owner scans ${r.ownerScans}`,
    `  bytes trickled ${r.sent}, acked (agent, port) ${r.acked}: ${r.acked === r.sent ? 'exact' : 'MISMATCH'}`,
    `  agent RSS ${f1(r.rssMiB.start)} -> ${f1(r.rssMiB.end)} MiB (max sampled ${f1(r.rssMiB.max)}, peak ${f1(r.rssMiB.peak)}); V8 heap used ${f1(r.heapUsedMiB.start)} -> ${f1(r.heapUsedMiB.end)} MiB (max sampled ${f1(r.heapUsedMiB.max)}), heap total ${f1(r.heapTotalMiB)} MiB, external ${f1(r.externalMiB)} MiB`,
  ].join('\n');
}

if (process.argv[2] === '--inside') {
  await inside(process.argv.slice(3).map(Number));
}
