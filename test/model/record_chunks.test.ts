// RecordChunker: chunks from SCHED/ACK records alone (no writes seen).
import { describe, expect, it } from 'vitest';
import { RecordChunker } from '../../agent/model/record_chunks.js';
import { isAttachPattern, OPT_RX_FILTER, ATTACH_BASE } from '../../agent/attach/attacher.js';
import type { ChunkRecord } from '../../agent/model/chunks.js';
import type { TxKind, TxRecord } from '../../agent/parse/errqueue.js';
import type { OptStats } from '../../agent/parse/opt_stats.js';
import { SOF, idleFlags, recordFlags } from '../../agent/sources/timestamping.js';

const stats = (busy: number, rwnd = 0, sndbuf = 0): OptStats => ({ busy, rwndLimited: rwnd, sndbufLimited: sndbuf, totalRetrans: 0, problems: [] }) as unknown as OptStats;
const rec = (kind: TxKind, key: number, time: number, s?: OptStats): TxRecord => ({ fd: 1, kind, key: key >>> 0, time, truncated: false, ...(s !== undefined && { stats: s }) });

function chunker(sched = true, stallAfter = 5): { c: RecordChunker; out: ChunkRecord[] } {
  const out: ChunkRecord[] = [];
  return { c: new RecordChunker({ sched, stallAfter, maxPending: 4 }, (r) => out.push(r)), out };
}

