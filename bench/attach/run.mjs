// Benchmark: what `tcp-chronograph attach` costs the server it attaches to,
// and that the server is back to its old self after the agent leaves.
// Servers: the reference Node segment server (bench/instrument/server.mjs,
// uninstrumented, 64 KiB writes) and, when installed, nginx (Debian) serving a
// 4 MiB file from a temporary config on loopback (one worker; the agent
// attaches to the worker). curl readers fetch 4 MiB segments over keep-alive
// connections. The server is pinned to CPU 0; readers and agent to CPU 1.
// Per server and round, on ONE server process:
//   before:  load, no agent
//   attached (sched+ack), attached (--records ack): load with the agent attached
//   idle:    the server's CPU over 1 s with no load, right after the agent detached (SIGTERM)
//   after:   load again, no agent
// Printed: throughput and server CPU seconds per GB (ratios to `before`), the
// agent's own CPU, records/s, and the detach time. Median of the rounds.
// Caveat (2 CPUs): the agent shares CPU 1 with the readers, which are what
// bounds loopback throughput here, so the throughput ratio also counts the
// agent's own CPU; the server's CPU per GB is the cost to the target itself.
// Usage: npm run build && node bench/attach/run.mjs [segments per reader=100] [readers=2] [rounds=3]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const segments = Number(process.argv[2] ?? 100);
const readers = Number(process.argv[3] ?? 2);
const rounds = Number(process.argv[4] ?? 3);
const SEGMENT = 4 * 1024 * 1024;
const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/agent/cli/main.js');
const NODE_SERVER = join(ROOT, 'bench/instrument/server.mjs');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function load(port, path) {
  const procs = Array.from({ length: readers }, () =>
    spawn('taskset', ['-c', '1', 'curl', '-s', '--fail', `http://127.0.0.1:${port}${path}[1-${segments}]`], { stdio: ['ignore', 'ignore', 'inherit'] }),
  );
  const codes = await Promise.all(procs.map((p) => once(p, 'exit').then(([c]) => c)));
  if (codes.some((c) => c !== 0)) throw new Error(`a reader failed: exit codes ${codes}`);
  return readers * segments * SEGMENT;
}

async function measure(server, agentPid) {
  const c0 = cpuSeconds(server.pid);
  const a0 = agentPid === undefined ? 0 : cpuSeconds(agentPid);
  const t0 = performance.now();
  const bytes = await load(server.port, server.path);
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(server.pid) - c0;
  const agentCpu = agentPid === undefined ? 0 : cpuSeconds(agentPid) - a0;
  return { gbps: (bytes * 8) / elapsed / 1e9, cpuPerGB: cpu / (bytes / 1e9), agentCpuPerGB: agentCpu / (bytes / 1e9), elapsed };
}

