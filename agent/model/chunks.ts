// Chunk tracking: maps application units of data (one write, or the writes of
// one unit such as an HTTP response) to the kernel's timestamp records.
//
// Records are keyed by the offset of the last byte of a sendmsg (OPT_ID). The
// kernel coalesces and splits writes, and drops a record now and then, so a
// chunk is matched to the FIRST record of each kind whose key is at or past the
// chunk's last byte: TCP delivers in order, so that byte left (SCHED/SND) or
// was acked (ACK) no later than the record says. `exact` tells whether the
// record was keyed at the chunk's own last byte.
import { boundSeconds, classify, shares, type ChronoDelta, type ClassifyOptions, type Limit, type Shares } from './classify.js';
import type { TxRecord } from '../parse/errqueue.js';

/** Cumulative chronograph figures at one instant (from tcp_info or OPT_STATS). */
export interface ChronoSnapshot {
  busy: number; // seconds
  rwndLimited: number;
  sndbufLimited: number;
  totalRetrans: number; // segments
  deliveryRate?: number; // bytes/s
  cwnd?: number; // segments
  srtt?: number; // seconds
  minRtt?: number;
  /** sk_sndbuf and the sending MSS, bytes: the evidence for classify()'s sndbufBound (instrument() reads them at a chunk's start). */
  sndbuf?: number;
  mss?: number;
}

export interface ChunkRecord {
  /** Sequence number of the chunk on its connection (0, 1, …), sampled or not. */
  id: number;
  label?: string;
  bytes: number;
  /** Offset of the chunk's first byte in the bytes written since instrumentation. */
  offset: number;
  /** First byte handed to the socket (CLOCK_REALTIME, seconds). */
  writeTime: number;
  /** Last byte handed to the socket. */
  lastWriteTime: number;
  /** Last byte left the TCP queue. */
  schedTime?: number;
  /** Last byte left the host (only when SND records are requested). */
  sndTime?: number;
  /** Last byte acked by the peer. */
  ackTime?: number;
  /** schedTime − lastWriteTime: how long the chunk's end waited in TCP. */
  queueDelay?: number;
  /** ackTime − writeTime (for a stall: time until it was reported). */
  deliveryTime: number;
  /** Chronograph deltas over the chunk, seconds. */
  busy: number;
  rwndLimited: number;
  sndbufLimited: number;
  /**
   * Busy seconds the kernel left unnamed while the send buffer was smaller
   * than one congestion window and this chunk overflowed it: counted
   * sndbuf-limited by the verdict and shares (classify.ts, sendBufferBound).
   */
  sndbufBound?: number;
  appLimited: number;
  retransmits: number;
  deliveryRate?: number;
  cwnd?: number;
  srtt?: number;
  limit: Limit;
  shares: Shares;
  stalled: boolean;
  /** The ACK record was keyed at this chunk's own last byte. */
  exact: boolean;
}

interface Pending {
  id: number;
  label: string | undefined;
  offset: number;
  bytes: number;
  writeTime: number;
  lastWriteTime: number;
  start: ChronoSnapshot;
  closed: boolean;
  /** The unit announced that its remaining writes are being made (finishing()). */
  finishing: boolean;
  // Always present (undefined until a record comes): one hidden class for every chunk.
  sched: number | undefined;
  snd: number | undefined;
  ack: { time: number; key: number; stats: ChronoSnapshot | undefined } | undefined;
}

export interface TrackerOptions extends ClassifyOptions {
  /** Report a chunk as stalled when its last byte is not acked this long after it was written (s). */
  stallAfter: number;
  /** Most chunks awaiting records per connection; older ones are reported as stalled. */
  maxPending: number;
}

export interface TrackerEvents {
  chunk(c: ChunkRecord): void;
  stall(c: ChunkRecord): void;
}

const TWO32 = 2 ** 32;

interface Unit {
  id: number;
  label: string | undefined;
  sampled: boolean;
  finishing: boolean;
  chunk: Pending | undefined; // created by the unit's first write
}

export class ChunkTracker {
  /** Bytes handed to the socket since instrumentation: the key space of the records. */
  written = 0;
  private nextId = 0;
  private readonly pending: Pending[] = [];
  private unit: Unit | undefined;
  readonly counters = { chunks: 0, stalls: 0, inexact: 0, overflow: 0, missingStats: 0, lostRecords: 0 };
  /** Last bytes of flagged hand-overs whose ACK record has not come yet (ascending), from `expectedHead`. */
  private expected: number[] = [];
  private expectedHead = 0;
  /** The last byte of the latest flagged hand-over (-1: none): records were asked for up to there. */
  private lastFlagged = -1;
  /** A drain found the error queue at capacity, and no ACK record has arrived from a drain below it since. */
  private queueWasFull = false;

