// Scrapes survive hostile clients on the metrics port (#16), with real
// sockets and a real Prometheus: while one process holds thousands of
// half-sent requests from 127.0.0.2 and another drips valid requests one
// byte a second from 127.0.0.3 (and, under TLS, clients that never start the
// handshake), Prometheus scrapes the agent from 127.0.0.1 every second and
// every scrape succeeds. What was refused is counted; the agent's file
// descriptors come back to where they were.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lines } from '../attach/helpers.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { freePort } from '../trace/helpers.js';

const ATTACKER = fileURLToPath(new URL('./attacker.mjs', import.meta.url));
const TOKEN = 'a-token-of-at-least-16-characters';
const children: ChildProcess[] = [];
let dir: string;

beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'tcpchrono-hostile-'));
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  return () => rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => (c.exitCode !== null ? undefined : new Promise<void>((r) => (c.once('exit', () => r()), c.kill('SIGKILL'))))));
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

// The agent watches one service port, as a deployment does (`--port`): on
// loopback the attacker's own client sockets live in the agent's namespace,
// and watching every port would measure the agent following 2 000 new
// connections a second that a remote attacker's host would hold instead.
async function startWatch(extra: string[]): Promise<{ child: ChildProcess; port: number; scheme: string }> {
  const port = await freePort();
  const service = await freePort();
  const child = spawn('node', [CLI, 'watch', '--listen', `127.0.0.1:${port}`, '--port', String(service), '--auth-token-file', join(dir, 'token'), '--log-format', 'json', '--owners', 'off', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const started = JSON.parse(await new Lines(child).next(/"msg":"watching"/)) as { listen: string };
  return { child, port, scheme: started.listen.startsWith('https') ? 'https' : 'http' };
}

async function startPrometheus(target: number, scheme: string): Promise<(expr: string, at?: number) => Promise<number[]>> {
  const port = await freePort();
  const pd = mkdtempSync(join(dir, 'prom-'));
  writeFileSync(
    join(pd, 'prometheus.yml'),
    `global: { scrape_interval: 1s, scrape_timeout: 1s }
scrape_configs:
  - job_name: agent
    scheme: ${scheme}
    authorization: { credentials: ${TOKEN} }
    tls_config: { insecure_skip_verify: true }
    static_configs: [{ targets: ['127.0.0.1:${target}'] }]
`,
  );
  const prom = spawn('prometheus', [`--config.file=${join(pd, 'prometheus.yml')}`, `--storage.tsdb.path=${join(pd, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=error'], { stdio: 'ignore' });
  children.push(prom);
  const query = async (expr: string, at?: number): Promise<number[]> => {
    const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}${at !== undefined ? `&time=${at}` : ''}`);
    const j = (await r.json()) as { data: { result: { value: [number, string] }[] } };
    return j.data.result.map((x) => Number(x.value[1]));
  };
  // Ready once it has scraped the agent.
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await query('up'))[0] === 1) return query;
    } catch {
      // not listening yet
    }
    if (Date.now() > end) throw new Error('Prometheus did not scrape the agent within 20 s');
    await sleep(250);
  }
}

