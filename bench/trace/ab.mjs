// A/B benchmark of `trace` (or, with --agent attach, of `attach`): a server
// on two ports (nginx: one worker listening on both, or for attach one
// instance per port; node: two processes of bench/instrument/server.mjs),
// pinned to CPU 0; the
// agent follows port A only (attach: A's process); curl readers (CPU 1)
// alternate between the ports in short phases, so machine drift hits both
// sides alike. Side B's connections meet the program once (at establishment:
// the port filter returns early), which is what an unwatched connection
// costs. Reported: medians of the per-phase ratios (throughput, server CPU
// per GB), the agent's own CPU per GB and its records per second.
// With --after-kill N, the agent is then SIGKILLed and N more phase pairs run:
// the A/B ratios should be back to 1 (no program left: the server pays
// nothing), and side B's CPU per GB compared with before the kill.
// Usage (root, Linux 6.15+): npm run build &&
//   node bench/trace/ab.mjs [phases=24] [segments=30] [readers=2] [--server nginx|node] [--agent trace|attach] [--after-kill N] [agent flags…]
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const args = process.argv.slice(2);
const positional = [];
while (args.length > 0 && /^\d+$/.test(args[0]) && positional.length < 3) positional.push(Number(args.shift()));
const [phases = 24, segments = 30, readers = 2] = positional;
const option = (name, fallback) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const [, value] = args.splice(i, 2);
  return value;
};
const server = option('--server', 'nginx');
const afterKill = Number(option('--after-kill', '0'));
const agentMode = option('--agent', 'trace');
const traceFlags = args;
if (server !== 'nginx' && server !== 'node') throw new Error('--server: nginx or node');
if (agentMode !== 'trace' && agentMode !== 'attach') throw new Error('--agent: trace or attach');
const SEGMENT = 4 * 1024 * 1024;
const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/agent/cli/main.js');

const dir = mkdtempSync(join(tmpdir(), 'tcpchrono-bench-trace-'));
chmodSync(dir, 0o755);
const children = [];
const groups = [];
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL');
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(1));

const ppidOf = (p) => Number(readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1]);

/** { ports: [A, B], pids: [server process of A, of B] } */
async function startServers() {
  if (server === 'nginx') {
    writeFileSync(join(dir, 'seg.ts'), Buffer.alloc(SEGMENT, 7), { mode: 0o644 });
    const ports = [18470, 18471];
    const pids = [];
    // trace: one worker serving both ports, so both sides are the same
    // process; attach works on a whole process: one instance per port.
    const instances = agentMode === 'trace' ? [ports] : ports.map((p) => [p]);
    for (const listen of instances) {
      const port = listen[0];
      const conf = join(dir, `nginx-${port}.conf`);
      writeFileSync(
        conf,
        `worker_processes 1; worker_cpu_affinity 01; daemon off; pid ${dir}/nginx-${port}.pid; error_log ${dir}/error-${port}.log;
events {}
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path ${dir}/t1; proxy_temp_path ${dir}/t2; fastcgi_temp_path ${dir}/t3; uwsgi_temp_path ${dir}/t4; scgi_temp_path ${dir}/t5;
  server { ${listen.map((p) => `listen 127.0.0.1:${p};`).join(' ')} root ${dir}; } }
`,
      );
      const nginx = spawn('/usr/sbin/nginx', ['-c', conf, '-p', dir], { stdio: 'inherit', detached: true });
      children.push(nginx);
      groups.push(nginx.pid); // its worker outlives a killed master
      await new Promise((r) => setTimeout(r, 500));
      // This instance's worker: its parent is the master we started (other nginx instances may run).
      const worker = readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .find((p) => {
          try {
            return ppidOf(p) === nginx.pid && readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('nginx: worker');
          } catch {
            return false;
          }
        });
      if (worker === undefined) throw new Error('no nginx worker found');
      for (const _ of listen) pids.push(Number(worker));
    }
    return { ports, pids };
  }
  // The uninstrumented Node segment server (64 KiB writes), one process per port.
  const ports = [];
  const pids = [];
  for (let i = 0; i < 2; i++) {
    const p = spawn('taskset', ['-c', '0', process.execPath, join(ROOT, 'bench/instrument/server.mjs'), 'none', String(64 * 1024), String(SEGMENT)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(p);
    const [line] = await once(createInterface({ input: p.stdout }), 'line');
    ports.push(Number(line));
    pids.push(p.pid); // taskset execs node: the same pid
  }
  return { ports, pids };
}

const { ports: [A, B], pids: [pidA, pidB] } = await startServers();
const agentArgs = agentMode === 'trace' ? ['trace', '--port', String(A), '--listen', '127.0.0.1:0'] : ['attach', '--pid', String(pidA), '--port', String(A), '--metrics-listen', '127.0.0.1:0'];
const agent = spawn(process.execPath, [CLI, ...agentArgs, ...traceFlags], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TCP_CHRONOGRAPH_LOG_FORMAT: 'json' } });
children.push(agent);
let url;
// The agent's log lines keep being read (a pipe nobody reads would block it).
const agentLines = createInterface({ input: agent.stdout });
url = await new Promise((resolve, reject) => {
  agent.once('exit', (code) => reject(new Error(`the agent exited (${code}) before it started`)));
  agentLines.on('line', (l) => {
    if (l.includes('"msg":"tracing"') || l.includes('"msg":"attaching"')) {
      const start = JSON.parse(l);
      resolve(start.listen ?? start.metrics);
    }
  });
});
await new Promise((r) => setTimeout(r, 500));

