// Runs in the host namespace (see netns.mjs): watch --netns's poll of the
// namespaces named on the command line, as agent/cli/watch.ts does it (a
// NetnsSet opening a sock_diag socket inside each, one table scope each, the
// families its sockstat shows, DiagPoller.pollScoped), and the memory the
// table holds per tracked connection. Prints one JSON line.
// Needs `npm run build` and node --expose-gc.
// Usage: node --expose-gc bench/diag/netns_measure.mjs ITER NSPATH...
import { performance } from 'node:perf_hooks';
import { DiagSource, DEFAULT_STATES } from '../../dist/agent/sources/diag.js';
import { DiagPoller } from '../../dist/agent/sources/diag_poller.js';
import { NetnsSet } from '../../dist/agent/sources/netns.js';
import { ConnectionTable } from '../../dist/agent/model/connections.js';

const ITER = Number(process.argv[2] ?? 7);
const paths = process.argv.slice(3);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mem = () => {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + m.external + m.arrayBuffers };
};

/** The agent's structures for `nsPaths`, and its poll (discovery, then one dump per namespace). */
function watcher(nsPaths) {
  const source = new DiagSource({ ports: [], remoteCidrs: [], states: DEFAULT_STATES });
  const table = new ConnectionTable({ closeGraceMs: 0 });
  const poller = new DiagPoller(source, table);
  const set = new NetnsSet(nsPaths, {
    added: (ns) => ({ scope: table.addScope(ns.label) }),
    removed: (_ns, d) => table.removeScope(d.scope, Date.now()),
    relabel: () => false,
  });
  const refresh = () => set.refresh();
  const poll = () => {
    const targets = [];
    for (const { ns, data } of set.entries()) {
      if (set.ensureDumpSocket(ns) !== true) continue;
      targets.push({
        label: ns.label,
        source,
        fd: ns.dumpFd,
        families: set.tcpFamilies(ns),
        enter: (listening) => table.enterScope(data.scope, listening),
        leave: (complete) => table.leaveScope(complete),
        failed: () => undefined,
      });
    }
    return poller.pollScoped(targets);
  };
  return { table, set, refresh, poll };
}

// The memory baseline comes first: a warm-up poll here would leave the
// process's RSS at the peak of a dump of its namespaces (freed memory is
// not given back), which hides what the table holds when a single
// namespace has every socket. The JIT's code is then in the figures: a few
// MB in all, a few hundred bytes per connection at 20 000.
const base = mem();

const w = watcher(paths);
const t0 = performance.now();
w.refresh(); // opens every namespace: a thread entering each (setns) makes its socket
const openMs = performance.now() - t0;
w.poll(); // the first poll creates every connection

const turn = () => new Promise((r) => setTimeout(r, 20));
const polls = [], cpus = [], refreshes = [];
let seen = 0;
for (let i = 0; i < ITER; i++) {
  await turn();
  let t = performance.now();
  w.refresh();
  refreshes.push(performance.now() - t);
  const c0 = process.cpuUsage();
  t = performance.now();
  seen = w.poll().seen;
  polls.push(performance.now() - t);
  const c = process.cpuUsage(c0);
  cpus.push((c.user + c.system) / 1000);
}
const after = mem();
console.log(
  JSON.stringify({
    namespaces: w.set.size,
    seen,
    tracked: w.table.open.size,
    openMs,
    pollMs: median(polls),
    pollCpuMs: median(cpus),
    refreshMs: median(refreshes),
    rssPerConn: (after.rss - base.rss) / w.table.open.size,
    heapPerConn: (after.heap - base.heap) / w.table.open.size,
  }),
);
w.set.close();
