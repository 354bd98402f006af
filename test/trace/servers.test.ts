// `trace` against more servers and clients that know nothing of the agent:
// nginx over HTTPS (a chunk is the TLS records of one response), a Node
// server, connections shorter than any poll, and an application that
// timestamps its own writes while trace follows the same connection (it must
// get exactly its own records). Every process is killed after each test.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lines } from '../attach/helpers.js';
import { CLI as CLI_PATH, ensureBuilt } from '../helpers/cli.js';
import { kernelVersion, traceBinding } from '../../agent/sources/trace.js';
import { chunks, chunksOf, docroot, freePort, NGINX, nginxAvailable, startTrace, stopAll, track, type Chunk } from './helpers.js';

const CLIENT = fileURLToPath(new URL('./keepalive_client.py', import.meta.url));
const OWN_TIMESTAMPS = fileURLToPath(new URL('./own_timestamps.py', import.meta.url));
const SIZES = { 'a.ts': 300_000, 'b.ts': 1_200_000, 'c.ts': 50_000, 'warm.ts': 1000 };

beforeAll(() => {
  ensureBuilt();
  const [maj, min] = kernelVersion();
  if (maj < 6 || (maj === 6 && min < 15)) throw new Error(`these tests need Linux 6.15+ (BPF TX timestamping); this kernel is ${maj}.${min}`);
  if (traceBinding() === undefined) throw new Error('the addon was built without libbpf: install libbpf-dev and pkg-config (scripts/install-test-deps.sh), then npm rebuild');
  if (process.geteuid?.() !== 0) throw new Error('these tests load BPF programs: run them as root');
  if (!nginxAvailable()) throw new Error('nginx is missing: run scripts/install-test-deps.sh');
});

afterEach(async () => {
  await stopAll();
});

interface KeepAlive {
  local: number;
  responses: { response: number; head: number; bytes: number }[];
}

