// The classifier's 'sndbuf' and 'network' verdicts on real kernel data, over a
// path with real propagation delay (DelayLab: 20 ms each way, 40 ms RTT).
//
// sndbuf-limited time needs propagation delay: the kernel starts the
// chronograph in tcp_cwnd_validate() (net/ipv4/tcp_output.c) only when it has
// just sent, is NOT cwnd-limited, has nothing left in the write queue, and the
// application hit a full buffer (SOCK_NOSPACE); tcp_check_space() stops it
// when ACKs free half the buffer. On loopback the ACKs come back before the
// buffer ever runs dry, so it stays at zero (docs/kernel-notes.md#the-sndbuf-chronograph-on-shaped-paths).
//
//  1. Replay: the fixture in test/fixtures/sndbuf/ (raw error-queue batches,
//     the tcp_info at each chunk's first write, the writes) is fed through
//     parseErrqueueBatch + ChunkTracker; it must reproduce the chunk records
//     instrument() emitted during the capture, and they must say 'sndbuf'.
//  2. Live: instrument() on a small-SO_SNDBUF sender says 'sndbuf'; with a
//     normal buffer behind a 20 mbit bottleneck it says 'network'.
//  3. `npm run capture:fixtures` re-records the fixture (test/fixtures/sndbuf.capture.ts).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ChunkTracker, type ChronoSnapshot, type ChunkRecord } from '../../agent/model/chunks.js';
import { parseErrqueueBatch, type TxRecord } from '../../agent/parse/errqueue.js';
import { parseTcpInfo } from '../../agent/parse/tcp_info.js';
import { sendChunks, type SndbufCapture } from '../fixtures/capture-sndbuf.js';
import { DelayLab } from '../../lab/delay.js';

const KiB = 1024;
const FIXTURE = fileURLToPath(new URL('../fixtures/sndbuf/capture.json', import.meta.url));

/** The starting snapshot instrument() takes from a tcp_info (agent/instrument.ts toSnapshot). */
function snapshotOf(hex: string): ChronoSnapshot {
  const t = parseTcpInfo(Buffer.from(hex, 'hex'));
  return {
    busy: t.busyTime,
    rwndLimited: t.rwndLimited,
    sndbufLimited: t.sndbufLimited,
    totalRetrans: t.totalRetrans,
    deliveryRate: t.deliveryRate,
    cwnd: t.sndCwnd,
    srtt: t.rtt,
    ...(t.minRtt !== undefined && { minRtt: t.minRtt }),
  };
}

interface Replay {
  chunks: ChunkRecord[];
  stalls: ChunkRecord[];
  records: TxRecord[];
  malformed: number;
  tracker: ChunkTracker;
}

/** Writes and batches in their recorded order, through the same code instrument() uses, with its defaults. */
function replay(cap: SndbufCapture): Replay {
  const out: Replay = { chunks: [], stalls: [], records: [], malformed: 0, tracker: undefined as unknown as ChunkTracker };
  const tracker = new ChunkTracker(
    { stallAfter: 10, maxPending: 1024 },
    { chunk: (c) => out.chunks.push(c), stall: (c) => out.stalls.push(c) },
  );
  out.tracker = tracker;
  const noSnapshotNow = (): ChronoSnapshot => {
    throw new Error('replay needed a tcp_info read at record time (an ACK record without OPT_STATS)');
  };
  for (const ev of cap.events) {
    if (ev.type === 'write') {
      expect(ev.offset).toBe(tracker.written);
      tracker.write(ev.bytes, ev.time, true, () => snapshotOf(ev.tcpInfo));
    } else {
      const batch = parseErrqueueBatch(Buffer.from(ev.hex, 'hex'));
      out.malformed += batch.malformed;
      out.records.push(...batch.records);
      tracker.onRecords(batch.records, noSnapshotNow);
    }
  }
  return out;
}

