// End to end, real kernel and a real Prometheus: every PromQL expression of
// every dashboard panel, variable and rule, evaluated against data the agents
// exported while a namespace scenario ran.
//
//   server netns (tbf 20 Mbit/s on its egress)           client netns
//     watch agent --port 5001-5003  (job "streamer")
//       :5001 bulk server  ───────────────────────────── slow reader, SO_RCVBUF 4 KiB   (rwnd-limited)
//       :5002 bulk server  ───────────────────────────── fast reader over the shaper    (network-limited)
//       :5003 paced server (4 KiB every 250 ms) ───────── reader                         (app-limited)
//     proxy :8080 → http.server 127.0.0.1:8081 (job "edge", chunk metrics + --diag)
//       ───────────── fast GETs of a 1 MiB segment, slow GETs (4 KiB window), a stalled GET
//     attach --pid <paced server> (job "streamer", second instance: chunk metrics + attach self metrics)
//     prometheus (random port, temp dir, 1 s scrapes, the repository's rules)
//
// Grafana's variables are replaced as Grafana would: $job by the two jobs as
// a regex alternation, $instance, $netns and $port by All (.*), $__rate_interval by
// 10s, $__range by the time since Prometheus started.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RULES_FILE } from '../../dashboards/src/build.js';
import { REC, RWND_SHARE } from '../../dashboards/src/rules.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { Lab, eventually, waitForLine } from '../../lab/lab.js';
import { labelValuesQuery, legendLabels, panelQueries, ROOT, rules, substitute, variables, type PanelQuery } from './artifacts.js';

const PEERS = fileURLToPath(new URL('../watch/peers.py', import.meta.url));

const SLOW_PORT = 5001;
const FAST_PORT = 5002;
const APP_PORT = 5003;
const PROXY_PORT = 8080;
const UPSTREAM_PORT = 8081;
const WATCH_METRICS = '127.0.0.1:9465';
const PROXY_METRICS = '127.0.0.1:9466';
const ATTACH_METRICS = '127.0.0.1:9467';
/** How long the clients run; the queries happen while they still do. */
const TRAFFIC_SECONDS = 32;
/** When to start querying, after Prometheus started. */
const QUERY_AFTER_MS = 22_000;
const RATE_INTERVAL = '10s';

/**
 * Panel queries ("panel / refId") that may legitimately return nothing in
 * this scenario, and why. Every other query must return at least one series.
 */
const MAY_BE_EMPTY: Record<string, string> = {
  'Delivery time: sndbuf-limited chunks / A': 'a tbf-shaped veth path leaves the send buffer almost never full (docs/kernel-notes.md#the-sndbuf-chronograph-on-shaped-paths): no sndbuf-limited chunk',
  'Delivery time: app-limited chunks / A': 'http.server answers at once: chunks are rarely app-limited',
  'Retransmitted segments and inexact chunks per second / B': 'the inexact counter appears with the first inexact chunk (coalesced writes, a dropped record): rare',
  'Network namespaces watched / A': 'the watch agent here watches its own namespace only (no --netns): tcp_chrono_agent_namespaces is not exported',
};

/**
 * Labels the agent may leave empty (Prometheus then drops them): owner unknown, route unmapped;
 * or not export at all: netns, pod_uid, container_id only with watch --netns (and --netns-labels).
 */
const OPTIONAL_LABELS = ['comm', 'pid', 'route', 'netns', 'pod_uid', 'container_id'];

/** Rule expressions (alerts) expected to be empty in a healthy scenario. */
const QUIET_ALERTS = [
  'TCPChronoSendBufferLimited',
  'TCPChronoDestroyFeedUnavailable',
  'TCPChronoDestroyFeedOverruns',
  'TCPChronoConnectionSeriesDropped',
  'TCPChronoAgentPollErrors',
  'TCPChronoAgentParseErrors',
  'TCPChronoAttachRecordsDropped',
];

interface Series {
  metric: Record<string, string>;
  value?: [number, string];
  values?: [number, string][];
}