async function startAgent(pid, extra) {
  const child = spawn('taskset', ['-c', '1', process.execPath, CLI, 'attach', '--pid', String(pid), '--metrics-listen', '127.0.0.1:0', '--interval', '100ms', ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = [];
  const rl = createInterface({ input: child.stdout });
  rl.on('line', (l) => lines.push(l));
  for (let i = 0; i < 200 && !lines.some((l) => l.includes('"attaching"')); i++) await sleep(25);
  if (!lines.some((l) => l.includes('"attaching"'))) throw new Error(`agent did not start: ${lines.join('\n')}`);
  // taskset execs node: the pid is the agent's.
  return { child, lines };
}

async function stopAgent(a) {
  const exited = once(a.child, 'exit');
  a.child.kill('SIGTERM');
  await exited;
  const line = a.lines.find((l) => l.includes('"detached"'));
  return line === undefined ? {} : JSON.parse(line);
}

async function withAgent(server, extra) {
  const a = await startAgent(server.pid, extra);
  const m = await measure(server, a.child.pid);
  const metrics = a.lines.find((l) => l.includes('"attaching"'));
  const d = await stopAgent(a);
  const records = (d.records?.sched ?? 0) + (d.records?.ack ?? 0);
  return { ...m, recordsPerSec: records / m.elapsed, lost: d.lostRecords ?? 0, detachSeconds: d.detachSeconds ?? NaN, leftOn: d.leftOn, timedOut: d.timedOut, attached: metrics !== undefined };
}

async function nodeServer() {
  const child = spawn('taskset', ['-c', '0', process.execPath, NODE_SERVER, 'none', '65536', String(SEGMENT)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const it = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const port = Number((await it.next()).value);
  return { name: 'node', pid: child.pid, port, path: '/seg', stop: async () => { child.kill('SIGKILL'); await once(child, 'exit'); } };
}

async function nginxServer() {
  const dir = mkdtempSync(join(tmpdir(), 'attach-bench-nginx-'));
  writeFileSync(join(dir, 'seg'), Buffer.alloc(SEGMENT, 0x5a));
  const port = 20000 + Math.floor(Math.random() * 20000);
  writeFileSync(
    join(dir, 'nginx.conf'),
    `daemon off; master_process on; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${port}; root ${dir}; location / { try_files /seg =404; } } }
`,
  );
  const master = spawn('taskset', ['-c', '0', 'nginx', '-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: ['ignore', 'inherit', 'inherit'] });
  let worker;
  for (let i = 0; i < 100 && worker === undefined; i++) {
    await sleep(50);
    const r = spawnSync('pgrep', ['-P', String(master.pid)], { encoding: 'utf8' });
    const pids = r.stdout.trim().split('\n').filter(Boolean);
    if (pids.length > 0) worker = Number(pids[0]);
  }
  if (worker === undefined) throw new Error('nginx worker did not start');
  return {
    name: 'nginx',
    pid: worker,
    port,
    path: '/seg',
    stop: async () => {
      master.kill('SIGTERM');
      await once(master, 'exit');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const median = (xs) => [...xs].filter((x) => !Number.isNaN(x)).sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const hasNginx = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).status === 0;
const servers = [nodeServer, ...(hasNginx ? [nginxServer] : [])];
if (!hasNginx) console.log('nginx not installed (apt-get install -y nginx): Node server only');
execFileSync('test', ['-f', CLI]);

console.log(`tcp-chronograph attach cost: ${readers} curl readers x ${segments} segments of 4 MiB per phase, median of ${rounds} rounds`);
for (const make of servers) {
  const runs = { before: [], attached: [], ack: [], idle: [], after: [] };
  let name;
  for (let r = 0; r < rounds; r++) {
    const server = await make();
    name = server.name;
    try {
      await load(server.port, server.path); // warm-up
      runs.before.push(await measure(server));
      runs.attached.push(await withAgent(server, []));
      runs.ack.push(await withAgent(server, ['--records', 'ack']));
      const c0 = cpuSeconds(server.pid);
      await sleep(1000);
      runs.idle.push({ cpuPerSec: cpuSeconds(server.pid) - c0 });
      runs.after.push(await measure(server));
    } finally {
      await server.stop();
    }
  }
  // Ratios are taken within each round (same server process, minutes apart at
  // most), then the median over rounds: drift between rounds cancels out.
  const ratio = (xs, k) => median(xs.map((x, i) => x[k] / runs.before[i][k]));
  const row = (label, xs, extra = '') => {
    const gbps = median(xs.map((x) => x.gbps));
    const cpu = median(xs.map((x) => x.cpuPerGB));
    console.log(
      `${name.padEnd(6)} ${label.padEnd(28)} ${gbps.toFixed(2).padStart(6)} Gbit/s (${ratio(xs, 'gbps').toFixed(2)}x)   server CPU ${cpu.toFixed(3)} s/GB (${ratio(xs, 'cpuPerGB').toFixed(2)}x)${extra}`,
    );
  };
  row('before (no agent)', runs.before);
  for (const [label, xs] of [['attached, sched+ack', runs.attached], ['attached, --records ack', runs.ack]]) {
    row(
      label,
      xs,
      `   agent CPU ${median(xs.map((x) => x.agentCpuPerGB)).toFixed(3)} s/GB   ${Math.round(median(xs.map((x) => x.recordsPerSec)))} records/s   lost ${median(xs.map((x) => x.lost))}   detach ${median(xs.map((x) => x.detachSeconds)).toFixed(2)} s (leftOn ${Math.max(...xs.map((x) => x.leftOn ?? 0))}, timedOut ${Math.max(...xs.map((x) => x.timedOut ?? 0))})`,
    );
  }
  console.log(`${name.padEnd(6)} ${'idle right after detach'.padEnd(28)} server CPU ${median(runs.idle.map((x) => x.cpuPerSec)).toFixed(3)} s/s`);
  row('after detach (no agent)', runs.after);
}
