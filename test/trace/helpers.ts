// Plumbing for the trace tests: real servers that know nothing of the agent
// (Debian's nginx with sendfile, python3's http.server), a keep-alive client
// (client.py), and the agent itself. Everything started here is stopped by
// stopAll(), also when a test fails.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lines } from '../attach/helpers.js';
import { CLI } from '../helpers/cli.js';

export const CLIENT = fileURLToPath(new URL('./client.py', import.meta.url));
const children = new Set<ChildProcess>();
const dirs = new Set<string>();

export function track(c: ChildProcess): ChildProcess {
  children.add(c);
  c.once('exit', () => children.delete(c));
  return c;
}

/** Kills every child still running and removes the temporary directories. */
export async function stopAll(): Promise<void> {
  const exits = [...children].map((c) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()))));
  for (const c of children) c.kill('SIGKILL');
  await Promise.all(exits);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
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

/** Debian's nginx: one worker, sendfile, keep-alive, serving `dir` on 127.0.0.1:port. */
export async function startNginx(dir: string, port: number): Promise<ChildProcess> {
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
  const child = track(spawn(NGINX, ['-c', conf, '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitListening(port, () => (child.exitCode !== null ? `nginx exited: ${err}` : undefined));
  return child;
}

/** python3's http.server with HTTP/1.1 keep-alive. */
export async function startPython(dir: string, port: number): Promise<ChildProcess> {
  const code = `import http.server as h, functools
h.SimpleHTTPRequestHandler.protocol_version = 'HTTP/1.1'
h.ThreadingHTTPServer(('127.0.0.1', ${port}), functools.partial(h.SimpleHTTPRequestHandler, directory=${JSON.stringify(dir)})).serve_forever()`;
  const child = track(spawn('python3', ['-c', code], { stdio: ['ignore', 'ignore', 'ignore'] }));
  await waitListening(port, () => (child.exitCode !== null ? 'python3 exited' : undefined));
  return child;
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

export interface TraceAgent {
  child: ChildProcess;
  lines: Lines;
  url: string;
  started: Record<string, unknown>;
}

/** The trace agent; killed if its start line does not come. */
export async function startTrace(args: string[]): Promise<TraceAgent> {
  const child = track(spawn('node', [CLI, 'trace', '--listen', '127.0.0.1:0', '--log-format', 'json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
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

/** Our programs still loaded (the program's name as bpftool shows it). */
export function loadedPrograms(): number {
  const r = spawnSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool prog show failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { name?: string }[]).filter((p) => p.name === 'tcp_chrono_trace').length;
}
