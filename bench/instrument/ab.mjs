// A/B benchmark in one server process: the same segment server listens twice,
// once plain and once instrumented, and curl readers alternate between the
// two in phases. Machine load drifts (a 2-vCPU box shared with other work),
// but it drifts for both sides alike, so the per-phase ratios are steadier
// than comparing separate runs. The server reports its own CPU time (user +
// system, all threads: that includes the kernel's send path in its syscalls
// and V8's compiler and GC threads).
//
// Both sides are warmed up first (`warm` phases each, not counted): V8
// compiles a function that runs once per response only after several hundred
// responses, and with --trace-opt the instrumented side's compiles settle to
// the plain side's level after about 1 200 responses a side. That is a
// one-off cost per process, not a cost per byte (jit.mjs measures it): the
// phases measure the steady state. Each line gives the median of the
// per-phase ratios and, for the CPU, their interquartile range (the noise).
// Usage: npm run build && node bench/instrument/ab.mjs [phases=192] [segments per phase=30] [readers=2] [warm phases=1 200 responses a side] [variants=all, e.g. control,response,write]
import { curlReaders, serverStats, startAbServer, stopAbServer } from './ab-client.mjs';

const arg = (i, fallback) => (process.argv[i] ? Number(process.argv[i]) : fallback);
// 192: one phase's ratio is noisy (the A/A control's per-phase CPU ratios
// span 0.8-1.4 on this shared 2-core box, each phase on new connections), so
// the median's spread between runs shrinks with the number of phases: the
// control read 1.02-1.07x at 24, 0.98-1.03x at 48, 0.99-1.01x at 192.
const phases = arg(2, 192);
const segments = arg(3, 30);
const readers = arg(4, 2);
// Default: 1 200 responses a side (see above), whatever the phase size.
const warm = arg(5, Math.ceil(1200 / (readers * segments)));
const only = process.argv[6]?.split(',');
const SEGMENT = 4 * 1024 * 1024;

const CASES = [
  // A/A: both listeners plain. Its spread around 1.00x is what the machine's
  // noise alone does to the ratios in this run.
  { label: 'control: both sides plain (A/A)', variant: 'control', size: 65536 },
  { label: 'one chunk per response (instrumentHttp)', variant: 'response', size: 65536 },
  { label: 'one chunk per response, sample 1/16', variant: 'response16', size: 65536 },
  { label: 'one chunk per write (instrument)', variant: 'write', size: 65536 },
  { label: 'one chunk per write, sample 1/16', variant: 'write16', size: 65536 },
  { label: 'one chunk per write (instrument)', variant: 'write', size: 1 << 20 },
];

async function phase(port, control) {
  const before = await serverStats(control);
  const t0 = performance.now();
  await curlReaders(readers, `http://127.0.0.1:${port}/seg[1-${segments}]`);
  const seconds = (performance.now() - t0) / 1000;
  const after = await serverStats(control);
  const gb = (readers * segments * SEGMENT) / 1e9;
  return { gbps: (gb * 8) / seconds, cpuPerGB: (after.cpu - before.cpu) / gb, records: after.records - before.records, seconds };
}

const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * q + 0.5)];
const median = (xs) => quantile(xs, 0.5);
console.log(
  `A/B in one server process: ${warm} warm-up and ${phases} alternating phases of ${readers} curl readers x ${segments} segments of 4 MiB; ` +
    'median of per-phase ratios (CPU: interquartile range in brackets)',
);
for (const c of CASES) {
  if (only !== undefined && !only.includes(c.variant)) continue;
  const { child, ports } = await startAbServer(c.variant, c.size, SEGMENT);
  for (let i = 0; i < warm; i++) {
    await phase(ports.plain, ports.control);
    await phase(ports.instrumented, ports.control);
  }
  const ratios = { gbps: [], cpu: [] };
  let records = 0;
  let seconds = 0;
  let base;
  for (let i = 0; i < phases; i++) {
    // Alternate the order so neither side always runs first.
    const [a, b] = i % 2 === 0 ? [await phase(ports.plain, ports.control), await phase(ports.instrumented, ports.control)] : [null, await phase(ports.instrumented, ports.control)];
    const plain = a ?? (await phase(ports.plain, ports.control));
    ratios.gbps.push(b.gbps / plain.gbps);
    ratios.cpu.push(b.cpuPerGB / plain.cpuPerGB);
    records += b.records;
    seconds += b.seconds;
    base = plain;
  }
  await stopAbServer(child);
  const writes = c.size >= 1 << 20 ? '1 MiB writes' : '64 KiB writes';
  console.log(
    `${`${writes}, ${c.label}`.padEnd(58)} throughput ${median(ratios.gbps).toFixed(2)}x   server CPU per GB ${median(ratios.cpu).toFixed(2)}x ` +
      `[${quantile(ratios.cpu, 0.25).toFixed(2)}-${quantile(ratios.cpu, 0.75).toFixed(2)}]   ` +
      `${Math.round(records / seconds)} records/s   (plain: ${base.gbps.toFixed(1)} Gbit/s, ${base.cpuPerGB.toFixed(2)} s/GB)`,
  );
}
