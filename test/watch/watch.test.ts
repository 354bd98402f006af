// End to end, real kernel: the built CLI watches a server namespace joined to
// a client namespace by a veth pair whose server end is shaped with tbf.
// Traffic (test/watch/peers.py) runs only inside the lab's namespaces.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt, runCli } from '../helpers/cli.js';
import { Lab, eventually, stopChild, waitForLine } from '../../lab/lab.js';

const PEERS = fileURLToPath(new URL('./peers.py', import.meta.url));

const SLOW_PORT = 5001; // slow reader, tiny receive buffer
const FAST_PORT = 5002; // fast reader over the shaped path
const SHORT_PORT = 5003; // connections shorter than a poll
const AGENT = '127.0.0.1:9465';
const AGENT_LONG = '127.0.0.1:9466'; // --interval 1h: only the destroy feed sees short connections
const AGENT_NOBODY = '127.0.0.1:9467';
const PROM = '127.0.0.1:9490';

/** Value of the first sample of `name` whose labels include all of `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

interface ApiConnection {
  remote: string;
  port: string;
  busySeconds: number;
  rwndLimitedSeconds: number;
  sndbufLimitedSeconds: number;
  rwndShare: number;
  bytesAcked: number;
  pid: number | null;
  comm: string | null;
}

describe('watch: two namespaces, tbf-shaped path', () => {
  let lab: Lab | undefined;
  let agent: ChildProcess;
  let agentLog = '';
  let slowRemote = '';
  let fastRemote = '';
  let promDir: string | undefined;

  const metrics = async (addr = AGENT): Promise<string> => {
    const r = await lab!.fetch(lab!.server.ns, `http://${addr}/metrics`);
    expect(r.status).toBe(200);
    return r.body;
  };
  const startAgent = (args: string[], env?: NodeJS.ProcessEnv): ChildProcess =>
    lab!.spawn(lab!.server.ns, ['node', CLI, 'watch', ...args], env);

  beforeAll(async () => {
    ensureBuilt();
    lab = await Lab.create({ shaping: { kind: 'tbf', rate: '20mbit', on: 'server' } });
    const s = lab.server;
    const c = lab.client;
    const servers = [
      lab.spawn(s.ns, ['python3', PEERS, 'server', '--port', String(SLOW_PORT), '--lifetime', '60']),
      lab.spawn(s.ns, ['python3', PEERS, 'server', '--port', String(FAST_PORT), '--lifetime', '60']),
      lab.spawn(s.ns, ['python3', PEERS, 'server', '--port', String(SHORT_PORT), '--bytes', '200000', '--lifetime', '60']),
    ];
    await Promise.all(servers.map((p) => waitForLine(p, /^listening/)));

    agent = startAgent(['--listen', AGENT, '--interval', '1s']);
    agent.stdout!.on('data', (d: Buffer) => (agentLog += d.toString()));
    await waitForLine(agent, /"msg":"watching"/);

    const slow = lab.spawn(c.ns, ['python3', PEERS, 'client', '--host', s.address, '--port', String(SLOW_PORT), '--seconds', '20', '--rcvbuf', '4096', '--rate', '20000']);
    const fast = lab.spawn(c.ns, ['python3', PEERS, 'client', '--host', s.address, '--port', String(FAST_PORT), '--seconds', '20']);
    // The client's local address is the server's remote label.
    slowRemote = (await waitForLine(slow, /^connected/)).split(' ')[1]!;
    fastRemote = (await waitForLine(fast, /^connected/)).split(' ')[1]!;
  }, 60_000);

  afterAll(async () => {
    await lab?.teardown();
    if (promDir !== undefined) rmSync(promDir, { recursive: true, force: true });
  });

  it('logs one structured start line saying what is watched', () => {
    const start = JSON.parse(agentLog.split('\n').find((l) => l.includes('"msg":"watching"'))!) as Record<string, unknown>;
    expect(start).toMatchObject({ level: 'info', ports: `all but ${AGENT.split(':')[1]}`, destroyFeed: 'on', listen: `http://${AGENT}`, maxConnections: 200 });
    expect(start.states).toContain('established');
  });

  it('serves /healthz, and rejects bad /api/connections parameters with 400', async () => {
    const h = await lab!.fetch(lab!.server.ns, `http://${AGENT}/healthz`);
    expect(h.status).toBe(200);
    expect(JSON.parse(h.body)).toMatchObject({ ok: true, destroyFeed: 'on' });
    const bad = await lab!.fetch(lab!.server.ns, `http://${AGENT}/api/connections?sort=fastest`);
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error).toMatch(/rwnd_share, stall, bytes/);
    expect((await lab!.fetch(lab!.server.ns, `http://${AGENT}/api/connections?limit=0`)).status).toBe(400);
    expect((await lab!.fetch(lab!.server.ns, `http://${AGENT}/nope`)).status).toBe(404);
  });

  it('a slow reader with a small receive buffer is mostly rwnd-limited, in /metrics and /api/connections', async () => {
    const labels = { port: String(SLOW_PORT), remote: slowRemote };
    const text = await eventually(async () => {
      const t = await metrics();
      const busy = sample(t, 'tcp_chrono_connection_busy_seconds_total', labels) ?? 0;
      return busy >= 2 ? t : undefined;
    }, 15_000);
    const busy = sample(text, 'tcp_chrono_connection_busy_seconds_total', labels)!;
    const rwnd = sample(text, 'tcp_chrono_connection_rwnd_limited_seconds_total', labels)!;
    expect(rwnd / busy).toBeGreaterThan(0.6);
    expect(sample(text, 'tcp_chrono_connection_peer_rwnd_bytes', labels)).toBeLessThan(64 * 1024);
    // Aggregate by port carries it too.
    expect(sample(text, 'tcp_chrono_rwnd_limited_seconds_total', { port: String(SLOW_PORT) })).toBeGreaterThanOrEqual(rwnd);

    const api = await lab!.fetch(lab!.server.ns, `http://${AGENT}/api/connections?sort=rwnd_share&limit=5`);
    expect(api.status).toBe(200);
    const body = JSON.parse(api.body) as { connections: ApiConnection[] };
    const first = body.connections[0]!;
    expect(first.remote).toBe(slowRemote);
    expect(first.rwndShare).toBeGreaterThan(0.6);

    // Owner lookup (background /proc scan) names the python server.
    const owned = await eventually(async () => {
      const t = await metrics();
      return t.split('\n').find((l) => l.startsWith('tcp_chrono_connection_busy_seconds_total{') && l.includes(`remote="${slowRemote}"`) && l.includes('comm="python3"'));
    }, 15_000);
    expect(owned).toMatch(/pid="\d+"/);
  });

  it('a fast reader over the shaped path is busy but neither rwnd- nor sndbuf-limited', async () => {
    const labels = { port: String(FAST_PORT), remote: fastRemote };
    const text = await eventually(async () => {
      const t = await metrics();
      return (sample(t, 'tcp_chrono_connection_busy_seconds_total', labels) ?? 0) >= 2 ? t : undefined;
    }, 15_000);
    const busy = sample(text, 'tcp_chrono_connection_busy_seconds_total', labels)!;
    expect(sample(text, 'tcp_chrono_connection_rwnd_limited_seconds_total', labels)! / busy).toBeLessThan(0.1);
    expect(sample(text, 'tcp_chrono_connection_sndbuf_limited_seconds_total', labels)! / busy).toBeLessThan(0.1);
    // 20 Mbit/s is 2.5 MB/s: a couple of seconds moved megabytes, not more than the shaper allows.
    const acked = sample(text, 'tcp_chrono_connection_bytes_acked_total', labels)!;
    expect(acked).toBeGreaterThan(1e6);
    const rate = sample(text, 'tcp_chrono_connection_delivery_rate_bytes_per_second', labels)!;
    expect(rate).toBeLessThan(4e6);
  });

  it('connections that open, transfer and close between two polls are counted in the aggregates', async () => {
    const long = startAgent(['--listen', AGENT_LONG, '--interval', '1h', '--port', String(SHORT_PORT)]);
    await waitForLine(long, /"msg":"watching"/);
    const { stdout } = await lab!.exec(lab!.client.ns, ['python3', PEERS, 'short', '--host', lab!.server.address, '--port', String(SHORT_PORT), '--count', '10']);
    expect(stdout).toContain('done 10 2000000');
    const text = await eventually(async () => {
      const t = await metrics(AGENT_LONG);
      return sample(t, 'tcp_chrono_connections_closed_total', { port: String(SHORT_PORT) }) === 10 ? t : undefined;
    }, 10_000);
    expect(sample(text, 'tcp_chrono_bytes_acked_total', { port: String(SHORT_PORT) })).toBeGreaterThanOrEqual(2_000_000);
    expect(sample(text, 'tcp_chrono_connections', { port: String(SHORT_PORT) })).toBe(0);
    expect(sample(text, 'tcp_chrono_agent_polls_total')).toBe(1);
    expect(sample(text, 'tcp_chrono_agent_destroy_feed_up')).toBe(1);
    expect(await stopChild(long)).toBe(0);
  });

  it('runs unprivileged: sock_diag dumps and the destroy feed need no capability on this kernel', async () => {
    const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all'];
    const child = lab!.spawn(lab!.server.ns, [...nobody, 'node', CLI, 'watch', '--listen', AGENT_NOBODY, '--owners', 'off']);
    const line = await waitForLine(child, /"msg":"watching"/);
    expect(JSON.parse(line)).toMatchObject({ destroyFeed: 'on', degraded: [] });
    const text = await metrics(AGENT_NOBODY);
    expect(sample(text, 'tcp_chrono_agent_destroy_feed_up')).toBe(1);
    expect(sample(text, 'tcp_chrono_connections', { port: String(SLOW_PORT) })).toBe(1);
    expect(await stopChild(child)).toBe(0);
  });

  it('without the destroy feed it says so once in the log and in a self-metric', async () => {
    const child = startAgent(['--listen', AGENT_NOBODY, '--destroy-feed', 'off', '--owners', 'off']);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const line = await waitForLine(child, /"msg":"watching"/);
    const start = JSON.parse(line) as { destroyFeed: string; degraded: string[] };
    expect(start.destroyFeed).toBe('off');
    expect(start.degraded).toHaveLength(1);
    expect(start.degraded[0]).toMatch(/keep the figures of their last poll/);
    const text = await metrics(AGENT_NOBODY);
    expect(sample(text, 'tcp_chrono_agent_destroy_feed_up')).toBe(0);
    expect(sample(text, 'tcp_chrono_agent_info', { destroy_feed: 'off' })).toBe(1);
    expect(await stopChild(child)).toBe(0);
    expect(out.split('\n').filter((l) => l.includes('"level":"warn"') && l.includes('destroy feed off'))).toHaveLength(1);
  });

  it('a listen address in use is a runtime error: exit 1 with one sentence', async () => {
    let err: { code: number; stderr: string } | undefined;
    try {
      await lab!.exec(lab!.server.ns, ['node', CLI, 'watch', '--listen', AGENT, '--destroy-feed', 'off']);
    } catch (e) {
      err = e as { code: number; stderr: string };
    }
    expect(err?.code).toBe(1);
    expect(String(err?.stderr).trim()).toBe(`tcp-chronograph: cannot listen on ${AGENT}: the address is in use; choose another with --listen`);
  });

  it('a real Prometheus scrapes the agent, and promtool check metrics passes on the exposition', async () => {
    const text = await metrics();
    execFileSync('promtool', ['check', 'metrics'], { input: text });

    promDir = mkdtempSync(join(tmpdir(), 'tcpchrono-prom-'));
    writeFileSync(
      join(promDir, 'prometheus.yml'),
      `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: tcp-chronograph\n    static_configs: [{ targets: ['${AGENT}'] }]\n`,
    );
    lab!.spawn(lab!.server.ns, [
      'prometheus',
      `--config.file=${join(promDir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(promDir, 'data')}`,
      `--web.listen-address=${PROM}`,
      '--log.level=warn',
    ]);
    const q = (expr: string) => lab!.fetch(lab!.server.ns, `http://${PROM}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const result = await eventually(async () => {
      const r = await q(`tcp_chrono_connection_rwnd_limited_seconds_total{port="${SLOW_PORT}"}`);
      if (r.status !== 200) return undefined;
      const j = JSON.parse(r.body) as { data: { result: { value: [number, string] }[] } };
      return j.data.result.length > 0 ? j.data.result : undefined;
    }, 20_000, 500);
    expect(Number(result[0]!.value[1])).toBeGreaterThan(0);
    const up = JSON.parse((await q('up{job="tcp-chronograph"}')).body) as { data: { result: { value: [number, string] }[] } };
    expect(up.data.result[0]?.value[1]).toBe('1');
    // Its own listener is not a watched service: Prometheus's connection to it is in no series.
    expect(await metrics()).not.toContain(`port="${AGENT.split(':')[1]}"`);
  });

  it('stops cleanly on SIGTERM', async () => {
    expect(await stopChild(agent, 6000)).toBe(0);
    expect(agentLog).toMatch(/"msg":"stopped","signal":"SIGTERM"/);
  });
});

describe('watch CLI usage errors (no namespace needed)', () => {
  it('--help documents every flag with its environment variable', () => {
    const r = runCli(['watch', '--help']);
    expect(r.code).toBe(0);
    for (const f of ['--interval', '--port', '--remote-cidr', '--state', '--listen', '--max-connections', '--destroy-feed', '--owners']) {
      expect(r.stdout).toContain(f);
    }
    expect(r.stdout).toContain('TCP_CHRONOGRAPH_LISTEN');
  });

  it.each([
    [['watch', '--bogus'], /unknown flag --bogus/],
    [['watch', '--interval', 'soon'], /--interval "soon": expected a duration/],
    [['watch', '--port', '70000'], /--port "70000"/],
    [['watch', '--remote-cidr', '10.0.0.0/99'], /not an address prefix/],
    [['watch', '--listen'], /--listen needs a value/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ])('%j exits 2 with one line', (args, re) => {
    const r = runCli(args);
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(re);
  });

  it('reads flags from the environment, and says which variable was wrong', () => {
    const r = runCli(['watch'], { env: { TCP_CHRONOGRAPH_MAX_CONNECTIONS: 'lots' } });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^tcp-chronograph: TCP_CHRONOGRAPH_MAX_CONNECTIONS "lots": expected a whole number/);
  });
});