  constructor(
    private readonly opts: TrackerOptions,
    private readonly events: TrackerEvents,
  ) {}

  /** Starts a unit: the writes from here to the next startUnit()/endUnit() form one chunk. */
  startUnit(label: string | undefined, sampled: boolean): void {
    this.endUnit();
    this.unit = { id: this.nextId++, label, sampled, finishing: false, chunk: undefined };
  }

  /** Closes the current unit; later writes are chunks of their own until the next unit. */
  endUnit(): void {
    const c = this.unit?.chunk;
    this.unit = undefined;
    if (c === undefined) return;
    c.closed = true;
    this.completeReady();
  }

  /** Whether a unit is open: its id, whether it is sampled, whether it is finishing. */
  get openUnit(): { readonly id: number; readonly sampled: boolean; readonly finishing: boolean } | undefined {
    return this.unit;
  }

  /**
   * Units without per-write accounting (instrument({ unitsOnly })): the open
   * unit's first byte is handed to the socket at `now`, at offset `written`.
   * Its chunk starts here, with `snapshot()` for its starting figures; later
   * bytes reach it through advanceTo(). No-op for an unsampled unit or one
   * whose chunk has started.
   */
  beginChunk(now: number, snapshot: () => ChronoSnapshot): void {
    const u = this.unit;
    if (u === undefined || !u.sampled || u.chunk !== undefined) return;
    u.chunk = this.newPending(u.id, u.label, this.written, now, snapshot());
    u.chunk.finishing = u.finishing;
  }

  /**
   * Units without per-write accounting: the bytes written up to offset `to`
   * (the socket's own count). Those since the last call belong to the open
   * unit's chunk, written last at `now`; outside a unit to no chunk (skipped,
   * no id taken). Returns `written`.
   */
  advanceTo(to: number, now: number, snapshot: () => ChronoSnapshot): number {
    const bytes = to - this.written;
    if (bytes > 0) {
      if (this.unit === undefined) this.skip(bytes);
      else this.write(bytes, now, false, snapshot);
    }
    return this.written;
  }

  /** The open unit's chunk's last byte (-1: no chunk or no bytes yet). */
  get openChunkEnd(): number {
    const c = this.unit?.chunk;
    return c === undefined || c.bytes === 0 ? -1 : c.offset + c.bytes - 1;
  }

  /** The open unit's remaining data is being written now. */
  finishing(): void {
    if (this.unit !== undefined) this.unit.finishing = true;
    if (this.unit?.chunk !== undefined) this.unit.chunk.finishing = true;
  }

