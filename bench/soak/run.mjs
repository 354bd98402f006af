// `npm run soak`: the full-size reliability figures for the README
// (Reliability and security). Each part runs in a network namespace of its
// own (bench/soak/netns.mjs; root), so its sockets neither slow nor are
// slowed by anyone else's. Parts, in order:
//
//   scale       50 000 established connections, `watch --interval 1s` for
//               30 s: tracked, polls done and missed, poll time, RSS, heap.
//   churn       two rounds of 100 000 short connections while `watch` runs,
//               each followed by 130 s for the table to settle (closed
//               connections are remembered 120 s): closed count and bytes
//               acked exact, fds back to baseline, memory at each stage
//               (live heap after a forced full collection) and the growth
//               across the second round.
//   instrument  the same churn against a server that instrument()s every
//               socket: one exact chunk each, nothing lost, fds back,
//               RSS and heap after a warm-up and each of two rounds.
//
// Flags: --only scale|churn|instrument (repeatable), --connections N
// (scale), --seconds S (scale window), --count N (churn and instrument, per
// round), --rounds R, --settle S (churn). Exit 1 if a check fails.
import { runInNetns } from './netns.mjs';
import { describeScale } from './scale.mjs';
import { describeMemory } from './churn.mjs';
import { describeChurnInstrument } from './churn_instrument.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const only = process.argv.flatMap((a, i) => (a === '--only' ? [process.argv[i + 1]] : []));
const want = (part) => only.length === 0 || only.includes(part);
const here = (f) => new URL(`./${f}`, import.meta.url);

const failures = [];
const check = (part, ok, what) => {
  if (!ok) failures.push(`${part}: ${what}`);
};

if (want('scale')) {
  const connections = arg('connections', 50_000);
  const seconds = arg('seconds', 30);
  const r = await runInNetns(here('scale.mjs'), ['--inside', connections, seconds, 1, 10, 100], { timeoutMs: 300_000 + connections * 3 + seconds * 2000 });
  console.log(describeScale(r));
  check('scale', r.established === connections, `${r.established} of ${connections} established`);
  check('scale', r.trackedMin === connections && r.trackedMax === connections, `tracked ${r.trackedMin}..${r.trackedMax}`);
  // As in test/reliability/scale.test.ts: none missed, unless the agent waited for a CPU an interval or more in all.
  check('scale', r.missedTotal <= Math.floor(r.runQueueWaitSeconds), `${r.missedTotal} polls missed, ${r.runQueueWaitSeconds.toFixed(2)} s waiting for a CPU`);
  check('scale', Math.abs(r.polls + r.missed - r.pollsExpected) <= 1, `${r.polls} polls + ${r.missed} missed, ${r.pollsExpected.toFixed(1)} expected`);
  check('scale', r.acked === r.sent, `acked ${r.acked}, sent ${r.sent}`);
}

if (want('churn')) {
  const count = arg('count', 100_000);
  const rounds = arg('rounds', 2);
  const settleSeconds = arg('settle', 130);
  const r = await runInNetns(here('churn.mjs'), ['--inside', JSON.stringify({ count, parallel: 200, bytes: 2000, rounds, settleSeconds, heapSnapshots: true })], {
    timeoutMs: rounds * (settleSeconds * 1000 + count * 5 + 120_000),
  });
  const total = count * rounds;
  console.log(`churn: ${rounds} x ${count} connections in ${r.roundSeconds.map((s) => s.toFixed(1)).join(', ')} s (${Math.round(count / r.roundSeconds[0])}/s in the first)`);
  console.log(`  closed (agent) ${r.closed} of ${total}; bytes acked (agent) ${r.acked} = ${r.servedBytes} + ${total} FINs: ${r.acked === r.servedBytes + total ? 'exact' : 'MISMATCH'}; fds ${r.fdStart} -> ${r.fdEnd}; peak RSS ${(r.rssPeakKiB / 1024).toFixed(1)} MiB`);
  console.log(describeMemory(r));
  check('churn', r.closed === total, `closed ${r.closed} of ${total}`);
  check('churn', r.acked === r.servedBytes + total, 'bytes acked');
  check('churn', r.fdEnd <= r.fdStart, `fds ${r.fdStart} -> ${r.fdEnd}`);
}

if (want('instrument')) {
  const count = arg('count', 100_000);
  const r = await runInNetns(here('churn_instrument.mjs'), ['--inside', JSON.stringify({ count, warmup: 10_000, rounds: 2, parallel: 200, bytes: 2000 })], {
    timeoutMs: 120_000 + (10_000 + 2 * count) * 10,
  });
  console.log(describeChurnInstrument(r));
  check('instrument', r.chunkEvents === r.total && r.chunks === r.total && r.chunkBytes === r.expectedBytes, `chunks ${r.chunkEvents} of ${r.total}`);
  check('instrument', r.stallEvents === 0 && r.pending === 0, `stalls ${r.stallEvents}, pending ${r.pending}`);
  check('instrument', r.lostRecords === 0 && r.inexact === 0, `lost records ${r.lostRecords}, inexact ${r.inexact}`);
  check('instrument', r.watched === 0 && r.errqueue.orphaned === 0, `reader: ${r.watched} left, ${r.errqueue.orphaned} orphaned`);
  check('instrument', r.fdEnd === r.fdStart, `fds ${r.fdStart} -> ${r.fdEnd}`);
}

for (const f of failures) console.log(`FAILED ${f}`);
console.log(failures.length === 0 ? 'soak: OK' : 'soak: FAILED');
process.exit(failures.length === 0 ? 0 : 1);
