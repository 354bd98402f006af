// The accuracy report: every scenario (lab/scenarios.ts) through every source
// that applies, verdicts compared with the ground truth (lab/truth.ts).
//
//   mode direct: the segment server runs in this process (its listening socket
//     lives in the lab's server namespace, DelayLab.listen), each connection
//     instrumented with instrument() (source "instrument", per chunk), while
//     the watch CLI polls the same namespace (source "watch", per interval,
//     read from /api/connections by a poller in the namespace).
//   mode proxy: the same server, uninstrumented, behind the proxy CLI in the
//     server namespace; its --events file gives the chunk records (source
//     "proxy").
//   mode attach: the segment server as its own process (lab/segment-server.ts)
//     and the attach CLI on its pid (source "attach": its records are the
//     target's sendmsg calls, mapped to segments by byte offset and
//     aggregated per segment, see scoreAttach).
//   mode trace: the same server process, and the trace CLI (BPF, Linux 6.15+)
//     following its port and pid (source "trace": one chunk per response,
//     assembled in the kernel).
//
// npm run lab:accuracy [-- --quick] [-- --only NAME,...] [-- --json FILE]
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChunkRecord } from '../agent/index.js';
import { DelayLab } from './delay.js';
import { stopChild, waitForLine } from './lab.js';
import { SCENARIOS, type Mode, type Scenario } from './scenarios.js';
import { responseHead, serveSegments } from './server.js';
import { classify } from '../agent/model/classify.js';
import {
  formatMatrix,
  formatSummary,
  intervalTruth,
  intervalVerdict,
  summarize,
  timeline,
  type Excluded,
  type Scored,
  type SegmentEvent,
  type SourceSummary,
} from './truth.js';

/** The repository root, from lab/ (vitest) or dist/lab/ (npm run lab:accuracy). */
export const ROOT = ((): string => {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++, d = dirname(d)) if (existsSync(join(d, 'package.json'))) return d;
  throw new Error('repository root not found');
})();
export const CLI = join(ROOT, 'dist/agent/cli/main.js');
export const PEERS = join(ROOT, 'lab/peers.py');
export const SEGMENT_SERVER = join(ROOT, 'dist/lab/segment-server.js');

export const SOURCES = ['instrument', 'watch', 'proxy', 'attach', 'trace'] as const;
export type Source = (typeof SOURCES)[number];
const SOURCE_MODE: Record<Source, Mode> = { instrument: 'direct', watch: 'direct', proxy: 'proxy', attach: 'attach', trace: 'trace' };

export interface RunResult {
  scenario: string;
  mode: Mode;
  seconds: number;
  scored: Scored[];
  excluded: Excluded[];
  /** Per item: truth, verdict and shares, for the detailed log. */
  detail: string[];
  error?: string;
}

export interface Report {
  quick: boolean;
  runs: RunResult[];
  /** Every scored item. */
  summaries: SourceSummary[];
  /** Without the scenarios that have a documented limitation: what the target applies to. */
  gated: SourceSummary[];
  seconds: number;
}

type Log = (line: string) => void;

interface ClientOutput {
  local: string;
  connected: number;
  done: number;
  segments: SegmentEvent[];
}

function collectLines(child: ChildProcess): string[] {
  const lines: string[] = [];
  let buf = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts.filter((l) => l.trim() !== ''));
  });
  return lines;
}

interface Go {
  /** The client waits for this file before its first request. */
  file: string;
  /** Called with the client's ip:port once it connected; creates the file when it returns. */
  ready: (local: string) => Promise<void>;
}