  /**
   * Whether bytes [from, to) about to be handed to the kernel need timestamp
   * records: they hold the last byte of a tracked chunk, or belong to a tracked
   * unit whose end is not known yet (all of its writes, or with `finalOnly`
   * only those after finishing()).
   */
  wantsRecords(from: number, to: number, finalOnly: boolean): boolean {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const c = this.pending[i]!;
      const end = c.offset + c.bytes;
      if (end <= from) break;
      if (c.offset >= to) continue;
      if (c.closed ? end - 1 < to : !finalOnly || c.finishing) return true;
    }
    return false;
  }

  /** Bytes reached the kernel that no write accounted for: skip them (they belong to no chunk). */
  skip(bytes: number): void {
    this.written += bytes;
  }

  /** Whether write() with this sampling decision will track the bytes (callers can skip reading the clock). */
  tracks(sampleWrite: boolean): boolean {
    return this.unit === undefined ? sampleWrite : this.unit.sampled;
  }

  /**
   * Accounts for `bytes` handed to the socket at `now`. Outside a unit each
   * write is its own chunk, tracked when `sampleWrite` is true. `snapshot` is
   * called once per new tracked chunk for its starting figures.
   */
  write(bytes: number, now: number, sampleWrite: boolean, snapshot: () => ChronoSnapshot): void {
    if (bytes <= 0) return;
    const offset = this.written;
    this.written += bytes;
    let c: Pending | undefined;
    if (this.unit === undefined) {
      const id = this.nextId++;
      if (!sampleWrite) return;
      c = this.newPending(id, undefined, offset, now, snapshot());
      c.closed = true; // a write-sized chunk ends with its write
    } else {
      if (!this.unit.sampled) return;
      c = this.unit.chunk ??= this.newPending(this.unit.id, this.unit.label, offset, now, snapshot());
      c.finishing = this.unit.finishing;
    }
    c.bytes += bytes;
    c.lastWriteTime = now;
    // Records seen so far covered an earlier last byte only.
    c.sched = c.snd = c.ack = undefined;
  }

  /**
   * A hand-over whose sendmsg calls request records ends at `lastByte`: its
   * last sendmsg gets an ACK record keyed there (earlier ones of a partial
   * write, keyed inside it, are not expected). ACK records arrive in key
   * order (cumulative acks), so one keyed past `lastByte` while its own never
   * came means that record is gone. Bounded: the oldest expectations are
   * forgotten, uncounted, beyond MAX_EXPECTED.
   */
  expectAck(lastByte: number): void {
    if (lastByte > this.lastFlagged) this.lastFlagged = lastByte;
    this.expected.push(lastByte);
    if (this.expected.length - this.expectedHead > MAX_EXPECTED) this.expectedHead++;
    if (this.expectedHead > 4096 && this.expectedHead * 2 > this.expected.length) {
      this.expected = this.expected.slice(this.expectedHead);
      this.expectedHead = 0;
    }
  }

  /**
   * Applies timestamp records (in arrival order). `queueFull`: this drain
   * found the socket's error queue at capacity (the kernel drops new records
   * silently then). ACK records skipped over are counted in `lostRecords`
   * when a full queue explains them (this drain or the one before the ACK
   * that reveals the gap); otherwise the kernel merged the hand-over's bytes
   * into a later write's segment, which leaves the same gap by design.
   */
  onRecords(records: readonly TxRecord[], nowSnapshot: () => ChronoSnapshot, queueFull = false): void {
    if (this.written === 0) return;
    if (queueFull) this.queueWasFull = true;
    let sawAck = false;
    for (const r of records) {
      const last = this.unwrap(r.key);
      if (r.kind === 'ack') {
        sawAck = true;
        let skipped = 0;
        while (this.expectedHead < this.expected.length && this.expected[this.expectedHead]! < last) {
          this.expectedHead++;
          skipped++;
        }
        if (this.expectedHead < this.expected.length && this.expected[this.expectedHead] === last) this.expectedHead++;
        if (skipped > 0 && this.queueWasFull) this.counters.lostRecords += skipped;
      }
      // The chunks this record covers, newest first. A chunk that already has
      // this kind of record got it from one that covered every older chunk as
      // well (only the newest chunk grows and loses its records), so the walk
      // stops there: chunks SCHED'd but not yet acked are not walked again by
      // every SCHED record (per-write chunks keep dozens in flight).
      let stats: ChronoSnapshot | undefined;
      for (let i = this.coveredBy(last) - 1; i >= 0; i--) {
        const c = this.pending[i]!;
        if (r.kind === 'sched') {
          if (c.sched !== undefined) break;
          c.sched = r.time;
        } else if (r.kind === 'snd') {
          if (c.snd !== undefined) break;
          c.snd = r.time;
        } else {
          if (c.ack !== undefined) break;
          if (stats === undefined && r.stats !== undefined) stats = fromOptStats(r.stats);
          c.ack = { time: r.time, key: last, stats };
        }
      }
    }
    if (sawAck && !queueFull) this.queueWasFull = false;
    this.completeReady(nowSnapshot);
  }

  /**
   * How many chunks from the head end at or before `last`: a binary search,
   * pending being in offset order. A unit's chunk with no bytes yet (the
   * newest, unitsOnly) ends nowhere: it is never covered.
   */
  private coveredBy(last: number): number {
    let lo = 0;
    let hi = this.pending.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.pending[mid]!;
      if (c.bytes > 0 && c.offset + c.bytes - 1 <= last) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Reports chunks unacked for longer than stallAfter; returns how many.
   * `ackedUpTo()`: the offset below which the kernel has acknowledged every
   * byte (0: unknown), asked once per call and only if a chunk needs it; a
   * chunk it covers whose record was lost is counted, not reported (lost()).
   */
  checkStalls(now: number, nowSnapshot: () => ChronoSnapshot, ackedUpTo?: () => number): number {
    let n = 0;
    let acked: number | undefined;
    for (let i = 0; i < this.pending.length; ) {
      const c = this.pending[i]!;
      if (c.bytes > 0 && c.ack === undefined && now - c.lastWriteTime >= this.opts.stallAfter) {
        this.pending.splice(i, 1);
        // A stalled unit goes on: its later writes form a continuation chunk.
        if (c === this.unit?.chunk) this.unit.chunk = undefined;
        // flagged() first: the kernel is asked only when a lost record is possible.
        if (this.flagged(c) && this.lost(c, (acked ??= ackedUpTo?.() ?? 0))) continue;
        this.report(c, now, nowSnapshot(), true);
        n++;
      } else i++;
    }
    return n;
  }

  /** Chunks still waiting for records (bounded by maxPending). */
  get pendingCount(): number {
    return this.pending.length;
  }

  /** Oldest unacked write time, for scheduling the stall check. */
  oldestUnacked(): number | undefined {
    for (const c of this.pending) if (c.bytes > 0 && c.ack === undefined) return c.lastWriteTime;
    return undefined;
  }

  /**
   * The socket is gone: chunks that never got their ACK are reported as
   * stalled, the rest completed. `ackedUpTo`: as in checkStalls, taken just
   * before the fd closed.
   */
  flush(now: number, lastSnapshot: ChronoSnapshot | undefined, ackedUpTo = 0): void {
    this.unit = undefined;
    const left = this.pending.splice(0);
    for (const c of left) {
      if (c.bytes === 0) continue;
      if (c.ack !== undefined) this.report(c, c.ack.time, c.ack.stats ?? lastSnapshot ?? c.start, false);
      else if (!this.lost(c, ackedUpTo)) this.report(c, now, lastSnapshot ?? c.start, true);
    }
  }

  // A record was asked for at or past the chunk's last byte.
  private flagged(c: Pending): boolean {
    return this.lastFlagged >= c.offset + c.bytes - 1;
  }

  /**
   * A chunk without its ACK record whose bytes the kernel acknowledged (below
   * `ackedUpTo`) and for which a record was asked: the record was lost (a full
   * error queue, and nothing after it to reveal the gap). Counted in
   * `lostRecords`, not reported: its delivery time is unknown. A chunk no
   * record was asked for (a response cut short before its final write) is
   * not lost: it stays a stall.
   */
  private lost(c: Pending, ackedUpTo: number): boolean {
    if (!this.flagged(c) || c.offset + c.bytes > ackedUpTo) return false;
    this.counters.lostRecords++;
    return true;
  }

  private newPending(id: number, label: string | undefined, offset: number, now: number, start: ChronoSnapshot): Pending {
    if (this.pending.length >= this.opts.maxPending) {
      // Memory stays bounded: the oldest waiting chunk is given up on, reported as stalled.
      const old = this.pending.shift()!;
      this.counters.overflow++;
      if (old === this.unit?.chunk) this.unit.chunk = undefined;
      this.report(old, now, old.start, true);
    }
    const c: Pending = { id, label, offset, bytes: 0, writeTime: now, lastWriteTime: now, start, closed: false, finishing: false, sched: undefined, snd: undefined, ack: undefined };
    this.pending.push(c);
    return c;
  }

  private completeReady(nowSnapshot?: () => ChronoSnapshot): void {
    while (this.pending.length > 0) {
      const c = this.pending[0]!;
      if (!c.closed || c.ack === undefined) return;
      this.pending.shift();
      let end = c.ack.stats;
      if (end === undefined) {
        this.counters.missingStats++;
        end = nowSnapshot?.() ?? c.start;
      }
      this.report(c, c.ack.time, end, false);
    }
  }

  private report(c: Pending, endTime: number, end: ChronoSnapshot, stalled: boolean): void {
    const span = Math.max(0, endTime - c.writeTime);
    const busy = nonNeg(end.busy - c.start.busy);
    const rwndLimited = nonNeg(end.rwndLimited - c.start.rwndLimited);
    const sndbufLimited = nonNeg(end.sndbufLimited - c.start.sndbufLimited);
    const delta: ChronoDelta = { span, busy, rwndLimited, sndbufLimited };
    // The buffer the chunk was written into, against the window of that
    // moment; a chunk larger than the buffer made its writer wait for space.
    const s0 = c.start;
    if (s0.sndbuf !== undefined && s0.cwnd !== undefined && s0.mss !== undefined) {
      delta.sndbufBound = boundSeconds(busy, rwndLimited, sndbufLimited, { sndbuf: s0.sndbuf, cwnd: s0.cwnd, mss: s0.mss, full: c.bytes > s0.sndbuf });
    }
    const exact = !stalled && c.ack !== undefined && c.ack.key === c.offset + c.bytes - 1;
    // Built by assignment, not spreads (once per chunk, often before the JIT
    // has optimised this): the same fields in the same order.
    const rec = { id: c.id } as ChunkRecord;
    if (c.label !== undefined) rec.label = c.label;
    rec.bytes = c.bytes;
    rec.offset = c.offset;
    rec.writeTime = c.writeTime;
    rec.lastWriteTime = c.lastWriteTime;
    if (c.sched !== undefined) {
      rec.schedTime = c.sched;
      rec.queueDelay = Math.max(0, c.sched - c.lastWriteTime);
    }
    if (c.snd !== undefined) rec.sndTime = c.snd;
    if (!stalled && c.ack !== undefined) rec.ackTime = c.ack.time;
    rec.deliveryTime = span;
    putChunkFigures(rec, delta, nonNeg(end.totalRetrans - c.start.totalRetrans), end, classify(delta, this.opts));
    rec.stalled = stalled;
    rec.exact = exact;
    if (stalled) {
      this.counters.stalls++;
      this.events.stall(rec);
    } else {
      this.counters.chunks++;
      if (!exact) this.counters.inexact++;
      this.events.chunk(rec);
    }
  }

  // Keys are u32 offsets; the record's last byte is the one below `written`
  // that is congruent to the key (records never run ahead of the writes).
  private unwrap(key: number): number {
    const top = this.written - 1;
    return top - ((((top - key) % TWO32) + TWO32) % TWO32);
  }
}