describe('replay of a recorded sndbuf-limited sender (test/fixtures/sndbuf)', () => {
  let cap: SndbufCapture;
  beforeAll(() => {
    cap = JSON.parse(readFileSync(FIXTURE, 'utf8')) as SndbufCapture;
  });

  it('the fixture is what it says: 40 ms RTT, a small buffer, and the kernel reported substantial sndbuf-limited time', () => {
    for (const r of cap.path.measuredRttMs) expect(Math.abs(r - 2 * cap.path.delayMsOneWay)).toBeLessThan(0.25 * 2 * cap.path.delayMsOneWay);
    expect(cap.sndbuf.effective).toBe(2 * cap.sndbuf.requested);
    const total = cap.chunkBytes.reduce((a, b) => a + b, 0);
    expect(cap.totals.bytesAcked).toBe(total);
    expect(cap.reader.bytes).toBe(total);
    expect(cap.totals.rwndLimited).toBe(0);
    expect(cap.totals.totalRetrans).toBe(0);
    // docs/kernel-notes.md#the-sndbuf-chronograph-on-shaped-paths: 40–60 % of busy time on a 40 ms path with a small SO_SNDBUF.
    const share = cap.totals.sndbufLimited / cap.totals.busy;
    expect(share).toBeGreaterThan(0.4);
    expect(share).toBeLessThan(0.8);
    // The sender always had data queued: busy covers the whole transfer.
    expect(cap.totals.busy).toBeGreaterThan(0.9 * cap.totals.seconds);
  });

  it('every batch decodes, and the replay reproduces instrument()’s chunk records exactly', () => {
    const r = replay(cap);
    expect(r.malformed).toBe(0);
    expect(r.stalls).toEqual([]);
    expect(r.tracker.counters.missingStats).toBe(0);
    expect(r.records.every((x) => x.stats?.sndbufLimited !== undefined)).toBe(true);
    expect(r.chunks).toHaveLength(cap.chunkBytes.length);
    expect(r.chunks).toEqual(cap.chunks);
  });

  it('after slow start every chunk is sndbuf-limited, for more than half its delivery time', () => {
    const { chunks } = replay(cap);
    for (const c of chunks.slice(1)) {
      expect(c.limit, `chunk ${c.id}`).toBe('sndbuf');
      expect(c.sndbufLimited / c.deliveryTime).toBeGreaterThan(0.5);
      expect(c.shares.sndbuf).toBeGreaterThan(c.shares.network);
      expect(c.shares.app).toBeLessThan(0.05);
      expect(c.rwndLimited).toBe(0);
    }
  });

  it('the first chunk is network-limited: the kernel counts no sndbuf time until the congestion window outgrows the buffer', () => {
    const r = replay(cap);
    const first = r.chunks[0]!;
    expect(first.limit).toBe('network');
    // OPT_STATS on the records: while cwnd grows (BBR startup) the sender is
    // cwnd-limited and tcp_cwnd_validate() does not start the sndbuf chrono.
    const withStats = r.records.filter((x) => x.stats?.sndCwnd !== undefined && x.stats.sndbufLimited !== undefined);
    const firstSndbuf = withStats.findIndex((x) => x.stats!.sndbufLimited! > 0);
    expect(firstSndbuf).toBeGreaterThan(2);
    const cwndBefore = withStats.slice(0, firstSndbuf).map((x) => x.stats!.sndCwnd!);
    expect(cwndBefore[0]!).toBeLessThan(cwndBefore[cwndBefore.length - 1]!);
    expect(withStats[firstSndbuf]!.time).toBeLessThan(first.ackTime!);
  });
});

describe('live over DelayLab, 20 ms each way', () => {
  const labs: DelayLab[] = [];
  afterEach(async () => {
    while (labs.length > 0) await labs.pop()!.teardown();
  });

  it('instrument() on a sender with SO_SNDBUF 16 KiB classifies the chunks sndbuf', async () => {
    const lab = await DelayLab.create({ delayMs: 20 });
    labs.push(lab);
    const n = 8;
    const r = await sendChunks(lab, { sndbuf: 16 * KiB, chunks: Array.from({ length: n }, () => 256 * KiB), timeoutMs: 15_000 });
    expect(r.stalls).toEqual([]);
    expect(r.chunks.map((c) => c.id)).toEqual([...Array(n).keys()]);
    expect(r.totals.sndbufLimited / r.totals.busy).toBeGreaterThan(0.35);
    const sndbuf = r.chunks.filter((c) => c.limit === 'sndbuf');
    // The first chunk spans the congestion window's growth (see the replay).
    // The userspace delay element jitters when the machine is loaded, which can
    // tip one more chunk to 'network'; the rest must be sndbuf.
    expect(sndbuf.length, `verdicts: ${r.chunks.map((c) => c.limit).join(' ')}`).toBeGreaterThanOrEqual(n - 2);
    for (const c of sndbuf) expect(c.sndbufLimited / c.deliveryTime).toBeGreaterThan(0.5);
  });

  it('with a normal buffer behind a 20 mbit bottleneck the chunks are network-limited', async () => {
    const lab = await DelayLab.create({ delayMs: 20, rate: '20mbit' });
    labs.push(lab);
    const n = 6;
    const r = await sendChunks(lab, { chunks: Array.from({ length: n }, () => 256 * KiB), timeoutMs: 10_000 });
    expect(r.stalls).toEqual([]);
    expect(r.chunks).toHaveLength(n);
    for (const c of r.chunks) {
      expect(c.limit, `chunk ${c.id}`).toBe('network');
      expect(c.shares.network).toBeGreaterThan(0.8);
      expect(c.busy / c.deliveryTime).toBeGreaterThan(0.9);
      expect(c.sndbufLimited + c.rwndLimited).toBeLessThan(0.1 * c.deliveryTime);
    }
    // About the bottleneck's rate end to end.
    expect((r.reader.bytes * 8) / r.reader.seconds / 1e6).toBeLessThan(21);
  });
});
