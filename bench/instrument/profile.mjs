// CPU profile of the A/B server under load: where an instrumented server's
// time goes. Starts ab-server.mjs under `node --cpu-prof`, drives one of its
// listeners (plain or instrumented) with curl readers, and prints the
// functions with the most self time, and the time per source file.
// Usage: npm run build && node bench/instrument/profile.mjs [VARIANT=response] [SIDE=instrumented] [segments per reader=300] [readers=2] [WRITE=65536]
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curlReaders, startAbServer, stopAbServer } from './ab-client.mjs';

const variant = process.argv[2] ?? 'response';
const side = process.argv[3] ?? 'instrumented';
const segments = Number(process.argv[4] ?? 300);
const readers = Number(process.argv[5] ?? 2);
const size = Number(process.argv[6] ?? 65536);
const SEGMENT = 4 * 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'chrono-prof-'));

const { child, ports } = await startAbServer(variant, size, SEGMENT, { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${dir}`] });
const t0 = performance.now();
await curlReaders(readers, `http://127.0.0.1:${ports[side]}/seg[1-${segments}]`);
const seconds = (performance.now() - t0) / 1000;
await stopAbServer(child);

const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
const prof = JSON.parse(readFileSync(join(dir, file), 'utf8'));
// Self time per node from the sample counts (timeDeltas are the intervals).
const self = new Map();
const dt = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dt[i + 1] ?? dt[i]));
const byFn = new Map();
const byFile = new Map();
let total = 0;
for (const n of prof.nodes) {
  const us = self.get(n.id) ?? 0;
  total += us;
  const f = n.callFrame;
  const where = f.url === '' ? '(native or VM)' : f.url.replace(/^.*\/(dist|node:internal)\//, '$1/').replace(/^file:\/\/.*\/bench\//, 'bench/');
  const key = `${f.functionName || '(anonymous)'}  ${where}:${f.lineNumber + 1}`;
  byFn.set(key, (byFn.get(key) ?? 0) + us);
  byFile.set(where, (byFile.get(where) ?? 0) + us);
}
const gb = (readers * segments * SEGMENT) / 1e9;
console.log(`${variant}, ${side} listener: ${gb.toFixed(2)} GB in ${seconds.toFixed(1)} s; profiled JS-thread time ${(total / 1e6).toFixed(2)} s (${(total / 1e6 / gb).toFixed(3)} s/GB); profile in ${dir}`);
const top = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);
console.log('self time by function:');
for (const [k, us] of top(byFn, 25)) console.log(`  ${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}`);
console.log('self time by file:');
for (const [k, us] of top(byFile, 15)) console.log(`  ${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}`);
