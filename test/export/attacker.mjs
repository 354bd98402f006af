// A hostile client for test/export/hostile_clients.test.ts, in its own
// process (its sockets must not count against the test runner's): from the
// source address SRC it keeps up to N connections to HOST:PORT open, each
// either sending half a request line and nothing more ("half"), sending a
// valid request one byte per second ("slow"), or sending nothing, never
// starting TLS ("silent"); a closed one is replaced after 1 s, until
// SECONDS have passed. Prints one JSON line at the end: connections opened,
// and how long the agent let the accepted ones live (ms: max, median).
import net from 'node:net';

const [host, port, src, n, kind, seconds] = process.argv.slice(2);
const end = Date.now() + Number(seconds) * 1000;
let opened = 0;
const lifetimes = [];
let open = 0;

function one() {
  if (Date.now() >= end) return;
  open++;
  opened++;
  const t0 = Date.now();
  let got = false;
  let drip;
  const s = net.connect({ host, port: Number(port), localAddress: src });
  s.on('connect', () => {
    got = true;
    if (kind === 'half') s.write('GET /metr');
    if (kind === 'slow') {
      const req = 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n';
      let i = 0;
      drip = setInterval(() => (i < req.length ? s.write(req[i++]) : clearInterval(drip)), 1000);
    }
  });
  s.on('error', () => undefined);
  s.on('close', () => {
    clearInterval(drip);
    open--;
    // Lifetimes of connections the agent accepted and then closed (not refused at once).
    const life = Date.now() - t0;
    if (got && life > 50 && Date.now() < end) lifetimes.push(life);
    setTimeout(one, 1000);
  });
  // Bounded: everything is torn down at the end.
  setTimeout(() => s.destroy(), Math.max(0, end - Date.now()));
}
for (let i = 0; i < Number(n); i++) one();
setTimeout(() => {
  lifetimes.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ opened, accepted: lifetimes.length, maxLifeMs: lifetimes.at(-1) ?? 0, medianLifeMs: lifetimes[Math.floor(lifetimes.length / 2)] ?? 0 }) + '\n');
  process.exit(0);
}, Number(seconds) * 1000 + 300);