interface ApiResult {
  status: string;
  error?: string;
  data: { resultType: string; result: Series[] };
}

/** Runs at most `n` of the tasks at once. */
async function pool<T>(tasks: (() => Promise<T>)[], n: number): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < tasks.length) {
        const i = next++;
        out[i] = await tasks[i]!();
      }
    }),
  );
  return out;
}

const valuesOf = (s: Series): number[] => (s.values ?? (s.value !== undefined ? [s.value] : [])).map(([, v]) => Number(v));
const last = (s: Series): number => {
  const v = valuesOf(s);
  return v[v.length - 1]!;
};

describe('dashboards and rules against a real Prometheus (two namespaces, tbf-shaped path)', () => {
  let lab: Lab | undefined;
  let dir: string | undefined;
  let prom = '';
  let promStart = 0;
  let slowRemote = '';
  const children: Record<string, ChildProcess> = {};
  const stderr: Record<string, string> = {};

  /** A Prometheus HTTP API call from inside the server namespace (POST form: long expressions). */
  const api = async (path: string, params: Record<string, string>, method: 'GET' | 'POST' = 'POST'): Promise<ApiResult> => {
    const args = ['curl', '-sS', '--max-time', '15', ...(method === 'GET' ? ['-G'] : [])];
    for (const [k, v] of Object.entries(params)) args.push('--data-urlencode', `${k}=${v}`);
    args.push(`http://${prom}${path}`);
    const { stdout } = await lab!.exec(lab!.server.ns, args, 20_000);
    return JSON.parse(stdout) as ApiResult;
  };
  const instant = (expr: string, at = Date.now() / 1000): Promise<ApiResult> => api('/api/v1/query', { query: expr, time: String(at) });
  const range = (expr: string): Promise<ApiResult> => {
    const end = Date.now() / 1000;
    return api('/api/v1/query_range', { query: expr, start: String(promStart), end: String(end), step: '2' });
  };
  const concrete = (expr: string, job = '(edge|streamer)', rangeSeconds = Math.round(Date.now() / 1000 - promStart)): string =>
    substitute(expr, {
      job,
      instance: '.*',
      netns: '.*',
      port: '.*',
      rateInterval: RATE_INTERVAL,
      interval: '2s',
      range: `${Math.max(10, rangeSeconds)}s`,
    });

  beforeAll(async () => {
    ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'tcpchrono-dash-'));
    writeFileSync(join(dir, 'segment.ts'), Buffer.alloc(1024 * 1024, 7));
    writeFileSync(join(dir, 'index.m3u8'), '#EXTM3U\n#EXT-X-TARGETDURATION:2\n');

    lab = await Lab.create({ shaping: { kind: 'tbf', rate: '20mbit', on: 'server' } });
    const s = lab.server;
    const c = lab.client;
    const servers = [
      lab.spawn(s.ns, ['python3', PEERS, 'server', '--port', String(SLOW_PORT), '--lifetime', '80']),
      lab.spawn(s.ns, ['python3', PEERS, 'server', '--port', String(FAST_PORT), '--lifetime', '80']),
    ];
    const paced = lab.spawn(s.ns, ['python3', PEERS, 'paced-server', '--port', String(APP_PORT), '--bytes', '4096', '--every', '0.25', '--lifetime', '80']);
    servers.push(paced);
    await Promise.all(servers.map((p) => waitForLine(p, /^listening/)));
    const upstream = lab.spawn(s.ns, ['python3', '-u', '-m', 'http.server', String(UPSTREAM_PORT), '--bind', '127.0.0.1', '--directory', dir]);
    await waitForLine(upstream, /Serving HTTP/);

    children.watch = lab.spawn(s.ns, ['node', CLI, 'watch', '--listen', WATCH_METRICS, '--interval', '1s', '--port', `${SLOW_PORT}-${APP_PORT}`]);
    children.proxy = lab.spawn(s.ns, [
      'node', CLI, 'proxy', '--allow-root',
      '--listen', `0.0.0.0:${PROXY_PORT}`,
      '--upstream', `127.0.0.1:${UPSTREAM_PORT}`,
      '--metrics-listen', PROXY_METRICS,
      '--route', 'segment=/segment',
      '--stall-after', '2s',
    ]); // prettier-ignore
    // `ip netns exec` execs the command in place: the child's pid is python's.
    children.attach = lab.spawn(s.ns, ['node', CLI, 'attach', '--pid', String(paced.pid), '--metrics-listen', ATTACH_METRICS, '--stall-after', '2s']);
    for (const [name, child] of Object.entries(children)) child.stderr!.on('data', (d: Buffer) => (stderr[name] = (stderr[name] ?? '') + d.toString()));
    try {
      await Promise.all([
        waitForLine(children.watch, /"msg":"watching"/),
        waitForLine(children.proxy, /"msg":"proxying"/),
        waitForLine(children.attach, /"msg":"attaching"/),
      ]);
    } catch (e) {
      throw new Error(`${String(e)}; stderr: ${JSON.stringify(stderr)}`);
    }

    // Prometheus on a random free port of the (fresh) server namespace.
    const used = (await lab.exec(s.ns, ['ss', '-Hltn'])).stdout;
    let port = 0;
    do port = 20_000 + Math.floor(Math.random() * 40_000);
    while (used.includes(`:${port} `));
    prom = `127.0.0.1:${port}`;
    const config = [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      `rule_files: ['${join(ROOT, RULES_FILE)}']`,
      'scrape_configs:',
      `  - job_name: streamer`,
      `    static_configs: [{ targets: ['${WATCH_METRICS}', '${ATTACH_METRICS}'], labels: { namespace: lab } }]`,
      `  - job_name: edge`,
      `    static_configs: [{ targets: ['${PROXY_METRICS}'], labels: { namespace: lab } }]`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'prometheus.yml'), config);
    children.prometheus = lab.spawn(s.ns, [
      'prometheus',
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=${prom}`,
      '--log.level=warn',
    ]);
    promStart = Date.now() / 1000;

    // Clients, all bounded by TRAFFIC_SECONDS.
    const T = String(TRAFFIC_SECONDS);
    const slow = lab.spawn(c.ns, ['python3', PEERS, 'client', '--host', s.address, '--port', String(SLOW_PORT), '--seconds', T, '--rcvbuf', '4096', '--rate', '20000']);
    lab.spawn(c.ns, ['python3', PEERS, 'client', '--host', s.address, '--port', String(FAST_PORT), '--seconds', T]);
    lab.spawn(c.ns, ['python3', PEERS, 'client', '--host', s.address, '--port', String(APP_PORT), '--seconds', T]);
    const http = (args: string[]): ChildProcess => lab!.spawn(c.ns, ['python3', PEERS, 'http-client', '--host', s.address, '--port', String(PROXY_PORT), '--seconds', T, ...args]);
    http(['--path', '/segment.ts']);
    http(['--path', '/index.m3u8', '--pause', '0.05']);
    http(['--path', '/segment.ts', '--rcvbuf', '4096', '--read', '4096', '--pause', '0.01']);
    http(['--path', '/segment.ts', '--rcvbuf', '4096', '--hold', '5']);
    slowRemote = (await waitForLine(slow, /^connected/)).split(' ')[1]!;

    // Prometheus is up and has scraped both agents.
    await eventually(async () => {
      const r = await instant('up');
      return r.data.result.length === 3 && r.data.result.every((s) => s.value?.[1] === '1') ? true : undefined;
    }, 15_000, 500);
    // Let the rate windows fill and the chunk counters move.
    const wait = QUERY_AFTER_MS - (Date.now() / 1000 - promStart) * 1000;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }, 80_000);

  afterAll(async () => {
    await lab?.teardown(); // kills Prometheus, the agents and every peer
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('every dashboard panel query returns data of the expected shape', async () => {
    const queries = panelQueries();
    expect(queries.length).toBeGreaterThan(40);
    const results = await pool(
      queries.map((q) => async () => ({ q, r: await (q.instant ? instant(concrete(q.expr)) : range(concrete(q.expr))) })),
      6,
    );
    const problems: string[] = [];
    const where = (q: PanelQuery): string => `${q.dashboard} / ${q.panel} / ${q.refId}`;
    for (const { q, r } of results) {
      if (r.status !== 'success') {
        problems.push(`${where(q)}: ${r.error}`);
        continue;
      }
      expect(r.data.resultType, where(q)).toBe(q.instant ? 'vector' : 'matrix');
      if (r.data.result.length === 0) {
        if (MAY_BE_EMPTY[`${q.panel} / ${q.refId}`] === undefined) problems.push(`${where(q)}: no data for ${concrete(q.expr)}`);
        continue;
      }
      for (const s of r.data.result) {
        // The labels the legend shows (heatmaps: the bucket bound le) are there.
        for (const l of legendLabels(q.legend)) {
          if (OPTIONAL_LABELS.includes(l)) continue;
          if (s.metric[l] === undefined) problems.push(`${where(q)}: series without label ${l}: ${JSON.stringify(s.metric)}`);
        }
        if (q.format === 'heatmap' && s.metric.le === undefined) problems.push(`${where(q)}: heatmap series without le`);
        if (q.unit === 'percentunit') {
          for (const v of valuesOf(s)) if (!(v >= 0 && v <= 1.0001)) problems.push(`${where(q)}: share ${v} outside [0, 1] for ${JSON.stringify(s.metric)}`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('the stacked shares of connection time add up to 1, and each client is limited by what it was built to be', async () => {
    const fleet = panelQueries().filter((q) => q.panel === 'By service and port (over the time range)');
    const columns = (range: number, at: number) =>
      Promise.all(
        ['B', 'C', 'D', 'E'].map(async (refId) => {
          const r = await instant(concrete(fleet.find((q) => q.refId === refId)!.expr, undefined, range), at);
          return new Map(r.data.result.map((s) => [`${s.metric.job}:${s.metric.port}`, last(s)]));
        }),
      );
    const wanted = [`streamer:${SLOW_PORT}`, `streamer:${FAST_PORT}`, `streamer:${APP_PORT}`, `edge:${PROXY_PORT}`];
    // The shares add up to 1 exactly only over a range in which every port's
    // series already exist: where a series starts inside the range, rate()
    // extrapolates each counter towards its start by its own first-value
    // ratio (up to half a scrape interval), and a port that is rwnd-limited
    // nearly all the time then shows rwnd > busy (sums of 1.013 were seen
    // over the whole 25 s). So the sum is taken from 2 s after the last of
    // them appeared, the ranking over the whole range, as Grafana shows it.
    const born = await api('/api/v1/query_range', { query: concrete('tcp_chrono_busy_seconds_total{job=~"$job"}'), start: String(promStart), end: String(Date.now() / 1000), step: '1' });
    const firstSeen = new Map(born.data.result.map((s) => [`${s.metric.job}:${s.metric.port}`, Number(s.values![0]![0])]));
    expect([...firstSeen.keys()]).toEqual(expect.arrayContaining(wanted));
    const since = Math.max(...wanted.map((k) => firstSeen.get(k)!)) + 2;
    const short = since + 10 - Date.now() / 1000; // at least 10 s of settled range
    if (short > 0) await new Promise((r) => setTimeout(r, short * 1000));
    // The four columns at one instant: a scrape landing between four
    // "now" queries moved one column's window (sums of 1.019 were seen).
    const at = Date.now() / 1000;
    const full = await columns(Math.round(at - promStart), at);
    const settled = await columns(Math.floor(at - since), at);
    for (const cols of [full, settled]) expect([...cols[0]!.keys()]).toEqual(expect.arrayContaining(wanted));
    for (const k of [...settled[0]!.keys()].sort()) {
      const v = settled.map((c) => c.get(k)!);
      expect(v[0]! + v[1]! + v[2]! + v[3]!, `${k} over the last ${Math.floor(at - since)} s: ${v}`).toBeCloseTo(1, 2);
    }
    const [rwnd, sndbuf, network, app] = full;
    const keys = [...rwnd!.keys()].sort();
    const shares: Record<string, number[]> = {};
    for (const k of keys) shares[k] = [rwnd!.get(k)!, sndbuf!.get(k)!, network!.get(k)!, app!.get(k)!].map((x) => Math.round(x * 1000) / 1000);
    const biggest = (k: string): number => shares[k]!.indexOf(Math.max(...shares[k]!));
    // [rwnd, sndbuf, network, app]
    expect(biggest(`streamer:${SLOW_PORT}`), JSON.stringify(shares)).toBe(0);
    expect(biggest(`streamer:${FAST_PORT}`), JSON.stringify(shares)).toBe(2);
    expect(biggest(`streamer:${APP_PORT}`), JSON.stringify(shares)).toBe(3);
    // Of the three clients of the watch scenario, the slow one's rwnd share is the largest
    // (the proxy's slow and stalled clients are rwnd-limited too, by design).
    const rwndShares = keys.filter((k) => k.startsWith('streamer:')).map((k) => [k, shares[k]![0]!] as const).sort((a, b) => b[1] - a[1]);
    expect(rwndShares[0]![0], JSON.stringify(shares)).toBe(`streamer:${SLOW_PORT}`);
  });

  it('the top-connections table, $job = streamer, puts the slow client first, with its small peer window', async () => {
    const table = panelQueries().filter((q) => q.panel.startsWith('Top 20 connections by receive-window-limited share'));
    const top = await instant(concrete(table.find((q) => q.refId === 'A')!.expr, 'streamer'));
    const sorted = [...top.data.result].sort((a, b) => last(b) - last(a));
    expect(sorted[0]!.metric).toMatchObject({ job: 'streamer', port: String(SLOW_PORT), remote: slowRemote });
    expect(last(sorted[0]!)).toBeGreaterThan(0.6);
    const window = await instant(concrete(table.find((q) => q.refId === 'C')!.expr, 'streamer'));
    const slow = window.data.result.find((s) => s.metric.remote === slowRemote);
    expect(slow, 'peer window of the slow client').toBeDefined();
    expect(last(slow!)).toBeLessThan(64 * 1024);
  });

  it('both per-chunk modes fed the chunk panels: the proxy (rwnd-limited and stalled responses) and attach', async () => {
    const chunks = await instant('sum by (job, mode, port, limit) (tcp_chrono_chunks_total)');
    const seen = chunks.data.result.map((s) => `${s.metric.mode}:${s.metric.port}:${s.metric.limit}`);
    expect(seen).toContain(`proxy:${PROXY_PORT}:rwnd`);
    expect(seen.some((k) => k.startsWith(`attach:${APP_PORT}:`)), JSON.stringify(seen)).toBe(true);
    const stalls = await instant(`sum by (mode, limit) (tcp_chrono_chunk_stalls_total{port="${PROXY_PORT}"})`);
    expect(stalls.data.result.map((s) => `${s.metric.mode}:${s.metric.limit}`)).toContain('proxy:rwnd');
  });

  it('every variable query (label_values) lists the agents, their instances and ports', async () => {
    const got: Record<string, string[]> = {};
    for (const v of variables().filter((v) => v.type === 'query')) {
      const { selector, label } = labelValuesQuery(v.query!);
      const r = (await api(`/api/v1/label/${label}/values`, { 'match[]': concrete(selector), start: String(promStart), end: String(Date.now() / 1000) }, 'GET')) as unknown as {
        status: string;
        data: string[];
      };
      expect(r.status, `${v.dashboard} $${v.name}`).toBe('success');
      got[`${v.dashboard}/${v.name}`] = r.data;
    }
    for (const [k, values] of Object.entries(got)) {
      if (k.endsWith('/job')) expect(values.sort(), k).toEqual(['edge', 'streamer']);
      if (k.endsWith('/instance')) expect(values.sort(), k).toEqual([ATTACH_METRICS, PROXY_METRICS, WATCH_METRICS].sort());
      if (k.endsWith('/port')) expect(values, k).toEqual(expect.arrayContaining([SLOW_PORT, FAST_PORT, APP_PORT, PROXY_PORT].map(String)));
    }
  });

  it('Prometheus loaded every rule, evaluates each without error, and every rule expression returns the expected shape', async () => {
    const loaded = (await api('/api/v1/rules', {}, 'GET')) as unknown as { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } };
    const health = loaded.data.groups.flatMap((g) => g.rules);
    const all = rules();
    expect(health.map((r) => r.name).sort()).toEqual(all.map((r) => r.record ?? r.alert).sort());
    for (const r of health) expect([r.name, r.health, r.lastError ?? '']).toEqual([r.name, 'ok', '']);

    const results = await pool(all.map((rule) => async () => ({ rule, r: await instant(rule.expr) })), 6);
    const problems: string[] = [];
    for (const { rule, r } of results) {
      const name = rule.record ?? rule.alert!;
      if (r.status !== 'success' || r.data.resultType !== 'vector') {
        problems.push(`${name}: ${r.status} ${r.error ?? r.data.resultType}`);
        continue;
      }
      if (rule.record !== undefined) {
        if (r.data.result.length === 0) problems.push(`${name}: no data`);
        for (const s of r.data.result) {
          // Rolled up: service-level labels only.
          for (const l of Object.keys(s.metric)) if (!['namespace', 'job', 'port', 'limit', 'le'].includes(l)) problems.push(`${name}: label ${l} survived the rollup`);
          if (name.includes('share')) for (const v of valuesOf(s)) if (!(v >= 0 && v <= 1.0001)) problems.push(`${name}: share ${v}`);
        }
      } else if (QUIET_ALERTS.includes(name)) {
        if (r.data.result.length !== 0) problems.push(`${name}: would fire in a healthy scenario: ${JSON.stringify(r.data.result)}`);
      }
    }
    expect(problems).toEqual([]);

    // The receive-window alert. Its busy floor (MIN_BUSY connections busy, as a 5-minute rate) cannot
    // be met by series younger than the window (rate() divides by the whole 5 minutes), so in a
    // 30-second scenario the share condition is checked on its own: it holds for the slow client's
    // port and not for the other two; whatever the alert selects satisfies it; and nothing fires
    // before its `for`.
    const shareHigh = await instant(`${REC.rwndShareBusy} > ${RWND_SHARE}`);
    const high = shareHigh.data.result.map((s) => `${s.metric.job}:${s.metric.port}`);
    expect(high).toContain(`streamer:${SLOW_PORT}`);
    expect(high).not.toContain(`streamer:${FAST_PORT}`);
    expect(high).not.toContain(`streamer:${APP_PORT}`);
    const rwndAlert = results.find((x) => x.rule.alert === 'TCPChronoReceiveWindowLimited')!;
    for (const s of rwndAlert.r.data.result) expect(high).toContain(`${s.metric.job}:${s.metric.port}`);
    const alerts = (await api('/api/v1/alerts', {}, 'GET')) as unknown as { data: { alerts: { labels: Record<string, string>; state: string }[] } };
    for (const a of alerts.data.alerts) expect([a.labels.alertname, a.state]).toEqual([a.labels.alertname, 'pending']);

    // Per port, the rwnd share of busy time is largest for the slow client.
    const share = await instant(`${REC.rwndShareBusy}{job="streamer"}`);
    const ranked = [...share.data.result].sort((a, b) => last(b) - last(a));
    expect(ranked[0]!.metric).toMatchObject({ namespace: 'lab', job: 'streamer', port: String(SLOW_PORT) });
  });
});