const nonNeg = (x: number): number => (x > 0 ? x : 0);

/** Most flagged hand-overs awaiting their ACK record (a few MB in flight at 64 KiB writes is under 100). */
const MAX_EXPECTED = 65_536;

/**
 * The figures part of a chunk record, from its chronograph deltas and the
 * snapshot at its end (also attach's RecordChunker): one place, one order.
 */
export function chunkFigures(
  delta: ChronoDelta,
  retransmits: number,
  end: ChronoSnapshot | undefined,
  limit: Limit,
): ChunkFigures {
  return putChunkFigures({} as ChunkFigures, delta, retransmits, end, limit);
}

type ChunkFigures = Pick<ChunkRecord, 'busy' | 'rwndLimited' | 'sndbufLimited' | 'sndbufBound' | 'appLimited' | 'retransmits' | 'deliveryRate' | 'cwnd' | 'srtt' | 'limit' | 'shares'>;

/** chunkFigures() written onto `out` (a record being built), in the same order. */
function putChunkFigures<T extends ChunkFigures>(out: T, delta: ChronoDelta, retransmits: number, end: ChronoSnapshot | undefined, limit: Limit): T {
  out.busy = delta.busy;
  out.rwndLimited = delta.rwndLimited;
  out.sndbufLimited = delta.sndbufLimited;
  if (delta.sndbufBound !== undefined && delta.sndbufBound > 0) out.sndbufBound = delta.sndbufBound;
  out.appLimited = nonNeg(delta.span - Math.min(delta.busy, delta.span));
  out.retransmits = retransmits;
  if (end?.deliveryRate !== undefined) out.deliveryRate = end.deliveryRate;
  if (end?.cwnd !== undefined) out.cwnd = end.cwnd;
  if (end?.srtt !== undefined) out.srtt = end.srtt;
  out.limit = limit;
  out.shares = shares(delta);
  return out;
}

/** The chronograph snapshot in a record's OPT_STATS (also attach's RecordChunker). */
export function fromOptStats(s: NonNullable<TxRecord['stats']>): ChronoSnapshot {
  const out: ChronoSnapshot = { busy: s.busy ?? 0, rwndLimited: s.rwndLimited ?? 0, sndbufLimited: s.sndbufLimited ?? 0, totalRetrans: s.totalRetrans ?? 0 };
  if (s.deliveryRate !== undefined) out.deliveryRate = s.deliveryRate;
  if (s.sndCwnd !== undefined) out.cwnd = s.sndCwnd;
  if (s.srtt !== undefined) out.srtt = s.srtt;
  if (s.minRtt !== undefined) out.minRtt = s.minRtt;
  return out;
}