async function runClient(lab: DelayLab, scn: Scenario, port: number, limitS: number, go?: Go): Promise<ClientOutput> {
  const argv = ['python3', PEERS, 'client', '--host', lab.server.address, '--port', String(port), '--plan', JSON.stringify(scn.plan), '--limit', String(limitS)];
  if (scn.rcvbuf !== undefined) argv.push('--rcvbuf', String(scn.rcvbuf));
  if (go !== undefined) argv.push('--go-file', go.file);
  const child = lab.spawn('client', argv);
  const lines = collectLines(child);
  let goFailed: unknown;
  if (go !== undefined) {
    const line = await waitForLine(child, /"event": ?"connected"/, 15_000);
    const local = String((JSON.parse(line) as { local: string }).local);
    try {
      await go.ready(local);
      writeFileSync(go.file, '');
    } catch (e) {
      goFailed = e;
      child.kill('SIGKILL');
    }
  }
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const timer = setTimeout(() => child.kill('SIGKILL'), (limitS + 5) * 1000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  if (goFailed !== undefined) throw goFailed;
  const ev = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const connected = ev.find((e) => e.event === 'connected');
  const done = ev.find((e) => e.event === 'done');
  if (code !== 0 || connected === undefined || done === undefined) throw new Error(`client exited ${code}: ${stderr.trim().split('\n').pop() ?? ''}`);
  return {
    local: String(connected.local),
    connected: Number(connected.t),
    done: Number(done.t),
    segments: ev.filter((e) => e.event === 'segment') as unknown as SegmentEvent[],
  };
}

const planSeconds = (scn: Scenario): number => 20 + scn.plan.reduce((a, s) => a + (s.thinkSeconds ?? 0) + (s.stallSeconds ?? 0) + ((s.pieces ?? 1) * (s.gapMs ?? 0)) / 1000 + s.bytes / 1e6, 0);

const sharesText = (c: ChunkRecord): string =>
  `rwnd ${c.shares.rwnd.toFixed(2)} sndbuf ${c.shares.sndbuf.toFixed(2)} network ${c.shares.network.toFixed(2)} app ${c.shares.app.toFixed(2)}${c.sndbufBound ? ` (sndbuf ${c.sndbufLimited.toFixed(3)} s + ${c.sndbufBound.toFixed(3)} s bound)` : ''}, ${(c.deliveryTime * 1000).toFixed(0)} ms`;

/** Scores chunk records whose k-th (by offset) is the k-th segment. */
function scoreChunks(source: Source, scn: Scenario, records: ChunkRecord[], out: RunResult, client: ClientOutput): void {
  const sorted = [...records].sort((a, b) => a.offset - b.offset);
  const got = new Set<number>();
  sorted.forEach((c, k) => {
    const seg = scn.plan[k];
    if (seg === undefined) return;
    got.add(k);
    const item = `chunk ${k}`;
    if (seg.truth === 'warmup') {
      out.excluded.push({ source, scenario: scn.name, item, reason: 'warm-up' });
      out.detail.push(`${source} ${item}: warm-up, not scored (verdict ${c.limit}; ${sharesText(c)})`);
      return;
    }
    out.scored.push({ source, scenario: scn.name, item, truth: seg.truth, verdict: c.limit, gated: scn.limitation === undefined });
    out.detail.push(`${source} ${item}: truth ${seg.truth}, verdict ${c.limit}${c.stalled ? ' (stalled)' : ''}; ${sharesText(c)}`);
  });
  // A segment the client fetched without a chunk record is a miss, not a silent drop.
  for (const e of client.segments) {
    const seg = scn.plan[e.i];
    if (got.has(e.i) || seg === undefined || seg.truth === 'warmup') continue;
    out.scored.push({ source, scenario: scn.name, item: `chunk ${e.i}`, truth: seg.truth, verdict: 'unknown', gated: scn.limitation === undefined });
    out.detail.push(`${source} chunk ${e.i}: truth ${seg.truth}, NO RECORD (scored unknown)`);
  }
}

interface WatchInterval {
  remote: string;
  end: number;
  seconds: number;
  busy: number;
  rwnd: number;
  sndbuf: number;
  /** Inferred sndbuf-limited seconds (agent/model/classify.ts, sendBufferBound). */
  sndbufBound?: number;
}

function scoreIntervals(scn: Scenario, intervals: WatchInterval[], client: ClientOutput, oneWay: number, out: RunResult): void {
  const spans = timeline(scn.plan, client.segments, client.connected, client.done, oneWay);
  for (const iv of intervals.filter((i) => i.remote === client.local).sort((a, b) => a.end - b.end)) {
    const item = `interval ending +${(iv.end - client.connected).toFixed(1)} s`;
    const t = intervalTruth(spans, iv.end, iv.seconds);
    const verdict = intervalVerdict(iv);
    const figs = `busy ${iv.busy.toFixed(3)} rwnd ${iv.rwnd.toFixed(3)} sndbuf ${iv.sndbuf.toFixed(3)}${iv.sndbufBound ? ` (+${iv.sndbufBound.toFixed(3)} bound)` : ''} of ${iv.seconds.toFixed(3)} s`;
    if ('excluded' in t) {
      out.excluded.push({ source: 'watch', scenario: scn.name, item, reason: t.excluded });
      out.detail.push(`watch ${item}: not scored (${t.excluded}); verdict ${verdict}; ${figs}`);
      continue;
    }
    out.scored.push({ source: 'watch', scenario: scn.name, item, truth: t.truth, verdict, gated: scn.limitation === undefined });
    out.detail.push(`watch ${item}: truth ${t.truth}, verdict ${verdict}; ${figs}`);
  }
}

async function buildLab(scn: Scenario): Promise<DelayLab> {
  const lab = await DelayLab.create({ delayMs: scn.delayMs, ...(scn.rate !== undefined && { rate: scn.rate }), lifetimeSeconds: 300 });
  if (scn.wmem !== undefined) await lab.exec('server', ['sysctl', '-q', '-w', `net.ipv4.tcp_wmem=${scn.wmem}`]);
  const cc = scn.cc ?? process.env.LAB_CC;
  if (cc !== undefined) await lab.exec('server', ['sysctl', '-q', '-w', `net.ipv4.tcp_congestion_control=${cc}`]);
  return lab;
}

async function runDirect(scn: Scenario, out: RunResult, log: Log): Promise<void> {
  const lab = await buildLab(scn);
  try {
    const listener = await lab.listen('server');
    const seg = serveSegments(listener, { instrument: true });
    const limitS = planSeconds(scn);
    const agent = lab.spawn('server', ['node', CLI, 'watch', '--listen', '127.0.0.1:9465', '--interval', '1s', '--port', String(seg.port), '--owners', 'off']);
    await waitForLine(agent, /"msg":"watching"/, 15_000);
    const poller = lab.spawn('server', ['python3', PEERS, 'poll', '--url', 'http://127.0.0.1:9465/api/connections?limit=1000', '--port', String(seg.port), '--seconds', String(limitS + 10)]);
    const polled = collectLines(poller);
    const client = await runClient(lab, scn, seg.port, limitS);
    // The last ACKs, the last chunk records, and one more poll of the interval that holds them.
    const deadline = Date.now() + 5000;
    const have = (): number => seg.chunks.get(client.local)?.length ?? 0;
    while (have() < client.segments.length && Date.now() < deadline) await sleep(100);
    await sleep(1500);
    await stopChild(poller, 1000);
    await seg.close();
    scoreChunks('instrument', scn, seg.chunks.get(client.local) ?? [], out, client);
    scoreIntervals(scn, polled.map((l) => JSON.parse(l) as WatchInterval), client, scn.delayMs / 1000, out);
  } finally {
    await lab.teardown();
  }
  log(`  ${scn.name} direct: done`);
}

async function runProxy(scn: Scenario, out: RunResult): Promise<void> {
  const lab = await buildLab(scn);
  const dir = mkdtempSync(join(tmpdir(), 'tcp-chrono-lab-'));
  const events = join(dir, 'chunks.jsonl');
  try {
    const listener = await lab.listen('server');
    const seg = serveSegments(listener, { instrument: false });
    const proxyPort = seg.port === 8080 ? 8081 : 8080;
    const proxy = lab.spawn('server', [
      'node', CLI, 'proxy', '--allow-root',
      '--listen', `${lab.server.address}:${proxyPort}`,
      '--upstream', `${lab.server.address}:${seg.port}`,
      '--events', events, '--diag', 'off', '--metrics-listen', '127.0.0.1:9466', '--stall-after', '30s',
    ]);
    await waitForLine(proxy, /"msg":"proxying"/, 15_000);
    const client = await runClient(lab, scn, proxyPort, planSeconds(scn));
    const read = (): Array<ChunkRecord & { remote: string }> =>
      existsSync(events)
        ? readFileSync(events, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as ChunkRecord & { remote: string })
        : [];
    const deadline = Date.now() + 5000;
    while (read().filter((c) => c.remote === client.local).length < client.segments.length && Date.now() < deadline) await sleep(100);
    await stopChild(proxy, 3000);
    await seg.close();
    scoreChunks('proxy', scn, read().filter((c) => c.remote === client.local), out, client);
  } finally {
    await lab.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface RunOptions {
  quick?: boolean;
  only?: string[];
  modes?: Mode[];
  log?: Log;
}

export async function runAccuracy(opts: RunOptions = {}): Promise<Report> {
  const log = opts.log ?? ((l: string) => process.stdout.write(l + '\n'));
  const t0 = Date.now();
  const runs: RunResult[] = [];
  for (const scn of SCENARIOS) {
    if (opts.only !== undefined && !opts.only.includes(scn.name)) continue;
    const modes = (opts.quick === true ? scn.quick : scn.modes).filter((m) => opts.modes === undefined || opts.modes.includes(m));
    for (const mode of modes) {
      const out: RunResult = { scenario: scn.name, mode, seconds: 0, scored: [], excluded: [], detail: [] };
      const t = Date.now();
      log(`— ${scn.name} (${mode}): ${scn.what}`);
      try {
        if (mode === 'direct') await runDirect(scn, out, () => undefined);
        else if (mode === 'attach') await runAttach(scn, out);
        else if (mode === 'trace') await runTrace(scn, out);
        else await runProxy(scn, out);
      } catch (e) {
        out.error = e instanceof Error ? e.message : String(e);
        log(`  ERROR: ${out.error}`);
      }
      out.seconds = (Date.now() - t) / 1000;
      for (const d of out.detail) log(`  ${d}`);
      runs.push(out);
    }
  }
  const scored = runs.flatMap((r) => r.scored);
  const excluded = runs.flatMap((r) => r.excluded);
  const ran = (s: string): boolean => runs.some((r) => SOURCE_MODE[s as Source] === r.mode);
  const summaries = SOURCES.filter(ran).map((s) => summarize(s, scored, excluded));
  const gated = SOURCES.filter(ran).map((s) => summarize(s, scored, excluded, true));
  return { quick: opts.quick === true, runs, summaries, gated, seconds: (Date.now() - t0) / 1000 };
}

/** The report as text: per scenario and source, then a confusion matrix and accuracy per source. */
export function formatReport(r: Report): string {
  const lines: string[] = [];
  lines.push(`\nAccuracy (${r.quick ? 'CI subset (--quick)' : 'full set'}), ${r.runs.length} runs in ${r.seconds.toFixed(0)} s`);
  lines.push('\nscenario        source      scored correct unknown  not scored');
  for (const run of r.runs) {
    for (const source of SOURCES.filter((s) => SOURCE_MODE[s] === run.mode)) {
      const sc = run.scored.filter((s) => s.source === source);
      const ex = run.excluded.filter((s) => s.source === source).length;
      const ok = sc.filter((s) => s.truth === s.verdict).length;
      const unk = sc.filter((s) => s.verdict === 'unknown').length;
      lines.push(
        `${run.scenario.padEnd(16)}${source.padEnd(12)}${String(sc.length).padStart(6)}${String(ok).padStart(8)}${String(unk).padStart(8)}${String(ex).padStart(12)}${run.error !== undefined ? `  ERROR: ${run.error}` : ''}`,
      );
    }
  }
  for (const s of r.summaries) {
    lines.push(`\n${formatSummary(s)}`);
    lines.push(formatMatrix(s));
  }
  const limited = SCENARIOS.filter((s) => s.limitation !== undefined && r.runs.some((x) => x.scenario === s.name));
  if (limited.length > 0) {
    lines.push('\nScenarios outside the target, with the reason (run and reported above):');
    for (const s of limited) lines.push(`  ${s.name}: ${s.limitation ?? ''}`);
    lines.push('\nWithout them (the target applies to these figures):');
    for (const s of r.gated) lines.push(`  ${formatSummary(s)}`);
  }
  const na = SCENARIOS.flatMap((s) => Object.entries(s.notApplicable ?? {}).map(([m, why]) => `  ${s.name} / ${m}: ${why}`));
  if (na.length > 0 && !r.quick) lines.push('\nNot applicable:', ...na);
  return lines.join('\n');
}

export const TARGET = 0.95;

// ---- attach ---------------------------------------------------------------

type AttachChunk = ChunkRecord & { peer: string; port: number };

/**
 * attach's chunks are the target's sendmsg calls, keyed by byte offset from
 * the moment timestamping was turned on (the client sent its first request
 * only after the agent listed the connection, so offset 0 is the first
 * response's first byte). Each segment is the byte range [header + body] of
 * its response; its chunks are aggregated into one verdict: their
 * chronograph deltas and spans summed (chunk spans overlap by the ACK time of
 * the previous chunk, in the deltas as in the spans, so the sum is a
 * time-weighted mix) and classify() run on the sums. The first chunk's span
 * starts at the previous response's last byte leaving TCP, before the
 * client even asked (think time, the request's trip): it is clipped to start
 * when the request reached the server.
 */
function scoreAttach(scn: Scenario, records: AttachChunk[], client: ClientOutput, oneWay: number, out: RunResult): void {
  const source: Source = 'attach';
  const chunks = records.filter((c) => !c.stalled).sort((a, b) => a.offset - b.offset);
  let at = 0;
  for (const e of [...client.segments].sort((a, b) => a.i - b.i)) {
    const seg = scn.plan[e.i];
    if (seg === undefined) continue;
    const from = at;
    const to = (at += Buffer.byteLength(responseHead(seg.bytes), 'latin1') + seg.bytes);
    const mine = chunks.filter((c) => c.offset >= from && c.offset < to);
    const item = `chunk ${e.i}`;
    const gated = scn.limitation === undefined;
    if (mine.length === 0) {
      if (seg.truth === 'warmup') continue;
      out.scored.push({ source, scenario: scn.name, item, truth: seg.truth, verdict: 'unknown', gated });
      out.detail.push(`attach ${item}: truth ${seg.truth}, NO RECORD for bytes ${from}–${to} (scored unknown)`);
      continue;
    }
    const first = mine[0]!;
    const last = mine[mine.length - 1]!;
    const reqAt = e.tReq + oneWay;
    const clip = Math.min(first.deliveryTime, Math.max(0, reqAt - first.writeTime));
    const sum = (f: (c: AttachChunk) => number): number => mine.reduce((a, c) => a + f(c), 0);
    const span = sum((c) => c.deliveryTime) - clip;
    const busy = sum((c) => c.busy);
    const rwnd = sum((c) => c.rwndLimited);
    const sndbuf = sum((c) => c.sndbufLimited);
    const bound = sum((c) => c.sndbufBound ?? 0);
    const verdict = classify({ span, busy, rwndLimited: rwnd, sndbufLimited: sndbuf, sndbufBound: bound });
    const alone = mine.filter((c) => c.limit === 'unknown').length;
    const covered = last.offset + last.bytes - from;
    const figs =
      `${mine.length} sendmsg chunks (${alone} unknown alone), ${covered}/${to - from} bytes; ` +
      `span ${(span * 1000).toFixed(0)} ms (first clipped ${(clip * 1000).toFixed(0)} ms), busy ${(busy / Math.max(span, 1e-9)).toFixed(2)}, ` +
      `rwnd ${(rwnd / Math.max(busy, 1e-9)).toFixed(2)} sndbuf ${(sndbuf / Math.max(busy, 1e-9)).toFixed(2)}${bound > 0 ? ` (+${(bound / Math.max(busy, 1e-9)).toFixed(2)} bound)` : ''} of busy`;
    if (seg.truth === 'warmup') {
      out.excluded.push({ source, scenario: scn.name, item, reason: 'warm-up' });
      out.detail.push(`attach ${item}: warm-up, not scored (verdict ${verdict}; ${figs})`);
      continue;
    }
    out.scored.push({ source, scenario: scn.name, item, truth: seg.truth, verdict, gated });
    out.detail.push(`attach ${item}: truth ${seg.truth}, verdict ${verdict}; ${figs}`);
  }
}

async function runAttach(scn: Scenario, out: RunResult): Promise<void> {
  const lab = await buildLab(scn);
  const dir = mkdtempSync(join(tmpdir(), 'tcp-chrono-lab-'));
  const events = join(dir, 'chunks.jsonl');
  try {
    const limitS = planSeconds(scn);
    const server = lab.spawn('server', ['node', SEGMENT_SERVER, lab.server.address, '0', String(limitS + 60)]);
    const port = Number(/^listening (\d+)/.exec(await waitForLine(server, /^listening \d+/, 10_000))?.[1]);
    if (server.pid === undefined) throw new Error('segment server has no pid');
    // `ip netns exec` execs the command: the child's pid is the server's.
    const agent = lab.spawn('server', [
      'node', CLI, 'attach', '--pid', String(server.pid), '--events', events,
      '--metrics-listen', '127.0.0.1:0', '--interval', '200ms', '--stall-after', '30s',
    ]);
    const url = String((JSON.parse(await waitForLine(agent, /"msg":"attaching"/, 15_000)) as { metrics: string }).metrics);
    const listed = async (local: string): Promise<boolean> => {
      const { stdout } = await lab.exec('server', ['curl', '-sf', `${url}/api/sockets`]);
      return (JSON.parse(stdout) as Array<{ peer: string }>).some((s) => s.peer === local);
    };
    const client = await runClient(lab, scn, port, limitS, {
      file: join(dir, 'go'),
      ready: async (local) => {
        // The connection is adopted at the agent's next rescan (--interval).
        for (const deadline = Date.now() + 5000; !(await listed(local)); await sleep(50)) {
          if (Date.now() > deadline) throw new Error(`attach did not list ${local} within 5 s`);
        }
      },
    });
    const total = client.segments.reduce((a, e) => a + Buffer.byteLength(responseHead(scn.plan[e.i]?.bytes ?? 0), 'latin1') + (scn.plan[e.i]?.bytes ?? 0), 0);
    const read = (): AttachChunk[] =>
      existsSync(events)
        ? readFileSync(events, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AttachChunk).filter((c) => c.peer === client.local)
        : [];
    const deadline = Date.now() + 5000;
    while (Math.max(0, ...read().map((c) => c.offset + c.bytes)) < total && Date.now() < deadline) await sleep(100);
    await stopChild(agent, 12_000);
    await stopChild(server, 3000);
    scoreAttach(scn, read(), client, scn.delayMs / 1000, out);
  } finally {
    await lab.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- trace ----------------------------------------------------------------

type TraceChunk = ChunkRecord & { peer: string };

/**
 * trace's chunks are whole responses, cut in the kernel where the
 * connection's received bytes grow (a request arrived): the k-th record of
 * the client's connection, in write order, is its k-th segment. (Their
 * offset is 0: the kernel's keys are sequence numbers.)
 */
async function runTrace(scn: Scenario, out: RunResult): Promise<void> {
  const lab = await buildLab(scn);
  const dir = mkdtempSync(join(tmpdir(), 'tcp-chrono-lab-'));
  const events = join(dir, 'chunks.jsonl');
  let agent: ChildProcess | undefined;
  try {
    const limitS = planSeconds(scn);
    const server = lab.spawn('server', ['node', SEGMENT_SERVER, lab.server.address, '0', String(limitS + 60)]);
    const port = Number(/^listening (\d+)/.exec(await waitForLine(server, /^listening \d+/, 10_000))?.[1]);
    if (server.pid === undefined) throw new Error('segment server has no pid');
    // In the host's namespaces: `ip netns exec` remounts /sys, which hides the
    // cgroup-v2 mount; the program follows the cgroup's sockets in every
    // network namespace anyway.
    agent = spawn(process.execPath, [
      CLI, 'trace', '--port', String(port), '--pid', String(server.pid), '--events', events,
      '--listen', '127.0.0.1:0', '--diag', 'off', '--interval', '200ms', '--stall-after', '30s', '--log-format', 'json',
    ], { stdio: ['ignore', 'pipe', 'inherit'] });
    await waitForLine(agent, /"msg":"tracing"/, 15_000);
    const client = await runClient(lab, scn, port, limitS);
    const read = (): TraceChunk[] =>
      existsSync(events)
        ? readFileSync(events, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as TraceChunk).filter((c) => c.peer === client.local)
        : [];
    // The client closed: the last response is reported at the close (or after --quiet).
    const deadline = Date.now() + 5000;
    while (read().length < client.segments.length && Date.now() < deadline) await sleep(100);
    await stopChild(agent, 5000);
    await stopChild(server, 3000);
    scoreChunks('trace', scn, read().sort((a, b) => a.writeTime - b.writeTime), out, client);
  } finally {
    if (agent !== undefined && agent.exitCode === null) agent.kill('SIGKILL');
    await lab.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- main -----------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  const quick = argv.includes('--quick');
  const at = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const only = at('--only')?.split(',');
  const modes = at('--modes')?.split(',') as Mode[] | undefined;
  const json = at('--json');
  const report = await runAccuracy({ quick, ...(only !== undefined && { only }), ...(modes !== undefined && { modes }) });
  process.stdout.write(formatReport(report) + '\n');
  if (json !== undefined) writeFileSync(json, JSON.stringify(report, null, 2));
  const failing = report.gated.filter((s) => !(s.strict >= TARGET));
  const errors = report.runs.filter((r) => r.error !== undefined);
  if (failing.length > 0 || errors.length > 0) {
    process.stdout.write(`\nBELOW TARGET (${TARGET * 100} %, unknown counted as wrong): ${failing.map((s) => s.source).join(', ') || 'none'}; runs with errors: ${errors.length}\n`);
    return 1;
  }
  process.stdout.write(`\nevery source at or above ${TARGET * 100} %\n`);
  return 0;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(2);
    },
  );
}