function attack(port: number, src: string, n: number, kind: 'half' | 'slow' | 'silent', seconds: number): Promise<{ opened: number; accepted: number; maxLifeMs: number }> {
  const c = spawn('node', [ATTACKER, '127.0.0.1', String(port), src, String(n), kind, String(seconds)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(c);
  return new Lines(c).next(/"opened"/, (seconds + 10) * 1000).then((l) => JSON.parse(l) as { opened: number; accepted: number; maxLifeMs: number });
}

async function rejected(port: number, scheme: string): Promise<Record<string, number>> {
  // The agent's own certificate is self-signed: node:https with verification off, for this read only.
  const text = await new Promise<string>((resolve, reject) => {
    const get = scheme === 'https' ? httpsGet : httpGet;
    get({ host: '127.0.0.1', port, path: '/metrics', headers: { authorization: `Bearer ${TOKEN}` }, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^tcp_chrono_agent_http_rejected_total\{reason="(\w+)"\} (\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

async function fdsBackTo(pid: number, base: number): Promise<number> {
  const end = Date.now() + 10_000;
  while (fds(pid) > base && Date.now() < end) await sleep(200);
  return fds(pid);
}

describe('the metrics port under attack', () => {
  it('2 000 half-sent requests from one address and 200 one-byte-a-second ones from another: every scrape from 127.0.0.1 succeeds for 30 s', async () => {
    const agent = await startWatch(['--interval', '1s']);
    const query = await startPrometheus(agent.port, 'http');
    await sleep(8000); // a quiet baseline
    const quietEnd = Date.now() / 1000;
    const fdBase = fds(agent.child.pid!);
    const [half, slow] = await Promise.all([attack(agent.port, '127.0.0.2', 2000, 'half', 30), attack(agent.port, '127.0.0.3', 200, 'slow', 30)]);
    const attackEnd = Date.now() / 1000;
    await sleep(1500); // the last scrape of the window lands

    // Every scrape in the window succeeded.
    expect(await query('min_over_time(up[30s])', attackEnd)).toEqual([1]);
    expect((await query('count_over_time(up[30s])', attackEnd))[0]).toBeGreaterThanOrEqual(27);
    const quiet = (await query('quantile_over_time(0.5, scrape_duration_seconds[8s])', quietEnd))[0]!;
    const attacked = (await query('quantile_over_time(0.5, scrape_duration_seconds[30s])', attackEnd))[0]!;
    console.log(`hostile_clients: scrape duration median quiet ${(quiet * 1000).toFixed(1)} ms, under attack ${(attacked * 1000).toFixed(1)} ms; attacker ${JSON.stringify(half)}, slow ${JSON.stringify(slow)}`);
    expect(attacked).toBeLessThanOrEqual(2 * quiet);

    // The attackers got little, not for long, and it was counted.
    expect(half.opened).toBeGreaterThanOrEqual(2000);
    expect(half.maxLifeMs).toBeLessThan(3000 + 1500);
    expect(slow.maxLifeMs).toBeLessThan(3000 + 1500);
    const r = await rejected(agent.port, 'http');
    expect(r.per_address).toBeGreaterThan(1000);
    expect(r.first_request_timeout).toBeGreaterThan(0);
    expect(await fdsBackTo(agent.child.pid!, fdBase)).toBeLessThanOrEqual(fdBase);
  }, 90_000);

  it('with TLS: clients that never start the handshake and half-sent requests are closed within the deadline; scrapes succeed', async () => {
    const agent = await startWatch(['--interval', '1s', '--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem')]);
    expect(agent.scheme).toBe('https');
    const query = await startPrometheus(agent.port, 'https');
    const fdBase = fds(agent.child.pid!);
    const [silent, half] = await Promise.all([attack(agent.port, '127.0.0.2', 1000, 'silent', 12), attack(agent.port, '127.0.0.3', 200, 'half', 12)]);
    const end = Date.now() / 1000;
    await sleep(1500);
    expect(await query('min_over_time(up[12s])', end)).toEqual([1]);
    expect((await query('count_over_time(up[12s])', end))[0]).toBeGreaterThanOrEqual(10);
    expect(silent.accepted).toBeGreaterThan(0);
    expect(silent.maxLifeMs).toBeLessThan(3000 + 1500);
    expect(half.maxLifeMs).toBeLessThan(3000 + 1500);
    const r = await rejected(agent.port, 'https');
    expect(r.first_request_timeout).toBeGreaterThan(0);
    expect(r.per_address).toBeGreaterThan(0);
    expect(await fdsBackTo(agent.child.pid!, fdBase)).toBeLessThanOrEqual(fdBase);
  }, 60_000);
});
