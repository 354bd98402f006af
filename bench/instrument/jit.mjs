// The one-off cost ab.mjs leaves out with its warm-up: how much compiling V8
// does for a fresh server process. One side of ab-server.mjs is loaded (the
// other stays idle) in a new process run with --trace-opt; the compiles are
// counted and their optimisation time (the middle figure V8 prints, spent on
// its compiler threads) summed, with the process's CPU over the same
// responses. Sides alternate over the runs. (stdbuf: V8 prints with C stdio,
// which would hold the lines back in a pipe.)
// Usage: npm run build && node bench/instrument/jit.mjs [responses per reader=900] [runs=2] [variant=response]
import { curlReaders, serverStats, startAbServer, stopAbServer } from './ab-client.mjs';

const arg = (i, fallback) => (process.argv[i] ? process.argv[i] : fallback);
const responses = Number(arg(2, 900));
const runs = Number(arg(3, 2));
const variant = arg(4, 'response');
const READERS = 2;

async function run(side) {
  let compiles = 0;
  let optimiseMs = 0;
  const { child, ports } = await startAbServer(variant, 65536, 4 << 20, {
    prefix: ['stdbuf', '-o0'],
    nodeFlags: ['--trace-opt'],
    onLine: (line) => {
      // [completed compiling 0x… <JSFunction f …> (target TURBOFAN) - took 0.010, 3.429, 0.045 ms]
      const m = /^\[completed compiling .* took [\d.]+, ([\d.]+), [\d.]+ ms\]/.exec(line);
      if (m !== null) {
        compiles++;
        optimiseMs += Number(m[1]);
      }
    },
  });
  try {
    const before = (await serverStats(ports.control)).cpu;
    await curlReaders(READERS, `http://127.0.0.1:${ports[side]}/seg[1-${responses}]`);
    const cpu = (await serverStats(ports.control)).cpu - before;
    return { compiles, optimiseMs, cpu };
  } finally {
    await stopAbServer(child);
  }
}

console.log(`a fresh ab-server.mjs (${variant}), one side loaded: ${READERS} curl readers x ${responses} responses of 4 MiB`);
for (let i = 0; i < runs; i++) {
  for (const side of i % 2 === 0 ? ['plain', 'instrumented'] : ['instrumented', 'plain']) {
    const r = await run(side);
    console.log(`${side.padEnd(13)} ${String(r.compiles).padStart(4)} compiles, ${Math.round(r.optimiseMs)} ms optimising, process CPU ${r.cpu.toFixed(2)} s`);
  }
}
