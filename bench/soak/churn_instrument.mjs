// Churn with instrument() on the server: short connections against a
// loopback server (bench/soak/instrument_server.mjs, a process of its own)
// that instrument()s every accepted socket, writes one chunk of `bytes` and
// ends. Ground truth against the probes: one chunk event per connection
// with its bytes, its ACK record keyed at its own last byte (exact), no
// stall, no lost record, nothing pending at close; the server's fds back to
// their baseline, no socket left in the error-queue reader; its RSS and
// heap (after two collections) at the start, after a warm-up round and
// after each round.
// Used by test/reliability/churn_instrument.test.ts (CI size) and
// bench/soak/run.mjs (`npm run soak`, full size, in a network namespace).
import { fork } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const SERVER = fileURLToPath(new URL('./instrument_server.mjs', import.meta.url));

export async function churnInstrument({ count, warmup = Math.min(1000, count), rounds = 1, parallel = 100, bytes = 2000, log = () => {} }) {
  const server = fork(SERVER, [String(bytes)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const stop = setTimeout(() => server.kill('SIGKILL'), 60_000 + (warmup + rounds * count) * 10);
  try {
    const [{ port }] = await Promise.race([once(server, 'message'), once(server, 'exit').then(() => Promise.reject(new Error('instrument_server exited')))]);
    const report = async () => {
      server.send('report');
      const [m] = await once(server, 'message');
      return m;
    };
    const snapshots = [];
    const snapshot = async (label) => {
      const r = await report();
      const s = { label, rss: r.rss, heapUsed: r.heapUsed, heapTotal: r.heapTotal, external: r.external, fds: r.fds };
      snapshots.push(s);
      log(s);
      return r;
    };
    const start = await snapshot('start');
    let received = 0;
    let opened = 0;
    // The server closes first, so each 4-tuple sits in TIME_WAIT for 60 s: spread
    // the clients over source addresses (about 28k ephemeral ports each).
    const total = warmup + rounds * count;
    const sources = Math.max(1, Math.ceil(total / 20_000));
    const one = () =>
      new Promise((resolve, reject) => {
        const i = opened++;
        const c = net.connect({ port, host: '127.0.0.1', localAddress: `127.0.${1 + (i % sources)}.1` });
        c.on('data', (d) => (received += d.length));
        c.on('error', reject);
        c.on('end', () => c.end());
        c.on('close', resolve);
      });
    const run = async (n) => {
      let started = 0;
      const worker = async () => {
        while (started < n) {
          started++;
          await one();
        }
      };
      const t0 = Date.now();
      await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
      // The server sees each close a moment after the client: wait until it has counted them all.
      let r = await report();
      for (let i = 0; i < 100 && r.closed < opened; i++) {
        await new Promise((res) => setTimeout(res, 100));
        r = await report();
      }
      return (Date.now() - t0) / 1000;
    };
    const roundSeconds = [];
    if (warmup > 0) {
      await run(warmup);
      await snapshot('after warm-up');
    }
    let end;
    for (let k = 1; k <= rounds; k++) {
      roundSeconds.push(await run(count));
      end = await snapshot(`after round ${k}`);
    }
    const result = {
      count,
      warmup,
      rounds,
      total,
      roundSeconds,
      received,
      expectedBytes: total * bytes,
      accepted: end.accepted,
      closed: end.closed,
      instrumentErrors: end.instrumentErrors,
      chunkEvents: end.chunkEvents,
      chunkBytes: end.chunkBytes,
      inexactEvents: end.inexactEvents,
      stallEvents: end.stallEvents,
      chunks: end.chunks,
      stalls: end.stalls,
      inexact: end.inexact,
      lostRecords: end.lostRecords,
      pending: end.pending,
      unaccountedWrites: end.unaccountedWrites,
      bytesWritten: end.bytesWritten,
      watched: end.watched,
      errqueue: end.errqueue,
      fdStart: start.fds,
      fdEnd: end.fds,
      memory: snapshots,
    };
    server.send('exit');
    return result;
  } finally {
    clearTimeout(stop);
    if (server.exitCode === null && server.signalCode === null) {
      const gone = once(server, 'exit');
      const t = setTimeout(() => server.kill('SIGKILL'), 2000);
      await gone;
      clearTimeout(t);
    }
  }
}

/** Lines for a person. */
export function describeChurnInstrument(r) {
  const m = (b) => (b / 2 ** 20).toFixed(1);
  const lines = [
    `churn with instrument(): ${r.total} connections (${r.warmup} warm-up, then ${r.rounds} x ${r.count} in ${r.roundSeconds.map((s) => s.toFixed(1)).join(', ')} s), ${r.expectedBytes / r.total} B each`,
    `  accepted ${r.accepted}, closed ${r.closed}, instrument() errors ${r.instrumentErrors}; client bytes ${r.received} of ${r.expectedBytes}`,
    `  chunk events ${r.chunkEvents} (${r.chunkBytes} B, ${r.inexactEvents} inexact), stall events ${r.stallEvents}; probes: chunks ${r.chunks}, stalls ${r.stalls}, inexact ${r.inexact}, lost records ${r.lostRecords}, pending ${r.pending}, unaccounted writes ${r.unaccountedWrites}`,
    `  error-queue reader: ${r.watched} sockets left, ${r.errqueue.records} records in ${r.errqueue.batches} batches, ${r.errqueue.orphaned} orphaned, ${r.errqueue.malformed} malformed, ${r.errqueue.handlerErrors} handler errors; fds ${r.fdStart} -> ${r.fdEnd}`,
    ...r.memory.map((s) => `  ${s.label.padEnd(14)} RSS ${m(s.rss).padStart(6)} MiB, V8 heap used ${m(s.heapUsed).padStart(6)} MiB (total ${m(s.heapTotal)}), external ${m(s.external)} MiB (after gc)`),
  ];
  const a = r.memory.find((s) => s.label === 'after round 1');
  const b = r.memory.at(-1);
  if (r.rounds > 1) lines.push(`  growth across round${r.rounds > 2 ? `s 2..${r.rounds}` : ' 2'} (after round 1 -> after round ${r.rounds}): RSS ${m(b.rss - a.rss)} MiB, heap used ${m(b.heapUsed - a.heapUsed)} MiB`);
  return lines.join('\n');
}

if (process.argv[2] === '--inside') {
  // bench/soak/run.mjs through runInNetns: one JSON argument, one result line.
  const r = await churnInstrument({ ...JSON.parse(process.argv[3]), log: (x) => process.stderr.write(`churn_instrument: ${JSON.stringify(x)}\n`) });
  process.stdout.write(`result ${JSON.stringify(r)}\n`);
}
