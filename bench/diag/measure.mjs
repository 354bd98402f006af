// Runs inside the bench namespace (see bench.mjs): times the agent's poll
// (dump + decode + table update), the native dump alone, /metrics rendering
// at two caps, and the memory the table holds per tracked connection.
// Prints one JSON line. Needs `npm run build` and node --expose-gc.
import { performance } from 'node:perf_hooks';
import { DiagSource, DEFAULT_STATES, diagBinding } from '../../dist/agent/sources/diag.js';
import { ConnectionTable } from '../../dist/agent/model/connections.js';
import { WatchMetrics } from '../../dist/agent/export/metrics.js';
import { AF_INET, AF_INET6, INET_DIAG_CONG, INET_DIAG_INFO, INET_DIAG_SKMEMINFO, extMask } from '../../dist/agent/parse/inet_diag.js';

const ITER = Number(process.argv[2] ?? 7);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = (fn) => {
  const t0 = performance.now();
  const r = fn();
  return [performance.now() - t0, r];
};
/** [wall ms, cpu ms (user+system of this process), result] */
const timeCpu = (fn) => {
  const c0 = process.cpuUsage();
  const [ms, r] = time(fn);
  const c = process.cpuUsage(c0);
  return [ms, (c.user + c.system) / 1000, r];
};
const mem = () => {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + m.external + m.arrayBuffers };
};

// Warm up code paths (JIT) on a throwaway table so the memory baseline is fair.
{
  const s = new DiagSource({ ports: [], remoteCidrs: [], states: DEFAULT_STATES });
  const t = new ConnectionTable({ closeGraceMs: 0 });
  for (let i = 0; i < 2; i++) {
    const r = s.poll();
    t.applyPoll(r.sockets.slice(0, 100), Date.now(), r.listeningPorts);
    s.poll(() => undefined);
  }
}
const base = mem();

const source = new DiagSource({ ports: [], remoteCidrs: [], states: DEFAULT_STATES });
const table = new ConnectionTable({ closeGraceMs: 0 });
// As the agent does it (agent/cli/watch.ts): sockets streamed into the table.
const poll = () => {
  const listening = new Set();
  table.beginPoll(Date.now(), listening);
  const r = source.poll((s) => table.track(s), listening);
  table.endPoll(!r.interrupted);
  return r;
};
const [firstMs] = time(poll); // creates every connection; nothing of the batch is kept

// The agent polls on a timer: let the event loop turn between polls (dump
// buffers are recycled by their finalizers, which run there).
const turn = () => new Promise((r) => setTimeout(r, 20));
const polls = [], pollCpus = [], decodes = [], dumps = [];
let seen = 0, kept = 0;
for (let i = 0; i < ITER; i++) {
  await turn();
  const [ms, cpu, r] = timeCpu(poll);
  polls.push(ms);
  pollCpus.push(cpu);
  seen = r.seen;
  kept = r.kept;
  await turn();
  decodes.push(time(() => source.poll(() => undefined))[0]); // dump + decode, no table
}
const after = mem(); // before the extra dumps below, so no batch is alive
const binding = diagBinding();
const ext = extMask([INET_DIAG_INFO, INET_DIAG_CONG, INET_DIAG_SKMEMINFO]);
let dumpBytes = 0;
for (let i = 0; i < ITER; i++) {
  await turn();
  const [ms, bytes] = time(() => binding.diagDump(AF_INET, source.filter.statesMask, ext).length + binding.diagDump(AF_INET6, source.filter.statesMask, ext).length);
  dumps.push(ms);
  dumpBytes = bytes;
}

const self = () => ({ polls: 1, pollErrors: 0, parseErrors: { dump: 0, destroy: 0 }, dumpInterrupted: 0, socketsSeen: seen, destroyFeedUp: true, destroyedSockets: 0, destroyFeedLost: 0, ownerScans: 0 });
const render = async (cap) => {
  const m = new WatchMetrics(table, undefined, self, { maxConnections: cap, info: { version: 'bench', kernel: 'bench', destroyFeed: 'on' } });
  const times = [];
  let bytes = 0;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    bytes = (await m.render()).length;
    times.push(performance.now() - t0);
  }
  return { cap, ms: median(times), bytes, exported: Math.min(cap, table.open.size) };
};
const renders = [await render(200)];
if (table.open.size >= 10_000) renders.push(await render(10_000));

console.log(
  JSON.stringify({
    seen,
    tracked: table.open.size,
    kept,
    firstPollMs: firstMs,
    pollMs: median(polls),
    pollCpuMs: median(pollCpus),
    decodeMs: median(decodes),
    nativeDumpMs: median(dumps),
    dumpBytes,
    renders,
    rssPerConn: (after.rss - base.rss) / table.open.size,
    heapPerConn: (after.heap - base.heap) / table.open.size,
  }),
);
