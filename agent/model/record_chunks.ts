// Chunks from timestamp records alone (attach mode).
//
// In attach mode the agent sees none of the target's writes: the only trace of
// a write is the kernel's records, keyed (OPT_ID) by the offset of the last
// byte of the sendmsg that produced them. So here a chunk is one of the
// target's own sendmsg calls (several, when the kernel merged them into one
// skb, or when a record was lost): the bytes after the previous key up to and
// including this key.
//
// Its clock cannot start at the write (not visible). It starts when the
// previous chunk's last byte left TCP (the previous SCHED record, or with
// ACK-only records the previous ACK): the earliest moment this chunk's first
// byte could leave, had it been written. A target that wrote late shows up as
// app-limited time, which is what it is. The first chunk of a connection
// starts at its own SCHED (or ACK). It ends at the ACK of its last byte. The
// chronograph deltas come from the OPT_STATS of those two records, so the
// verdict covers exactly that span. There is no write time: `writeTime` and
// `lastWriteTime` hold the span's start and `queueDelay` is absent.
//
// Every tagged sendmsg yields one SCHED and one ACK record with the same key,
// so a key seen in one kind and skipped by the other is a lost record (the
// error queue overflowed, or the kernel merged the skb on retransmission):
// counted in `lost`.
import { classify, unnamedBusy, type ChronoDelta, type ClassifyOptions } from './classify.js';
import { chunkFigures, fromOptStats, type ChronoSnapshot, type ChunkRecord } from './chunks.js';
import type { OptStats } from '../parse/opt_stats.js';
import type { TxRecord } from '../parse/errqueue.js';

export interface RecordChunkerOptions extends ClassifyOptions {
  /** SCHED records are requested (else ACK only). */
  sched: boolean;
  /** A chunk whose last byte left TCP but was not acked this long after is reported as stalled (s). */
  stallAfter: number;
  /** Most chunks awaiting their ACK; older ones are reported as stalled. */
  maxPending: number;
  /**
   * Whether the socket's send buffer was bound (classify.ts, sendBufferBound)
   * at the last sock_diag poll of it: the records carry no buffer size, so
   * attach takes the evidence from its connection table (--diag on).
   */
  bufferBound?: () => boolean;
}

export interface RecordChunkerCounters {
  chunks: number;
  stalls: number;
  /** Records missing from one kind while present in the other. */
  lost: number;
  /** Chunks still waiting for their ACK when the socket was released (not stalls). */
  unfinished: number;
  inexact: number;
  overflow: number;
}

interface Mark {
  time: number;
  stats: ChronoSnapshot | undefined;
}

interface Pending {
  id: number;
  offset: number;
  end: number; // unwrapped key of the last byte
  start: Mark;
  sched?: number;
  snd?: number;
  ack?: { time: number; key: number; stats: ChronoSnapshot | undefined };
}

const TWO32 = 2 ** 32;
const HALF = 2 ** 31;
const nonNeg = (x: number): number => (x > 0 ? x : 0);

/** The record's chronographs, or undefined where OPT_STATS carries none. */
export function snapshotOf(s: OptStats | undefined): ChronoSnapshot | undefined {
  if (s === undefined || s.busy === undefined) return undefined;
  return fromOptStats(s);
}

export class RecordChunker {
  readonly counters: RecordChunkerCounters = { chunks: 0, stalls: 0, lost: 0, unfinished: 0, inexact: 0, overflow: 0 };
  private readonly pending: Pending[] = [];
  /** Unwrapped key of the last chunk end seen (-1: none yet). */
  private top = -1;
  /** Last unwrapped key (for unwrapping the next one). */
  private last: number | undefined;
  private nextStart: Mark | undefined;
  private latest: ChronoSnapshot | undefined;
  private nextId = 0;
  /** Highest chunk end already reported (late records for it are ignored). */
  private resolved = -1;

  constructor(
    private readonly opts: RecordChunkerOptions,
    private readonly emit: (c: ChunkRecord) => void,
  ) {}

  get pendingCount(): number {
    return this.pending.length;
  }

  /** Applies records in arrival order (SCHED before ACK for one key, keys increasing per kind). */
  onRecords(records: readonly TxRecord[]): void {
    for (const r of records) {
      const key = this.unwrap(r.key);
      const stats = snapshotOf(r.stats);
      if (stats !== undefined) this.latest = stats;
      if (r.kind === 'sched') this.onSched(key, r.time, stats);
      else if (r.kind === 'ack') this.onAck(key, r.time, stats);
      else this.onSnd(key, r.time);
    }
    this.completeReady();
  }

  /** Reports chunks that left TCP but were not acked within stallAfter; returns how many. */
  checkStalls(now: number): number {
    let n = 0;
    while (this.pending.length > 0) {
      const c = this.pending[0]!;
      const since = c.sched ?? c.start.time;
      if (c.ack !== undefined || now - since < this.opts.stallAfter) break;
      this.pending.shift();
      this.report(c, now, this.latest ?? c.start.stats, true);
      n++;
    }
    return n;
  }