/** keepalive_client.py: one connection, the paths in turn; resolves when it is done. */
async function keepAlive(port: number, paths: string[], tls = false): Promise<KeepAlive> {
  const child = track(spawn('python3', [CLIENT, ...(tls ? ['--tls'] : []), String(port), ...paths], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const lines = new Lines(child);
  const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const local = (JSON.parse(await lines.next(/"local"/)) as { local: number }).local;
  expect(await exit).toBe(0);
  const responses = lines.all.filter((l) => l.includes('"response"')).map((l) => JSON.parse(l) as KeepAlive['responses'][number]);
  expect(responses).toHaveLength(paths.length);
  return { local, responses };
}

async function waitListening(port: number): Promise<void> {
  for (const end = Date.now() + 10_000; ; ) {
    const ok = await fetch(`http://127.0.0.1:${port}/`).then(
      () => true,
      (e: Error) => !/ECONNREFUSED/.test(String((e as { cause?: unknown }).cause ?? e)),
    );
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('trace: TLS, Node, short connections, applications with their own timestamps', () => {
  it('nginx over HTTPS: each response is one chunk, its size plus the TLS records\' overhead', async () => {
    const dir = docroot(SIZES);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const port = await freePort();
    writeFileSync(
      join(dir, 'nginx.conf'),
      `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events {}
http {
  access_log off; sendfile on; keepalive_requests 10000; keepalive_timeout 60s;
  client_body_temp_path ${dir}/t1; proxy_temp_path ${dir}/t2; fastcgi_temp_path ${dir}/t3; uwsgi_temp_path ${dir}/t4; scgi_temp_path ${dir}/t5;
  types { application/octet-stream ts; }
  server { listen 127.0.0.1:${port} ssl; ssl_certificate ${dir}/cert.pem; ssl_certificate_key ${dir}/key.pem; root ${dir}; }
}
`,
    );
    track(spawn(NGINX, ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore', detached: true }), true);
    await waitListening(port);
    const agent = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    // Before the responses, the handshake's flights and the session tickets
    // are chunks of their own (each follows bytes from the client): the last
    // three are the measured responses.
    const client = await keepAlive(port, ['/warm.ts', '/a.ts', '/b.ts', '/c.ts'], true);
    // Wait for the last response's chunk (the chunks before the responses vary in number).
    const lastPlain = client.responses[3]!.head + client.responses[3]!.bytes;
    let mine: Chunk[] = [];
    for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      mine = await chunksOf(agent, client.local, 4);
      if (mine.some((c) => c.bytes > lastPlain && c.bytes < lastPlain + 1000)) break;
    }
    const last3 = mine.slice(-3);
    expect(last3).toHaveLength(3);
    for (const [i, c] of last3.entries()) {
      const plain = client.responses[i + 1]!.head + client.responses[i + 1]!.bytes;
      // TLS 1.3 adds 22 bytes per record (header, type, tag); nginx's records
      // hold up to 16 KiB, often less (measured about 12 KiB on average).
      expect(c.bytes).toBeGreaterThan(plain);
      expect(c.bytes).toBeLessThanOrEqual(plain + 22 * (Math.ceil(plain / 8192) + 4));
      expect(c.stalled).toBe(false);
      expect(c.comm).toBe('nginx');
    }
  });

  it('a Node server (node:http, keep-alive): three responses of different sizes, three chunks, bytes exact', async () => {
    const port = await freePort();
    const code = `const http = require('node:http');
const sizes = ${JSON.stringify(SIZES)};
http.createServer((req, res) => {
  const n = sizes[req.url.slice(1)] ?? 0;
  res.writeHead(200, { 'content-length': n, 'content-type': 'application/octet-stream' });
  const body = Buffer.alloc(n, 1);
  for (let at = 0; at < n; at += 65536) res.write(body.subarray(at, at + 65536));
  res.end();
}).listen(${port}, '127.0.0.1');`;
    const server = track(spawn(process.execPath, ['-e', code], { stdio: 'ignore' }));
    await waitListening(port);
    const agent = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    const client = await keepAlive(port, ['/a.ts', '/b.ts', '/c.ts']);
    const mine = await chunksOf(agent, client.local, 3);
    expect(mine.map((c) => c.bytes)).toEqual(client.responses.map((r) => r.head + r.bytes));
    for (const c of mine) {
      expect(c.pid).toBe(server.pid);
      expect(c.comm).toBe('node');
      expect(c.exact).toBe(true);
    }
  });

  it('100 connections of one small response each, shorter than any poll: every one has its chunk', async () => {
    const dir = docroot({ 'small.ts': 2000 });
    const port = await freePort();
    writeFileSync(
      join(dir, 'nginx.conf'),
      `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events {}
http { access_log off; sendfile on; types { application/octet-stream ts; }
  client_body_temp_path ${dir}/t1; proxy_temp_path ${dir}/t2; fastcgi_temp_path ${dir}/t3; uwsgi_temp_path ${dir}/t4; scgi_temp_path ${dir}/t5;
  server { listen 127.0.0.1:${port}; root ${dir}; } }
`,
    );
    track(spawn(NGINX, ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore', detached: true }), true);
    await waitListening(port);
    // A long interval: the records must come from the kernel at each close, not from a scan.
    const agent = await startTrace(['--port', String(port), '--interval', '1s', '--quiet', '10s']);
    const out = execFileSync('curl', ['-s', '-o', '/dev/null', '-H', 'Connection: close', '-w', '%{local_port} %{size_header} %{size_download}\\n', `http://127.0.0.1:${port}/small.ts?[1-100]`], { encoding: 'utf8' });
    const clients = out.trim().split('\n').map((l) => l.split(' ').map(Number) as [number, number, number]);
    expect(clients).toHaveLength(100);
    expect(new Set(clients.map((c) => c[0])).size).toBe(100);
    let all: Chunk[] = [];
    for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      all = await chunks(agent);
      if (all.length >= 100) break;
    }
    for (const [local, head, body] of clients) {
      const mine = all.filter((c) => c.peer.endsWith(`:${local}`));
      expect(mine.map((c) => c.bytes), `client port ${local}`).toEqual([head + body]);
    }
  });

  it('an application timestamping its own writes gets exactly its own records while trace follows the connection', async () => {
    const port = await freePort();
    const n = 20;
    const size = 1000;
    const server = track(spawn('python3', [OWN_TIMESTAMPS, String(port), String(n), String(size)], { stdio: ['ignore', 'pipe', 'inherit'] }));
    const lines = new Lines(server);
    await lines.next(/^listening/);
    const agent = await startTrace(['--port', String(port), '--chunks', 'write', '--interval', '200ms', '--quiet', '300ms']);
    const client = track(spawn('python3', ['-c', `import socket,sys
s = socket.create_connection(('127.0.0.1', ${port}))
print(s.getsockname()[1], flush=True)
s.sendall(b'go')
while s.recv(65536): pass`], { stdio: ['ignore', 'pipe', 'inherit'] }));
    const local = Number(await new Lines(client).next(/^\d+/));
    const result = JSON.parse(await lines.next(/"ids"/, 15_000)) as { ids: number[]; other: number };
    // OPT_ID on TCP counts bytes: each write's record is keyed at its last byte.
    expect(result.ids).toEqual(Array.from({ length: n }, (_, i) => (i + 1) * size - 1));
    expect(result.other).toBe(0);
    // And trace saw every write of that connection.
    const mine = await chunksOf(agent, local, n);
    expect(mine).toHaveLength(n);
    expect(mine.every((c) => c.bytes === size)).toBe(true);
  });

  it('two agents on the same cgroup (two sockops programs) each get every response', async () => {
    const port = await freePort();
    const code = `require('node:http').createServer((req, res) => res.end(Buffer.alloc(200_000, 1))).listen(${port}, '127.0.0.1');`;
    track(spawn(process.execPath, ['-e', code], { stdio: 'ignore' }));
    await waitListening(port);
    const one = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    const two = await startTrace(['--port', String(port), '--interval', '200ms', '--quiet', '300ms']);
    const client = await keepAlive(port, ['/1', '/2', '/3']);
    const want = client.responses.map((r) => r.head + r.bytes);
    expect((await chunksOf(one, client.local, 3)).map((c) => c.bytes)).toEqual(want);
    expect((await chunksOf(two, client.local, 3)).map((c) => c.bytes)).toEqual(want);
  });

  it('under `ip netns exec` (which hides the cgroup-v2 mount) it exits 1 with a sentence saying what to do', () => {
    const ns = `tcpchrono-trace-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, CLI_PATH, 'trace', '--port', '9', '--diag', 'off'], { encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/no cgroup-v2 hierarchy is mounted.*ip netns exec.*run trace outside it/);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  });
});
