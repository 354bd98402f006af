// Ground truth from what the scenario did, and the scoring of verdicts
// against it. Pure functions: the runner (lab/accuracy.ts) feeds them.
import { APP_IDLE_SHARE, classify, LIMITS, NAMED_LIMIT_SHARE, type Limit } from '../agent/model/classify.js';
import type { Cause, Segment, Truth } from './scenarios.js';

/** What the client printed for one segment (lab/peers.py), CLOCK_REALTIME seconds. */
export interface SegmentEvent {
  i: number;
  tReq: number;
  tDone: number;
  /** [reader stops, reader resumes, receive queue full (window closed)] */
  stall: [number, number, number?] | null;
}

export interface Span {
  from: number;
  to: number;
  cause: Truth;
}

/**
 * The connection's timeline as the server's socket lives it: the client's
 * times shifted by the one-way delay (a request reaches the server, and the
 * last byte's ACK comes back, one way later). Gaps are app-limited.
 */
export function timeline(plan: Segment[], events: SegmentEvent[], connected: number, done: number, oneWay: number): Span[] {
  const spans: Span[] = [];
  let t = connected + oneWay;
  const push = (from: number, to: number, cause: Truth): void => {
    if (to > from) spans.push({ from, to, cause });
  };
  for (const e of [...events].sort((a, b) => a.i - b.i)) {
    const seg = plan[e.i];
    if (seg === undefined) continue;
    const from = e.tReq + oneWay;
    const to = e.tDone + oneWay;
    push(t, from, 'app');
    const transfer = seg.transfer ?? seg.truth;
    if (e.stall !== null) {
      // Until the receive queue is full the sender still sends: rwnd from then.
      const full = e.stall[2] ?? e.stall[0];
      push(from, full + oneWay, transfer);
      push(full + oneWay, e.stall[1] + oneWay, 'rwnd');
      push(e.stall[1] + oneWay, to, transfer);
    } else {
      push(from, to, transfer);
    }
    t = to;
  }
  push(t, done + oneWay, 'app');
  return spans;
}

export type IntervalTruth = { truth: Cause } | { excluded: string };

/** Share of covered time an interval's dominant cause must have to be its truth. */
export const DOMINANT = 0.6;

/**
 * How close an interval's true shares may come to one of classify()'s
 * thresholds (idle above half the span: app; rwnd or sndbuf for a third of
 * busy time: that limit) and still be scored. The timeline's edges are
 * approximate: a stall's rwnd time begins when the client's receive queue
 * stops growing, but the kernel is window-limited while the window shrinks
 * before that (up to 0.2 s at 20 Mbit/s and 512 KiB), and a slow producer's
 * pieces keep the sender busy for part of the time the plan calls app. An
 * interval of 62 % network and 38 % stall is the classifier's rwnd (a third
 * named) and the dominant rule's network: neither answer is wrong, so it is
 * not scored.
 */
export const THRESHOLD_MARGIN = 0.2;

/**
 * The truth of a watch interval [end − seconds, end]: the cause covering most
 * of it, if it covers at least DOMINANT of the part inside the connection's
 * timeline and its shares are not within THRESHOLD_MARGIN of a threshold of
 * the verdict; otherwise excluded (a cause switch inside the interval,
 * warm-up, or the interval lies mostly outside the connection's life).
 */
export function intervalTruth(spans: Span[], end: number, seconds: number): IntervalTruth {
  const start = end - seconds;
  const cover = new Map<Truth, number>();
  let covered = 0;
  for (const s of spans) {
    const o = Math.min(end, s.to) - Math.max(start, s.from);
    if (o <= 0) continue;
    cover.set(s.cause, (cover.get(s.cause) ?? 0) + o);
    covered += o;
  }
  if (covered < 0.5 * seconds) return { excluded: 'outside the connection' };
  let best: Truth = 'app';
  let bestT = -1;
  for (const [c, v] of cover) if (v > bestT) [best, bestT] = [c, v];
  if (best === 'warmup') return { excluded: 'warm-up' };
  if (bestT < DOMINANT * covered) return { excluded: 'cause switch inside the interval' };
  if (nearThreshold(cover)) return { excluded: 'cause switch near a threshold of the verdict' };
  return { truth: best };
}

