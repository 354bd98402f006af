// Server CPU per response, plain against instrumented, with responses of one
// write each (so per-write work does not hide the per-response cost): the
// A/B server (ab-server.mjs, instrumentHttp) serving SIZE-byte responses to
// two curl readers, alternating sides after 3 warm-up phases each; prints the
// medians and the median of the per-phase differences in µs per response.
// Usage: npm run build && node bench/instrument/per_response.mjs [SIZE=65536] [phases=10] [responses per reader per phase=2000]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { createInterface } from 'node:readline';

const size = Number(process.argv[2] ?? 65536);
const phases = Number(process.argv[3] ?? 10);
const n = Number(process.argv[4] ?? 2000);
const child = spawn('taskset', ['-c', '0', process.execPath, new URL('./ab-server.mjs', import.meta.url).pathname, 'response', String(size), String(size)], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const ports = JSON.parse((await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next()).value);
const get = (port) =>
  new Promise((resolve, reject) =>
    http
      .get({ host: '127.0.0.1', port, path: '/' }, (r) => {
        let b = '';
        r.on('data', (d) => (b += d));
        r.on('end', () => resolve(JSON.parse(b)));
      })
      .on('error', reject),
  );
async function phase(port) {
  const a = await get(ports.control);
  const readers = [0, 1].map(() => spawn('taskset', ['-c', '1', 'curl', '-s', '--fail', `http://127.0.0.1:${port}/r[1-${n}]`], { stdio: ['ignore', 'ignore', 'inherit'] }));
  await Promise.all(readers.map((p) => once(p, 'exit')));
  const b = await get(ports.control);
  return ((b.cpu - a.cpu) / (2 * n)) * 1e6;
}
for (let i = 0; i < 3; i++) {
  await phase(ports.plain);
  await phase(ports.instrumented);
}
const d = [];
for (let i = 0; i < phases; i++) {
  const plain = await phase(ports.plain);
  const instrumented = await phase(ports.instrumented);
  d.push([plain, instrumented]);
}
child.kill('SIGTERM');
await once(child, 'exit');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `${size}-byte responses: plain ${median(d.map((x) => x[0])).toFixed(1)} µs of server CPU each, instrumented ${median(d.map((x) => x[1])).toFixed(1)}; ` +
    `difference (median of phases) ${median(d.map((x) => x[1] - x[0])).toFixed(1)} µs`,
);