// CPU time in nanoseconds from schedstat (the clock ticks of /proc/PID/stat
// are 10 ms: a few per phase), summed over the process's threads.
const cpu = (pid) => {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // exited meanwhile
    }
  }
  return ns / 1e9;
};
let agentAlive = true;
// Records read, and (trace) records the ring buffer had no room for.
const records = async () => {
  if (!agentAlive) return { read: 0, lost: 0 };
  // trace: one series; attach: one per kind (sched, ack).
  const text = await (await fetch(`${url}/metrics`)).text();
  const sum = (re) => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  return {
    read: sum(/^tcp_chrono_(?:trace|attach)_records_total(?:\{[^}]*\})? (\S+)$/gm),
    lost: sum(/^tcp_chrono_trace_records_lost_total\{reason="ringbuf"\} (\S+)$/gm),
  };
};

async function phase(port) {
  const pid = port === A ? pidA : pidB;
  const n0 = cpu(pid);
  const a0 = agentAlive ? cpu(agent.pid) : 0;
  const t0 = performance.now();
  const procs = Array.from({ length: readers }, () =>
    spawn('taskset', ['-c', '1', 'curl', '-s', '--fail', '-o', '/dev/null', `http://127.0.0.1:${port}/seg.ts?[1-${segments}]`], { stdio: ['ignore', 'ignore', 'inherit'] }),
  );
  const codes = await Promise.all(procs.map((p) => once(p, 'exit').then(([c]) => c)));
  if (codes.some((c) => c !== 0)) throw new Error(`a reader failed: ${codes}`);
  const seconds = (performance.now() - t0) / 1000;
  const gb = (readers * segments * SEGMENT) / 1e9;
  return {
    gbps: (gb * 8) / seconds,
    cpuPerGB: (cpu(pid) - n0) / gb,
    agentPerGB: agentAlive ? (cpu(agent.pid) - a0) / gb : 0,
    agentSeconds: agentAlive ? cpu(agent.pid) - a0 : 0,
    gb,
    seconds,
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function run(n) {
  const out = { gbps: [], cpu: [], agent: [], agentPerGB: 0, recordsPerSecond: 0, lost: 0, plainCpu: [], plain: undefined };
  const r0 = await records();
  let tracedSeconds = 0;
  let agentSeconds = 0;
  let tracedGB = 0;
  for (let i = 0; i < n; i++) {
    const [first, second] = i % 2 === 0 ? [A, B] : [B, A];
    const r1 = await phase(first);
    const r2 = await phase(second);
    const [traced, plain] = first === A ? [r1, r2] : [r2, r1];
    out.gbps.push(traced.gbps / plain.gbps);
    out.cpu.push(traced.cpuPerGB / plain.cpuPerGB);
    out.agent.push(traced.agentPerGB);
    tracedSeconds += traced.seconds;
    agentSeconds += traced.agentSeconds;
    tracedGB += traced.gb;
    out.plainCpu.push(plain.cpuPerGB);
    out.plain = plain;
  }
  // The agent's counters over the traced phases (side B gives it nothing to record).
  const rEnd = await records();
  out.recordsPerSecond = (rEnd.read - r0.read) / tracedSeconds;
  out.lost = rEnd.lost - r0.lost;
  // The agent's CPU over all traced phases (its fixed polling included), per GB traced.
  out.agentPerGB = agentSeconds / tracedGB;
  return out;
}

const what = `${agentMode} on ${server === 'nginx' ? 'nginx (sendfile' : 'the Node segment server (64 KiB writes'}, 4 MiB segments, ${readers} curl readers, ${phases} phase pairs${traceFlags.length > 0 ? `, ${traceFlags.join(' ')}` : ''})`;
const on = await run(phases);
console.log(
  `${what}: throughput ${median(on.gbps).toFixed(2)}x   ${server} CPU per GB ${median(on.cpu).toFixed(2)}x   agent ${on.agentPerGB.toFixed(3)} s/GB   ` +
    `records ${on.recordsPerSecond.toFixed(0)}/s${agentMode === 'trace' ? ` (${on.lost} lost)` : ''}   (untraced: ${on.plain.gbps.toFixed(1)} Gbit/s, ${server} ${on.plain.cpuPerGB.toFixed(3)} s/GB)`,
);
if (afterKill > 0) {
  agent.kill('SIGKILL');
  await once(agent, 'exit');
  agentAlive = false;
  const left = JSON.parse(execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' })).filter((p) => String(p.name).startsWith('tcp_chrono_')).length;
  const off = await run(afterKill);
  console.log(
    `after SIGKILL (${afterKill} phase pairs, tcp_chrono_ programs loaded by anyone: ${left}): A/B throughput ${median(off.gbps).toFixed(2)}x   ${server} CPU per GB ${median(off.cpu).toFixed(2)}x   ` +
      `side B CPU per GB after/before the kill ${(median(off.plainCpu) / median(on.plainCpu)).toFixed(2)}x`,
  );
}
process.exit(0);