// Whether the true shares lie within THRESHOLD_MARGIN of a threshold of classify().
function nearThreshold(cover: Map<Truth, number>): boolean {
  const app = cover.get('app') ?? 0;
  const rwnd = cover.get('rwnd') ?? 0;
  const sndbuf = cover.get('sndbuf') ?? 0;
  const busy = rwnd + sndbuf + (cover.get('network') ?? 0);
  const known = app + busy; // warm-up time has no known cause
  const near = (share: number, threshold: number): boolean => Math.abs(share - threshold) < THRESHOLD_MARGIN;
  if (known > 0 && near(app / known, APP_IDLE_SHARE)) return true;
  return busy > 0 && (near(rwnd / busy, NAMED_LIMIT_SHARE) || near(sndbuf / busy, NAMED_LIMIT_SHARE));
}

/** One scored item: a chunk or an interval. */
export interface Scored {
  source: string;
  scenario: string;
  item: string;
  truth: Cause;
  verdict: Limit;
  /** Counts toward the pass/fail target (false for scenarios with a documented limitation). */
  gated: boolean;
}

export interface Excluded {
  source: string;
  scenario: string;
  item: string;
  reason: string;
}

export const CAUSES: readonly Cause[] = ['rwnd', 'sndbuf', 'network', 'app'];

export interface SourceSummary {
  source: string;
  n: number;
  correct: number;
  unknown: number;
  /** correct / n: an unknown verdict counts as not correct (the operator got no answer). */
  strict: number;
  /** correct / (n − unknown): accuracy of the verdicts that were given. */
  decided: number;
  /** matrix[truth][verdict] */
  matrix: Record<Cause, Record<Limit, number>>;
  excluded: number;
}

export function summarize(source: string, scored: Scored[], excluded: Excluded[], gatedOnly = false): SourceSummary {
  const mine = scored.filter((s) => s.source === source && (!gatedOnly || s.gated));
  const matrix = Object.fromEntries(CAUSES.map((c) => [c, Object.fromEntries(LIMITS.map((l) => [l, 0]))])) as SourceSummary['matrix'];
  for (const s of mine) matrix[s.truth][s.verdict]++;
  const correct = mine.filter((s) => s.truth === s.verdict).length;
  const unknown = mine.filter((s) => s.verdict === 'unknown').length;
  return {
    source,
    n: mine.length,
    correct,
    unknown,
    strict: mine.length > 0 ? correct / mine.length : NaN,
    decided: mine.length - unknown > 0 ? correct / (mine.length - unknown) : NaN,
    matrix,
    excluded: excluded.filter((e) => e.source === source).length,
  };
}

/** The agent's own rule for a watch interval (the same classify() the chunk records use). */
export function intervalVerdict(i: { seconds: number; busy: number; rwnd: number; sndbuf: number; sndbufBound?: number }): Limit {
  return classify({ span: i.seconds, busy: i.busy, rwndLimited: i.rwnd, sndbufLimited: i.sndbuf, sndbufBound: i.sndbufBound ?? 0 });
}

const pct = (x: number): string => (Number.isNaN(x) ? '—' : `${(100 * x).toFixed(1)} %`);

/** Plain-text confusion matrix (rows: truth; columns: verdict, unknown its own column). */
export function formatMatrix(s: SourceSummary): string {
  const cols = LIMITS;
  const w = 9;
  const lines = [`${'truth \\ verdict'.padEnd(16)}${cols.map((c) => c.padStart(w)).join('')}`];
  for (const t of CAUSES) {
    const row = s.matrix[t];
    if (cols.every((c) => row[c] === 0)) continue;
    lines.push(`${t.padEnd(16)}${cols.map((c) => String(row[c]).padStart(w)).join('')}`);
  }
  return lines.join('\n');
}

export function formatSummary(s: SourceSummary): string {
  return (
    `${s.source}: ${s.correct}/${s.n} correct — ${pct(s.strict)} counting unknown as wrong, ` +
    `${pct(s.decided)} of decided verdicts; ${s.unknown} unknown; ${s.excluded} not scored (warm-up, cause switch, outside)`
  );
}

export { pct };
