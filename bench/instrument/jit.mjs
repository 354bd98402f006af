// The one-off cost ab.mjs leaves out with its warm-up: how much compiling V8
// does for a fresh server process. One side of ab-server.mjs is loaded (the
// other stays idle) in a new process run with --trace-opt; the compiles are
// counted and their optimisation time (the middle figure V8 prints, spent on
// its compiler threads) summed, with the process's CPU over the same
// responses. Sides alternate over the runs. (stdbuf: V8 prints with C stdio,
// which would hold the lines back in a pipe.)
// Usage: npm run build && node bench/instrument/jit.mjs [responses per reader=900] [runs=2] [variant=response]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { createInterface } from 'node:readline';

const arg = (i, fallback) => (process.argv[i] ? process.argv[i] : fallback);
const responses = Number(arg(2, 900));
const runs = Number(arg(3, 2));
const variant = arg(4, 'response');
const READERS = 2;

const getCpu = (port) =>
  new Promise((resolve, reject) =>
    http.get({ host: '127.0.0.1', port }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(JSON.parse(body).cpu));
    }).on('error', reject),
  );

async function run(side) {
  const server = spawn('taskset', ['-c', '0', 'stdbuf', '-o0', process.execPath, '--trace-opt', new URL('./ab-server.mjs', import.meta.url).pathname, variant, '65536', String(4 << 20)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let ports;
  let compiles = 0;
  let optimiseMs = 0;
  const gotPorts = new Promise((resolve) => {
    createInterface({ input: server.stdout }).on('line', (line) => {
      if (line.startsWith('{')) return resolve((ports = JSON.parse(line)));
      // [completed compiling 0x… <JSFunction f …> (target TURBOFAN) - took 0.010, 3.429, 0.045 ms]
      const m = /^\[completed compiling .* took [\d.]+, ([\d.]+), [\d.]+ ms\]/.exec(line);
      if (m !== null) {
        compiles++;
        optimiseMs += Number(m[1]);
      }
    });
  });
  try {
    await gotPorts;
    const before = await getCpu(ports.control);
    const readers = Array.from({ length: READERS }, () =>
      spawn('taskset', ['-c', '1', 'curl', '-s', '--fail', '-o', '/dev/null', `http://127.0.0.1:${ports[side]}/seg[1-${responses}]`], { stdio: 'ignore' }),
    );
    const codes = await Promise.all(readers.map((p) => once(p, 'exit').then(([c]) => c)));
    if (codes.some((c) => c !== 0)) throw new Error(`a reader failed: ${codes}`);
    const cpu = (await getCpu(ports.control)) - before;
    return { compiles, optimiseMs, cpu };
  } finally {
    server.kill('SIGTERM');
    await once(server, 'exit');
  }
}

console.log(`a fresh ab-server.mjs (${variant}), one side loaded: ${READERS} curl readers x ${responses} responses of 4 MiB`);
for (let i = 0; i < runs; i++) {
  for (const side of i % 2 === 0 ? ['plain', 'instrumented'] : ['instrumented', 'plain']) {
    const r = await run(side);
    console.log(`${side.padEnd(13)} ${String(r.compiles).padStart(4)} compiles, ${Math.round(r.optimiseMs)} ms optimising, process CPU ${r.cpu.toFixed(2)} s`);
  }
}
