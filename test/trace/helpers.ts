// Plumbing for the trace tests: real servers that know nothing of the agent
// (Debian's nginx with sendfile, python3's http.server), a keep-alive client
// (client.py), and the agent itself. Everything started here is stopped by
// stopAll(), also when a test fails.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lines } from '../attach/helpers.js';
import { CLI } from '../helpers/cli.js';
export { freePort } from '../helpers/loopback.js';

export const CLIENT = fileURLToPath(new URL('./client.py', import.meta.url));
export const HELD_CLIENT = fileURLToPath(new URL('./held_client.py', import.meta.url));
const children = new Set<ChildProcess>();
const dirs = new Set<string>();
/** Process groups to kill (nginx: its workers outlive a killed master). */
const groups = new Set<number>();
/** cgroup-v2 directories made by tempCgroup(). */
const cgroups = new Set<string>();

/** Killed by stopAll; with `group`, its whole process group too (spawn it detached: nginx's workers outlive a killed master). */
export function track(c: ChildProcess, group = false): ChildProcess {
  children.add(c);
  if (group && c.pid !== undefined) groups.add(c.pid);
  c.once('exit', () => children.delete(c));
  return c;
}

/** Kills every child still running and removes the temporary directories. */
export async function stopAll(): Promise<void> {
  const exits = [...children].map((c) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()))));
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  groups.clear();
  for (const c of children) c.kill('SIGKILL');
  await Promise.all(exits);
  for (const cg of cgroups) {
    // Whatever is left in it (a worker whose master died) goes too; then the directory.
    try {
      writeFileSync(join(cg, 'cgroup.kill'), '1');
    } catch {
      // gone already
    }
    const end = Date.now() + 5000;
    for (;;) {
      try {
        rmdirSync(cg);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || Date.now() > end) break;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
  cgroups.clear();
  for (const n of namespaces) spawnSync('ip', ['netns', 'del', n]);
  namespaces.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

/** A new cgroup-v2 directory under `mount` (removed by stopAll, with anything left in it). */
export function tempCgroup(mount: string): string {
  let dir: string;
  do dir = join(mount, `tcpchrono-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  while (existsSync(dir));
  mkdirSync(dir);
  cgroups.add(dir);
  return dir;
}

/** A directory of files for the servers (readable by nginx's workers). */
export function docroot(files: Record<string, number>): string {
  const dir = mkdtempSync(join(tmpdir(), 'tcpchrono-trace-'));
  dirs.add(dir);
  chmodSync(dir, 0o755);
  for (const [name, size] of Object.entries(files)) {
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4096) data[i] = i & 0xff;
    writeFileSync(join(dir, name), data, { mode: 0o644 });
  }
  return dir;
}

export const NGINX = '/usr/sbin/nginx';
export const nginxAvailable = (): boolean => spawnSync(NGINX, ['-v']).status === 0;

/** Debian's nginx: one worker, sendfile, keep-alive, serving `dir` on 127.0.0.1:port; started in `cgroup` when given. */
export async function startNginx(dir: string, port: number, cgroup?: string): Promise<ChildProcess> {
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1; daemon off; master_process on; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events {}
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000; keepalive_timeout 60s;
  client_body_temp_path ${dir}/t1; proxy_temp_path ${dir}/t2; fastcgi_temp_path ${dir}/t3; uwsgi_temp_path ${dir}/t4; scgi_temp_path ${dir}/t5;
  types { application/octet-stream ts; }
  server { listen 127.0.0.1:${port}; root ${dir}; }
}
`,
  );
  // Its own process group, so that stopAll kills the worker too.
  const child = track(
    cgroup === undefined
      ? spawn(NGINX, ['-c', conf, '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
      : spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && exec "$2" -c "$3" -p "$4"', 'sh', cgroup, NGINX, conf, dir], { stdio: ['ignore', 'ignore', 'pipe'], detached: true }),
    true,
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitListening(port, () => (child.exitCode !== null ? `nginx exited: ${err}` : undefined));
  return child;
}

/** python3's http.server with HTTP/1.1 keep-alive. */
export async function startPython(dir: string, port: number, netns?: string): Promise<ChildProcess> {
  const code = `import http.server as h, functools
h.SimpleHTTPRequestHandler.protocol_version = 'HTTP/1.1'
h.ThreadingHTTPServer(('127.0.0.1', ${port}), functools.partial(h.SimpleHTTPRequestHandler, directory=${JSON.stringify(dir)})).serve_forever()`;
  const child = track(spawn(...inNetns(netns, 'python3', ['-c', code]), { stdio: ['ignore', 'ignore', 'ignore'] }));
  // In another namespace, its client waits for it instead (held_client.py retries).
  if (netns === undefined) await waitListening(port, () => (child.exitCode !== null ? 'python3 exited' : undefined));
  return child;
}

/** argv for `cmd args` run in network namespace `netns` (ip netns exec), or as it is. */
function inNetns(netns: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return netns === undefined ? [cmd, args] : ['ip', ['netns', 'exec', netns, cmd, ...args]];
}

const namespaces = new Set<string>();

/** A new network namespace with its loopback up (deleted by stopAll). */
export function tempNetns(): string {
  const name = `tcpchrono-trace-${process.pid}-${namespaces.size}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.status !== 0) throw new Error(`ip netns add ${name} failed: ${add.stderr}`);
  namespaces.add(name);
  const up = spawnSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { encoding: 'utf8' });
  if (up.status !== 0) throw new Error(`ip -n ${name} link set lo up failed: ${up.stderr}`);
  return name;
}

async function waitListening(port: number, dead: () => string | undefined): Promise<void> {
  const end = Date.now() + 10_000;
  for (;;) {
    const why = dead();
    if (why !== undefined) throw new Error(why);
    const ok = await new Promise<boolean>((r) => {
      const s = require_net().connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on ${port} after 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
import * as netModule from 'node:net';
const require_net = () => netModule;

export interface ClientRun {
  local: number;
  responses: { response: number; bytes: number; head: number }[];
  done: Promise<number | null>;
  child: ChildProcess;
}

/** client.py against 127.0.0.1:port; resolves once connected. */
export async function runClient(port: number, path: string, n: number, o: { rcvbuf?: number; pace?: number; stall?: boolean } = {}): Promise<ClientRun> {
  const child = track(spawn('python3', [CLIENT, '127.0.0.1', String(port), path, String(n), String(o.rcvbuf ?? 0), String(o.pace ?? 0), o.stall === true ? 'stall' : ''], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const lines = new Lines(child);
  const done = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const local = (JSON.parse(await lines.next(/"local"/)) as { local: number }).local;
  const responses: ClientRun['responses'] = [];
  lines.all.length; // lines arrive as they come
  const collect = setInterval(() => {
    for (const l of lines.all.slice(1 + responses.length)) responses.push(JSON.parse(l) as ClientRun['responses'][number]);
  }, 20);
  void done.then(() => {
    clearInterval(collect);
    for (const l of lines.all.slice(1 + responses.length)) responses.push(JSON.parse(l) as ClientRun['responses'][number]);
  });
  return { local, responses, done, child };
}

export interface HeldClient {
  local: number;
  /** Sends GET path on the connection; resolves with the response's sizes once it is all read. */
  get(path: string): Promise<{ head: number; bytes: number }>;
  /** Closes the connection; resolves with the client's exit code. */
  close(): Promise<number | null>;
}

/** held_client.py: one keep-alive connection to 127.0.0.1:port (in `netns` if given), used step by step; resolves once connected. */
export async function heldClient(port: number, netns?: string): Promise<HeldClient> {
  const child = track(spawn(...inNetns(netns, 'python3', [HELD_CLIENT, String(port)]), { stdio: ['pipe', 'pipe', 'inherit'] }));
  const lines = new Lines(child);
  const done = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const local = (JSON.parse(await lines.next(/"local"/)) as { local: number }).local;
  let n = 0;
  return {
    local,
    get: async (path) => {
      const i = n++;
      child.stdin!.write(`GET ${path}\n`);
      return JSON.parse(await lines.next(new RegExp(`"response": ${i},`), 15_000)) as { head: number; bytes: number };
    },
    close: () => {
      child.stdin!.end('close\n');
      return done;
    },
  };
}

export interface TraceAgent {
  child: ChildProcess;
  lines: Lines;
  url: string;
  started: Record<string, unknown>;
}

/** The trace agent; killed if its start line does not come. */
/** Starts `trace` (under `prefix`, e.g. setpriv, and with node's own `nodeFlags` when given) and resolves with its start line. */
export async function startTrace(args: string[], prefix: string[] = [], nodeFlags: string[] = []): Promise<TraceAgent> {
  const argv = [...prefix, 'node', ...nodeFlags, CLI, 'trace', '--listen', '127.0.0.1:0', '--log-format', 'json', ...args];
  const child = track(spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }));
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const lines = new Lines(child);
  try {
    const started = JSON.parse(await lines.next(/"msg":"tracing"/, 15_000)) as Record<string, unknown>;
    return { child, lines, url: String(started.listen), started };
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`the trace agent did not start: ${err.trim() || (e as Error).message}`);
  }
}

export async function stopTrace(a: TraceAgent, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  const exited = new Promise<number | null>((r) => (a.child.exitCode !== null ? r(a.child.exitCode) : a.child.once('exit', (code) => r(code))));
  a.child.kill(signal);
  return exited;
}

export type Chunk = Record<string, unknown> & { peer: string; bytes: number; limit: string; stalled: boolean; id: number };

/** The agent's recent chunk records. */
export async function chunks(a: TraceAgent): Promise<Chunk[]> {
  const r = await fetch(`${a.url}/api/chunks`);
  const text = await r.text();
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Chunk);
}

/** Waits until `n` chunks of the client at local port `clientPort` are reported; returns them. */
export async function chunksOf(a: TraceAgent, clientPort: number, n: number, ms = 15_000): Promise<Chunk[]> {
  const end = Date.now() + ms;
  for (;;) {
    const mine = (await chunks(a)).filter((c) => c.peer.endsWith(`:${clientPort}`));
    if (mine.length >= n || Date.now() > end) return mine;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The BPF programs loaded now: id → name (as bpftool shows them). */
export function loadedPrograms(): Map<number, string> {
  const r = spawnSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool prog show failed: ${r.stderr}`);
  return new Map((JSON.parse(r.stdout) as { id: number; name?: string }[]).map((p) => [p.id, p.name ?? '']));
}

/** The ids of the BPF programs process `pid` holds (through program or link fds: its fdinfo's prog_id). */
export function programsOf(pid: number): number[] {
  const ids = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    let info: string;
    try {
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    const m = /^prog_id:\s*(\d+)$/m.exec(info);
    if (m !== null) ids.add(Number(m[1]));
  }
  return [...ids].sort((a, b) => a - b);
}
