// A/B benchmark of `trace` on Debian's nginx (sendfile, keep-alive, one worker
// pinned to CPU 0): nginx listens on two ports, the agent follows one
// (--port A); curl readers (CPU 1) alternate between the ports in short
// phases, so machine drift hits both sides alike. Side B's connections meet
// the program once (at establishment: the port filter returns early), which
// is what an unwatched connection costs. Reported: medians of the per-phase
// ratios (throughput, nginx CPU per GB), and the agent's own CPU per GB.
// Usage (root, Linux 6.15+): npm run build && node bench/trace/ab.mjs [phases=24] [segments=30] [readers=2] [trace flags…]
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const phases = Number(process.argv[2] ?? 24);
const segments = Number(process.argv[3] ?? 30);
const readers = Number(process.argv[4] ?? 2);
const traceFlags = process.argv.slice(5);
const SEGMENT = 4 * 1024 * 1024;
const CLI = new URL('../../dist/agent/cli/main.js', import.meta.url).pathname;
const TICK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));

const dir = mkdtempSync(join(tmpdir(), 'tcpchrono-bench-trace-'));
chmodSync(dir, 0o755);
writeFileSync(join(dir, 'seg.ts'), Buffer.alloc(SEGMENT, 7), { mode: 0o644 });
const [A, B] = [18470, 18471];
writeFileSync(
  join(dir, 'nginx.conf'),
  `worker_processes 1; worker_cpu_affinity 01; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events {}
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path ${dir}/t1; proxy_temp_path ${dir}/t2; fastcgi_temp_path ${dir}/t3; uwsgi_temp_path ${dir}/t4; scgi_temp_path ${dir}/t5;
  server { listen 127.0.0.1:${A}; listen 127.0.0.1:${B}; root ${dir}; } }
`,
);
const nginx = spawn('/usr/sbin/nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'inherit' });
const agent = spawn(process.execPath, [CLI, 'trace', '--port', String(A), '--listen', '127.0.0.1:0', '--log-format', 'json', ...traceFlags], { stdio: ['ignore', 'pipe', 'inherit'] });
const cleanup = () => {
  agent.kill('SIGTERM');
  nginx.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for await (const l of createInterface({ input: agent.stdout })) if (l.includes('"msg":"tracing"')) break;
await new Promise((r) => setTimeout(r, 500));
// Our nginx's worker: its parent is the master we started (other nginx
// instances may run on the machine).
const worker = readdirSync('/proc')
  .filter((p) => /^\d+$/.test(p))
  .find((p) => {
    try {
      const ppid = Number(readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
      return ppid === nginx.pid && readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('nginx: worker');
    } catch {
      return false;
    }
  });
if (worker === undefined) throw new Error('no nginx worker found');
const cpu = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
};

async function phase(port) {
  const n0 = cpu(worker);
  const a0 = cpu(agent.pid);
  const t0 = performance.now();
  const procs = Array.from({ length: readers }, () =>
    spawn('taskset', ['-c', '1', 'curl', '-s', '--fail', '-o', '/dev/null', `http://127.0.0.1:${port}/seg.ts?[1-${segments}]`], { stdio: ['ignore', 'ignore', 'inherit'] }),
  );
  const codes = await Promise.all(procs.map((p) => once(p, 'exit').then(([c]) => c)));
  if (codes.some((c) => c !== 0)) throw new Error(`a reader failed: ${codes}`);
  const seconds = (performance.now() - t0) / 1000;
  const gb = (readers * segments * SEGMENT) / 1e9;
  return { gbps: (gb * 8) / seconds, cpuPerGB: (cpu(worker) - n0) / gb, agentPerGB: (cpu(agent.pid) - a0) / gb };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ratios = { gbps: [], cpu: [] };
const agentCpu = [];
let base;
for (let i = 0; i < phases; i++) {
  const [first, second] = i % 2 === 0 ? [A, B] : [B, A];
  const r1 = await phase(first);
  const r2 = await phase(second);
  const [traced, plain] = first === A ? [r1, r2] : [r2, r1];
  ratios.gbps.push(traced.gbps / plain.gbps);
  ratios.cpu.push(traced.cpuPerGB / plain.cpuPerGB);
  agentCpu.push(traced.agentPerGB);
  base = plain;
}
console.log(
  `trace on nginx (sendfile, 4 MiB segments, ${readers} curl readers, ${phases} phase pairs${traceFlags.length > 0 ? `, ${traceFlags.join(' ')}` : ''}): ` +
    `throughput ${median(ratios.gbps).toFixed(2)}x   nginx CPU per GB ${median(ratios.cpu).toFixed(2)}x   agent ${median(agentCpu).toFixed(3)} s/GB   ` +
    `(untraced: ${base.gbps.toFixed(1)} Gbit/s, nginx ${base.cpuPerGB.toFixed(3)} s/GB)`,
);
process.exit(0);
