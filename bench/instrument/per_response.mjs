// Server CPU per response, plain against instrumented, with responses of one
// write each (so per-write work does not hide the per-response cost): the
// A/B server (ab-server.mjs, instrumentHttp) serving SIZE-byte responses to
// two curl readers, alternating sides after 3 warm-up phases each; prints the
// medians and the median of the per-phase differences in µs per response.
// Usage: npm run build && node bench/instrument/per_response.mjs [SIZE=65536] [phases=10] [responses per reader per phase=2000]
import { curlReaders, serverStats, startAbServer, stopAbServer } from './ab-client.mjs';

const size = Number(process.argv[2] ?? 65536);
const phases = Number(process.argv[3] ?? 10);
const n = Number(process.argv[4] ?? 2000);
const { child, ports } = await startAbServer('response', size, size);
async function phase(port) {
  const a = await serverStats(ports.control);
  await curlReaders(2, `http://127.0.0.1:${port}/r[1-${n}]`);
  const b = await serverStats(ports.control);
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
await stopAbServer(child);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `${size}-byte responses: plain ${median(d.map((x) => x[0])).toFixed(1)} µs of server CPU each, instrumented ${median(d.map((x) => x[1])).toFixed(1)}; ` +
    `difference (median of phases) ${median(d.map((x) => x[1] - x[0])).toFixed(1)} µs`,
);
