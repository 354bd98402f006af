// Churn: many short connections against a loopback server while the built
// `tcp-chronograph watch` runs, then its aggregates against ground truth
// (connections closed, bytes acknowledged), its memory and its fd count.
// Used by test/reliability/churn.test.ts (CI size: one round) and
// bench/soak/run.mjs (`npm run soak`: two rounds of 100 000 in a network
// namespace of its own, each followed by a wait for the table to settle).
//
// Memory: a closed connection is remembered as a tombstone for 120 s (for a
// destroy message arriving after the connection vanished from a dump;
// ConnectionTable's tombstoneMs, not a watch flag) and its object is kept
// until the next scrape exports it one last time. So RSS right after a round
// includes every connection of the last two minutes; `settleSeconds` past
// that, the table holds only the open ones again. The first round is the
// warm-up (code compiled, heap grown to its working size); growth is what
// the second round adds on top of the settled first one. The heap at a
// scrape includes garbage not yet collected (tens of MB either way): with
// `heapSnapshots`, the agent runs with --heapsnapshot-signal and, at the
// start and once settled, a snapshot (deleted at once) forces a full
// collection first, so the live heap is known exactly.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentMemory, fds, listenBelowEphemeral, metricValue, procKiB, rssKiB, sleep, startWatch } from './common.mjs';

export { metricValue, startWatch };

/**
 * Runs `rounds` rounds of `count` connections (`parallel` at a time) to a
 * server that writes `bytes` bytes and closes; after each round waits for the
 * agent to count every close, then `settleSeconds` (scraping once a second).
 * Resolves with the ground truth, the agent's figures and memory snapshots.
 */
export async function churn({ count, parallel = 100, bytes = 2000, interval = '200ms', rounds = 1, settleSeconds = 0, heapSnapshots = false, log = () => {} }) {
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
  // heapSnapshots: SIGUSR2 makes the agent write a heap snapshot, after a
  // full collection: the heap then holds only what is reachable.
  const snapDir = heapSnapshots ? mkdtempSync(join(tmpdir(), 'tcp-chrono-churn-')) : undefined;
  const { child, base } = await startWatch(['--port', String(port), '--interval', interval], {
    nodeFlags: heapSnapshots ? ['--heapsnapshot-signal=SIGUSR2'] : [],
    cwd: snapDir,
  });
  try {
    const scrape = async () => (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
    const memory = [];
    /** A full collection in the agent (it precedes a heap snapshot); the snapshot file is deleted. */
    const collect = async () => {
      const before = new Set(readdirSync(snapDir));
      child.kill('SIGUSR2');
      for (let i = 0; i < 600; i++) {
        await sleep(100);
        const made = readdirSync(snapDir).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
        if (made.length > 0) {
          // Written on the agent's main thread: once /metrics answers, the snapshot is done.
          const text = await scrape();
          for (const f of made) rmSync(join(snapDir, f), { force: true });
          return text;
        }
      }
      throw new Error('no heap snapshot after 60 s');
    };
    /**
     * Memory now: RSS first, then the heap as the scrape found it (garbage
     * included); with `gc`, and heapSnapshots on, also the live heap after a
     * full collection (taken after RSS: the snapshot itself costs memory).
     */
    const snapshot = async (label, { gc = false, text } = {}) => {
      const rss = rssKiB(child.pid);
      const m = agentMemory(text ?? (await scrape()));
      const s = { label, rssKiB: rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
      if (gc && heapSnapshots) s.heapLive = agentMemory(await collect()).heapUsed;
      memory.push(s);
      log(s);
      return s;
    };
    await sleep(500);
    await scrape(); // the scraper's keep-alive connection is part of the baseline
    await snapshot('start', { gc: true });
    const fd0 = fds(child.pid);
    const rss0 = rssKiB(child.pid);
    let received = 0;
    let closed = 0;
    let acked = 0;
    const roundSeconds = [];
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
    for (let round = 1; round <= rounds; round++) {
      const t0 = Date.now();
      let started = 0;
      const worker = async () => {
        while (started < count) {
          await one(started++);
        }
      };
      await Promise.all(Array.from({ length: parallel }, worker));
      roundSeconds.push((Date.now() - t0) / 1000);
      // Let the last closes reach the table (destroy feed, close grace).
      let text = '';
      for (let i = 0; i < 50; i++) {
        await sleep(200);
        text = await scrape();
        closed = metricValue(text, 'tcp_chrono_connections_closed_total', port);
        if (closed >= round * count) break;
      }
      await sleep(1000);
      text = await scrape();
      closed = metricValue(text, 'tcp_chrono_connections_closed_total', port);
      acked = metricValue(text, 'tcp_chrono_bytes_acked_total', port);
      log({ round, seconds: roundSeconds.at(-1), closed, acked });
      await snapshot(`after round ${round}`, { text });
      if (settleSeconds > 0) {
        // Scraped once a second meanwhile, as a Prometheus would.
        for (let k = 0; k < settleSeconds; k++) {
          await sleep(1000);
          await scrape();
        }
        await snapshot(`settled ${round}`, { gc: true });
      }
    }
    const result = {
      count,
      rounds,
      total: count * rounds,
      seconds: roundSeconds[0],
      roundSeconds,
      served,
      servedBytes,
      received,
      closed,
      acked,
      rssStartKiB: rss0,
      rssEndKiB: rssKiB(child.pid),
      rssPeakKiB: procKiB(child.pid).hwm,
      fdStart: fd0,
      fdEnd: fds(child.pid),
      memory,
    };
    log(result);
    return result;
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    server.close();
    if (snapDir !== undefined) rmSync(snapDir, { recursive: true, force: true });
  }
}

/** Lines for a person: the memory snapshots, and growth across the second round. */
export function describeMemory(r) {
  const m = (b) => (b / 2 ** 20).toFixed(1);
  const live = (s) => (s.heapLive !== undefined ? `, live after a full GC ${m(s.heapLive).padStart(5)} MiB` : '');
  const lines = r.memory.map(
    (s) => `  ${s.label.padEnd(14)} RSS ${m(s.rssKiB * 1024).padStart(6)} MiB; V8 heap used ${m(s.heapUsed).padStart(6)} MiB (total ${m(s.heapTotal).padStart(5)})${live(s)}; external ${m(s.external)} MiB`,
  );
  const a = r.memory.find((s) => s.label === 'settled 1');
  const b = r.memory.find((s) => s.label === 'settled 2');
  if (a !== undefined && b !== undefined) {
    const heap = a.heapLive !== undefined && b.heapLive !== undefined ? `live heap ${m(b.heapLive - a.heapLive)} MiB` : `heap used ${m(b.heapUsed - a.heapUsed)} MiB`;
    lines.push(`  growth across round 2 (settled 1 -> settled 2): RSS ${m((b.rssKiB - a.rssKiB) * 1024)} MiB, ${heap}`);
  }
  return lines.join('\n');
}

if (process.argv[2] === '--inside') {
  // bench/soak/run.mjs through runInNetns: one JSON argument, one result line.
  const r = await churn({ ...JSON.parse(process.argv[3]), log: (x) => process.stderr.write(`churn: ${JSON.stringify(x)}\n`) });
  process.stdout.write(`result ${JSON.stringify(r)}\n`);
}
