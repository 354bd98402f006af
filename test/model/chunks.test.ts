// Chunk tracking against synthetic record streams (pure model; the real-kernel
// cases are in test/instrument/). Times are seconds, keys are byte offsets.
import { describe, expect, it } from 'vitest';
import { ChunkTracker, type ChronoSnapshot, type ChunkRecord } from '../../agent/model/chunks.js';
import type { TxRecord } from '../../agent/parse/errqueue.js';

const snap = (busy: number, rwnd = 0, sndbuf = 0, retrans = 0): ChronoSnapshot => ({
  busy,
  rwndLimited: rwnd,
  sndbufLimited: sndbuf,
  totalRetrans: retrans,
});
const stats = (busy: number, rwnd = 0, sndbuf = 0, retrans = 0) =>
  ({ busy, rwndLimited: rwnd, sndbufLimited: sndbuf, totalRetrans: retrans, deliveryRate: 1e6, sndCwnd: 10, unknown: [] }) as unknown as TxRecord['stats'];
const rec = (kind: TxRecord['kind'], key: number, time: number, s?: TxRecord['stats']): TxRecord => ({
  fd: 3,
  kind,
  key: key >>> 0,
  time,
  ...(s !== undefined && { stats: s }),
  truncated: false,
});

function setup(stallAfter = 10, maxPending = 8) {
  const chunks: ChunkRecord[] = [];
  const stalls: ChunkRecord[] = [];
  const t = new ChunkTracker({ stallAfter, maxPending }, { chunk: (c) => chunks.push(c), stall: (c) => stalls.push(c) });
  return { t, chunks, stalls };
}