  /** The socket is released: acked chunks are reported, the others counted as unfinished. */
  close(): void {
    for (const c of this.pending.splice(0)) {
      if (c.ack !== undefined) this.report(c, c.ack.time, c.ack.stats ?? this.latest ?? c.start.stats, false);
      else this.counters.unfinished++;
    }
  }

  private onSched(key: number, time: number, stats: ChronoSnapshot | undefined): void {
    if (key <= this.top) {
      // A retransmission (SCHED again), a chunk created by its ACK (SCHED
      // late), or a key inside a chunk whose SCHED we missed: nothing new.
      if (key <= this.resolved) return;
      const c = this.pending.find((p) => p.end === key);
      if (c !== undefined) c.sched ??= time;
      else this.counters.lost++;
      return;
    }
    const c = this.newChunk(key, time, stats);
    c.sched = time;
    this.nextStart = { time, stats };
  }

  private onSnd(key: number, time: number): void {
    const c = this.pending.find((p) => p.end >= key);
    if (c !== undefined) c.snd ??= time;
  }

  private onAck(key: number, time: number, stats: ChronoSnapshot | undefined): void {
    try {
      this.ackRecord(key, time, stats);
      this.completeReady(); // a large batch must not overflow pending with chunks already acked
    } finally {
      // ACK only: the next chunk's clock starts at this ACK.
      if (!this.opts.sched) this.nextStart = { time, stats };
    }
  }

  private ackRecord(key: number, time: number, stats: ChronoSnapshot | undefined): void {
    if (key <= this.resolved) return; // its chunk was already reported (stalled)
    let matched = false;
    for (const c of this.pending) {
      if (c.end > key) break;
      if (c.ack !== undefined) continue;
      c.ack = { time, key, stats };
      if (c.end === key) matched = true;
      else if (this.opts.sched) this.counters.lost++; // this chunk's own ACK never came
    }
    if (key > this.top) {
      // No SCHED for this key (lost, or only ACKs are requested): the ACK defines the chunk.
      if (this.opts.sched) this.counters.lost++;
      const c = this.newChunk(key, time, stats);
      c.ack = { time, key, stats };
      matched = true;
    } else if (!matched && !this.pending.some((p) => p.end === key)) {
      // A key inside a chunk: the SCHED that would have ended a chunk here was lost.
      if (this.opts.sched) this.counters.lost++;
    }
  }

  private newChunk(key: number, time: number, stats: ChronoSnapshot | undefined): Pending {
    if (this.pending.length >= this.opts.maxPending) {
      const old = this.pending.shift()!;
      this.counters.overflow++;
      this.report(old, time, this.latest ?? old.start.stats, true);
    }
    const start = this.nextStart ?? { time, stats };
    const c: Pending = { id: this.nextId++, offset: this.top + 1, end: key, start };
    this.top = key;
    this.pending.push(c);
    return c;
  }

  private completeReady(): void {
    while (this.pending.length > 0 && this.pending[0]!.ack !== undefined) {
      const c = this.pending.shift()!;
      this.report(c, c.ack!.time, c.ack!.stats ?? this.latest ?? c.start.stats, false);
    }
  }

  private report(c: Pending, endTime: number, end: ChronoSnapshot | undefined, stalled: boolean): void {
    const span = nonNeg(endTime - c.start.time);
    const s0 = c.start.stats;
    const d = (f: (x: ChronoSnapshot) => number): number => (s0 !== undefined && end !== undefined ? nonNeg(f(end) - f(s0)) : 0);
    const busy = d((x) => x.busy);
    const rwndLimited = d((x) => x.rwndLimited);
    const sndbufLimited = d((x) => x.sndbufLimited);
    const delta: ChronoDelta = { span, busy, rwndLimited, sndbufLimited };
    if (s0 !== undefined && end !== undefined && this.opts.bufferBound?.() === true) delta.sndbufBound = unnamedBusy(busy, rwndLimited, sndbufLimited);
    if (c.end > this.resolved) this.resolved = c.end;
    const exact = !stalled && c.ack !== undefined && c.ack.key === c.end;
    const rec: ChunkRecord = {
      id: c.id,
      bytes: c.end - c.offset + 1,
      offset: c.offset,
      writeTime: c.start.time,
      lastWriteTime: c.start.time,
      ...(c.sched !== undefined && { schedTime: c.sched }),
      ...(c.snd !== undefined && { sndTime: c.snd }),
      ...(!stalled && c.ack !== undefined && { ackTime: c.ack.time }),
      deliveryTime: span,
      // Without chronographs at both ends nothing can be said.
      ...chunkFigures(delta, d((x) => x.totalRetrans), end, s0 === undefined || end === undefined ? 'unknown' : classify(delta, this.opts)),
      stalled,
      exact,
    };
    if (stalled) this.counters.stalls++;
    else {
      this.counters.chunks++;
      if (!exact) this.counters.inexact++;
    }
    this.emit(rec);
  }

  // Keys are u32 byte offsets: take the value nearest to the last one seen.
  private unwrap(key: number): number {
    if (this.last === undefined) {
      this.last = key;
      return key;
    }
    const diff = ((((key - this.last) % TWO32) + TWO32 + HALF) % TWO32) - HALF;
    const k = this.last + diff;
    if (k > this.last) this.last = k;
    return k;
  }
}