describe('RecordChunker', () => {
  it('one chunk per key: bytes since the previous key, clock from the previous SCHED to this ACK', () => {
    const { c, out } = chunker();
    c.onRecords([rec('sched', 999, 10.0, stats(0)), rec('ack', 999, 10.01, stats(0.008))]);
    c.onRecords([rec('sched', 2999, 10.02, stats(0.012)), rec('sched', 3999, 10.5, stats(0.1, 0.05)), rec('ack', 2999, 10.6, stats(0.6, 0.5))]);
    c.onRecords([rec('ack', 3999, 11.0, stats(1.0, 0.9))]);
    expect(out.map((r) => [r.offset, r.bytes, r.exact, r.stalled])).toEqual([
      [0, 1000, true, false],
      [1000, 2000, true, false],
      [3000, 1000, true, false],
    ]);
    // Second chunk: from the first chunk's SCHED (10.0) to its ACK (10.6); chronographs over that span.
    expect(out[1]!.writeTime).toBe(10.0);
    expect(out[1]!.deliveryTime).toBeCloseTo(0.6);
    expect(out[1]!.rwndLimited).toBeCloseTo(0.5);
    expect(out[1]!.limit).toBe('rwnd');
    expect(out[1]!.queueDelay).toBeUndefined();
    expect(out[2]!.writeTime).toBe(10.02);
    expect(c.counters).toMatchObject({ chunks: 3, lost: 0, inexact: 0 });
  });

  it('with the sock_diag table saying the send buffer is bound, unnamed busy time counts as sndbuf', () => {
    let bound = true;
    const out: ChunkRecord[] = [];
    const c = new RecordChunker({ sched: true, stallAfter: 5, maxPending: 4, bufferBound: () => bound }, (r) => out.push(r));
    // 0.45 s all busy, the kernel names 0.1 s sndbuf-limited (BBR pacing behind a capped buffer).
    c.onRecords([rec('sched', 999, 10.0, stats(0)), rec('ack', 999, 10.45, stats(0.45, 0, 0.1))]);
    bound = false;
    c.onRecords([rec('sched', 1999, 10.5, stats(0.5, 0, 0.1)), rec('ack', 1999, 10.95, stats(0.95, 0, 0.2))]);
    expect(out.map((r) => r.limit)).toEqual(['sndbuf', 'network']);
    expect(out[0]!.sndbufBound).toBeCloseTo(0.35);
    expect(out[0]!.sndbufLimited).toBeCloseTo(0.1);
    expect(out[1]!.sndbufBound).toBeUndefined();
  });

  it('counts a lost ACK (the chunk is timed by the next one, inexact) and a lost SCHED', () => {
    const { c, out } = chunker();
    c.onRecords([rec('sched', 99, 1, stats(0)), rec('sched', 199, 1.1, stats(0.1)), rec('ack', 199, 1.2, stats(0.2))]);
    expect(out.map((r) => [r.bytes, r.exact])).toEqual([
      [100, false],
      [100, true],
    ]);
    expect(c.counters.lost).toBe(1);
    c.onRecords([rec('ack', 299, 1.3, stats(0.3))]); // no SCHED for 299
    expect(out.at(-1)).toMatchObject({ offset: 200, bytes: 100, exact: true });
    expect(c.counters.lost).toBe(2);
  });

  it('ACK-only records: the clock runs from the previous ACK', () => {
    const { c, out } = chunker(false);
    c.onRecords([rec('ack', 499, 5.0, stats(0)), rec('ack', 999, 5.5, stats(0.5, 0, 0.4))]);
    expect(out.map((r) => [r.bytes, r.deliveryTime])).toEqual([
      [500, 0],
      [500, 0.5],
    ]);
    expect(out[1]!.limit).toBe('sndbuf');
    expect(c.counters.lost).toBe(0);
  });

  it('keys wrap around 2^32', () => {
    const { c, out } = chunker();
    const top = 2 ** 32 - 100;
    c.onRecords([rec('sched', top, 1, stats(0)), rec('ack', top, 1.1, stats(0.1))]);
    c.onRecords([rec('sched', top + 200, 1.2, stats(0.2)), rec('ack', top + 200, 1.3, stats(0.3))]);
    expect(out.map((r) => r.bytes)).toEqual([top + 1, 200]);
  });

  it('stalls after stallAfter without an ACK; a late ACK is ignored; release counts unfinished', () => {
    const { c, out } = chunker(true, 2);
    c.onRecords([rec('sched', 99, 1, stats(0)), rec('sched', 199, 1.5, stats(0.5, 0.5))]);
    expect(c.checkStalls(3.2)).toBe(1);
    expect(out[0]).toMatchObject({ stalled: true, bytes: 100 });
    c.onRecords([rec('ack', 99, 3, stats(1))]);
    expect(out).toHaveLength(1);
    c.close();
    expect(c.counters.unfinished).toBe(1);
  });

  it('a batch larger than maxPending does not overflow when its chunks are acked in it; a retransmitted SCHED is not a loss', () => {
    const { c, out } = chunker();
    const batch: TxRecord[] = [];
    for (let i = 0; i < 20; i++) batch.push(rec('sched', i * 100 + 99, i, stats(i)), rec('ack', i * 100 + 99, i + 0.5, stats(i + 0.5)));
    batch.push(rec('sched', 1999, 30, stats(30))); // sent again
    c.onRecords(batch);
    expect(out.filter((r) => r.stalled)).toHaveLength(0);
    expect(out).toHaveLength(20);
    expect(c.counters.lost).toBe(0);
  });

  it('overflow reports the oldest as stalled', () => {
    const { c, out } = chunker();
    c.onRecords([0, 1, 2, 3, 4].map((i) => rec('sched', i * 10 + 9, i, stats(i))));
    expect(out).toHaveLength(1);
    expect(c.counters.overflow).toBe(1);
  });
});

describe('the attach flag pattern', () => {
  it('is recognised with the marker, and never confused with instrument() or an application', () => {
    const ours = ATTACH_BASE | SOF.OPT_ID_TCP | OPT_RX_FILTER;
    expect(isAttachPattern(ours | SOF.TX_SCHED | SOF.TX_ACK)).toBe(true);
    expect(isAttachPattern(ours)).toBe(true);
    expect(isAttachPattern(recordFlags(true, false))).toBe(false);
    expect(isAttachPattern(idleFlags(true))).toBe(false);
    expect(isAttachPattern(SOF.SOFTWARE | (1 << 3))).toBe(false);
    expect(isAttachPattern(ours | 1 /* TX_HARDWARE */)).toBe(false);
  });
});