describe('ChunkTracker', () => {
  it('one write is one chunk, matched by the key of its last byte', () => {
    const { t, chunks } = setup();
    t.write(1000, 100, true, () => snap(1));
    t.write(500, 100.5, true, () => snap(1.2));
    t.onRecords([rec('sched', 999, 100.001), rec('ack', 999, 100.3, stats(1.3, 0.2))], () => snap(9));
    expect(chunks).toHaveLength(1);
    t.onRecords([rec('sched', 1499, 100.6), rec('ack', 1499, 101.5, stats(2.2, 0.9))], () => snap(9));
    expect(chunks.map((c) => [c.id, c.offset, c.bytes])).toEqual([
      [0, 0, 1000],
      [1, 1000, 500],
    ]);
    const c = chunks[1]!;
    expect(c.queueDelay).toBeCloseTo(0.1);
    expect(c.deliveryTime).toBeCloseTo(1.0);
    expect(c.busy).toBeCloseTo(1.0);
    expect(c.rwndLimited).toBeCloseTo(0.9);
    expect(c.appLimited).toBeCloseTo(0);
    expect(c.limit).toBe('rwnd');
    expect(c.exact).toBe(true);
  });

  it('a unit spans several writes; writes coalesced into one record still map', () => {
    const { t, chunks } = setup();
    t.startUnit('seg', true);
    t.write(100, 1, false, () => snap(0));
    t.write(100, 1.01, false, () => snap(0));
    // An ACK for the first write alone must not complete the unit.
    t.onRecords([rec('ack', 99, 1.02, stats(0))], () => snap(0));
    t.write(100, 1.5, false, () => snap(0));
    t.startUnit('seg', true); // closes the first unit
    t.write(50, 2, false, () => snap(0.5));
    // One record covers the end of both units (kernel coalesced the writes).
    t.onRecords([rec('sched', 349, 2.001), rec('ack', 349, 2.1, stats(0.6))], () => snap(0));
    expect(chunks).toHaveLength(1); // the second unit is still open
    t.endUnit();
    expect(chunks.map((c) => [c.label, c.bytes, c.exact])).toEqual([
      ['seg', 300, false],
      ['seg', 50, true],
    ]);
    expect(chunks[0]!.ackTime).toBe(2.1);
    expect(chunks[0]!.appLimited).toBeCloseTo(1.1 - 0.6);
  });

  it('a missing record is absorbed by the next one', () => {
    const { t, chunks } = setup();
    for (let i = 0; i < 4; i++) t.write(10, i, true, () => snap(0));
    t.onRecords([rec('ack', 9, 0.1, stats(0)), rec('ack', 39, 3.1, stats(0))], () => snap(0));
    expect(chunks.map((c) => c.id)).toEqual([0, 1, 2, 3]);
    expect(chunks.map((c) => c.exact)).toEqual([true, false, false, true]);
    expect(t.counters.inexact).toBe(2);
  });

  it('unsampled chunks take no memory and keep their ids', () => {
    const { t, chunks } = setup();
    t.write(10, 0, false, () => snap(0));
    t.write(10, 0, true, () => snap(0));
    expect(t.pendingCount).toBe(1);
    t.onRecords([rec('ack', 19, 0.1, stats(0))], () => snap(0));
    expect(chunks.map((c) => [c.id, c.offset])).toEqual([[1, 10]]);
  });

  it('reports a chunk whose last byte is not acked in time as stalled, then forgets it', () => {
    const { t, chunks, stalls } = setup(5);
    t.write(4096, 10, true, () => snap(1, 0.5));
    t.onRecords([rec('sched', 4095, 10.01)], () => snap(0));
    expect(t.checkStalls(14, () => snap(4, 3.5))).toBe(0);
    expect(t.checkStalls(15.5, () => snap(5, 4.5))).toBe(1);
    expect(stalls).toHaveLength(1);
    expect(stalls[0]).toMatchObject({ stalled: true, bytes: 4096, schedTime: 10.01, limit: 'rwnd' });
    expect(stalls[0]!.rwndLimited).toBeCloseTo(4);
    expect(stalls[0]!.ackTime).toBeUndefined();
    t.onRecords([rec('ack', 4095, 16, stats(6))], () => snap(0));
    expect(chunks).toHaveLength(0);
    expect(t.pendingCount).toBe(0);
  });

  it('keeps memory bounded when records never come', () => {
    const { t, stalls } = setup();
    for (let i = 0; i < 20; i++) t.write(1, i, true, () => snap(0));
    expect(t.pendingCount).toBe(8);
    expect(stalls).toHaveLength(12);
    expect(t.counters.overflow).toBe(12);
  });

  it('unwraps 32-bit keys past 4 GiB', () => {
    const { t, chunks } = setup();
    const big = 2 ** 32 + 1000;
    t.write(big, 0, false, () => snap(0));
    t.write(24, 1, true, () => snap(0));
    t.onRecords([rec('ack', (big + 23) % 2 ** 32, 1.1, stats(0))], () => snap(0));
    expect(chunks).toHaveLength(1);
    expect(chunks[0]!.offset).toBe(big);
    expect(chunks[0]!.exact).toBe(true);
  });

  it('on socket close, acked chunks complete and the rest are stalls', () => {
    const { t, chunks, stalls } = setup();
    t.startUnit(undefined, true);
    t.write(10, 0, false, () => snap(0));
    t.onRecords([rec('ack', 9, 0.5, stats(0.1))], () => snap(0));
    t.write(10, 1, true, () => snap(0)); // still in the unit: the ack no longer covers its end
    t.flush(2, snap(1));
    expect(chunks).toHaveLength(0);
    expect(stalls).toHaveLength(1);
    expect(stalls[0]!.bytes).toBe(20);
  });

  it('a chunk larger than a send buffer smaller than the window is sndbuf-limited even where the kernel says little', () => {
    const { t, chunks } = setup();
    // Start snapshots as instrument() takes them: cwnd, MSS and sk_sndbuf.
    const start = (busy: number, sndbuf: number, cwnd: number): ChronoSnapshot => ({ ...snap(busy, 0, 0.1 * (busy - 1)), cwnd, mss: 1448, sndbuf });
    t.write(512 * 1024, 100, true, () => start(1, 32768, 100)); // capped buffer, big window
    t.write(512 * 1024, 101, true, () => start(2, 4 << 20, 100)); // buffer raised
    t.write(16 * 1024, 102, true, () => start(3, 32768, 100)); // fits the buffer: never waited
    t.write(512 * 1024, 103, true, () => start(4, 65536, 10)); // slow start: the window fits the buffer
    // Each took 0.45 s, all busy, the kernel counted 0.1 s sndbuf-limited.
    const ends = [1.45, 2.45, 3.45, 4.45];
    let off = 0;
    const sizes = [512 * 1024, 512 * 1024, 16 * 1024, 512 * 1024];
    sizes.forEach((n, i) => {
      off += n;
      t.onRecords([rec('ack', off - 1, 100 + i + 0.45, stats(ends[i]!, 0, 0.1 * (i + 1)))], () => snap(9));
    });
    expect(chunks.map((c) => c.limit)).toEqual(['sndbuf', 'network', 'network', 'network']);
    expect(chunks[0]!.sndbufLimited).toBeCloseTo(0.1);
    expect(chunks[0]!.sndbufBound).toBeCloseTo(0.35);
    expect(chunks[1]!.sndbufBound).toBeUndefined();
  });

  it('each chunk gets the first record of each kind that came after its last write and reaches its last byte (random streams against the rule)', () => {
    // A small LCG: the same streams on every run.
    let seed = 12345;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    for (let run = 0; run < 40; run++) {
      const { t, chunks } = setup(1e9, 1 << 20);
      // The rule, kept naively: every chunk's last byte and the time of its last write.
      const truth = new Map<number, { last: number; wroteAt: number }>();
      const seen: { kind: 'sched' | 'ack'; key: number; time: number }[] = [];
      let clock = 0;
      let open: number | undefined; // the open unit's id
      let nextId = 0;
      let sched = -1;
      let acked = -1;
      for (let step = 0; step < 400; step++) {
        const op = rand(10);
        clock++;
        if (op < 4) {
          const bytes = 1 + rand(3000);
          const id = open ?? nextId++;
          const from = t.written;
          t.write(bytes, clock, true, () => snap(0));
          truth.set(id, { last: from + bytes - 1, wroteAt: clock });
        } else if (op === 4) {
          t.startUnit(undefined, true);
          open = nextId++;
        } else if (op === 5) {
          t.endUnit();
          open = undefined;
        } else if (t.written > 0) {
          // Records as the kernel makes them: each kind's keys only move forward.
          const kind = op < 8 ? 'sched' : 'ack';
          const floor = kind === 'sched' ? sched : acked;
          const top = kind === 'sched' ? t.written - 1 : sched; // an ACK never passes what was sent
          if (top <= floor) continue;
          const key = floor + 1 + rand(top - floor);
          if (kind === 'sched') sched = key;
          else acked = key;
          seen.push({ kind, key, time: clock });
          t.onRecords([rec(kind, key, clock, kind === 'ack' ? stats(clock) : undefined)], () => snap(0));
        }
      }
      expect(chunks.length).toBeGreaterThan(0);
      for (const c of chunks) {
        const want = truth.get(c.id)!;
        expect(c.offset + c.bytes - 1).toBe(want.last);
        const first = (kind: string) => seen.find((r) => r.kind === kind && r.time > want.wroteAt && r.key >= want.last)?.time;
        expect([c.id, c.schedTime, c.ackTime]).toEqual([c.id, first('sched'), first('ack')]);
      }
    }
  });
});
