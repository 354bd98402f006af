// The recorded kernel batches (Linux 6.18, loopback, chunks of 1000/2000/3000
// bytes, each acked before the next write) decode to what the kernel meant.
import { describe, expect, it } from 'vitest';
import { parseCmsgs } from '../../agent/parse/cmsg.js';
import { parseErrqueueBatch, type TxRecord } from '../../agent/parse/errqueue.js';
import { TCP_NLA } from '../../agent/parse/opt_stats.js';
import { errqueueV4, errqueueV6, meta } from './fixtures.js';

/** Keys are the byte offset of each write's last byte (OPT_ID_TCP set right after connect). */
function expectedKeys(chunks: number[]): number[] {
  let sum = 0;
  return chunks.map((c) => (sum += c) - 1);
}

const ALL_STATS = Object.keys(TCP_NLA).length - 1; // every id but PAD

function checkRecords(records: TxRecord[], window: { startedAt: number; endedAt: number }): void {
  const keys = expectedKeys(meta.chunks);
  expect(records.map((r) => r.kind)).toEqual(keys.flatMap(() => ['sched', 'snd', 'ack']));
  expect(records.map((r) => r.key)).toEqual(keys.flatMap((k) => [k, k, k]));
  expect(new Set(records.map((r) => r.fd)).size).toBe(1);
  for (const [i, chunk] of meta.chunks.entries()) {
    const [sched, snd, ack] = records.slice(3 * i, 3 * i + 3) as [TxRecord, TxRecord, TxRecord];
    const key = keys[i]!;
    expect(sched.time).toBeLessThanOrEqual(snd.time);
    expect(snd.time).toBeLessThanOrEqual(ack.time);
    for (const r of [sched, snd, ack]) {
      expect(r.truncated).toBe(false);
      expect(r.time).toBeGreaterThanOrEqual(window.startedAt - 0.001);
      expect(r.time).toBeLessThanOrEqual(window.endedAt + 0.001);
      const s = r.stats!;
      expect(s.problems).toEqual([]);
      expect(s.unknown).toEqual([]);
      // TTL rides on ACK records only.
      expect(Object.keys(s).length - 2).toBe(r.kind === 'ack' ? ALL_STATS : ALL_STATS - 1);
      expect(s.bytesSent).toBe(key + 1);
      expect(s.dataSegsOut).toBe(i + 1);
      expect(s.totalRetrans).toBe(0);
      expect(s.bytesRetrans).toBe(0);
      expect(s.busy).toBeGreaterThanOrEqual(s.rwndLimited! + s.sndbufLimited!);
      expect(s.minRtt).toBeGreaterThan(0);
      expect(s.minRtt).toBeLessThan(0.1);
      expect(s.srtt).toBeGreaterThanOrEqual(s.minRtt!);
      expect(s.pacingRate).toBeGreaterThan(1e6);
      expect(s.sndCwnd).toBeGreaterThanOrEqual(1);
      expect(s.caState).toBe(0);
      expect(s.deliveryRateAppLimited).toBe(true);
      expect(s.edt).toBeGreaterThan(0); // CLOCK_MONOTONIC seconds
      expect(s.edt).toBeLessThan(window.startedAt);
    }
    // At SCHED/SND the chunk is written but unacked, and (on loopback, where
    // both stamps are taken inside the transmit call) snd_nxt has not moved yet.
    expect(sched.stats!.sndqSize).toBe(chunk);
    expect(sched.stats!.bytesNotsent).toBe(chunk);
    expect(ack.stats!.sndqSize).toBe(0);
    expect(ack.stats!.bytesNotsent).toBe(0);
    expect(ack.stats!.ttl).toBe(64);
    expect(ack.stats!.delivered).toBeGreaterThan(sched.stats!.delivered!);
    // The departure time of the skb is the same for its three records.
    expect(snd.stats!.edt).toBe(sched.stats!.edt);
  }
}

describe('errqueue fixtures (kernel 6.18)', () => {
  it('was recorded on the kernel these notes describe', () => {
    expect(meta.kernel).toMatch(/^6\.18\./);
  });

  it('IPv4: nine records, SCHED/SND/ACK per write, stats complete', () => {
    const batch = parseErrqueueBatch(errqueueV4);
    expect(batch.malformed).toBe(0);
    expect(batch.skipped).toBe(0);
    expect(batch.problems).toEqual([]);
    checkRecords(batch.records, meta.ipv4);
  });

  it('IPv6: same records, carried by IPV6_RECVERR', () => {
    const batch = parseErrqueueBatch(errqueueV6);
    expect(batch.malformed).toBe(0);
    expect(batch.problems).toEqual([]);
    checkRecords(batch.records, meta.ipv6);
    const controlLen = errqueueV6.readUInt32LE(4);
    const cmsgs = parseCmsgs(errqueueV6.subarray(16, 16 + controlLen));
    expect(cmsgs.map((c) => [c.level, c.type])).toEqual([
      [1, 37],
      [1, 54],
      [41, 25],
    ]);
  });

  it('IPv4 records carry IP_RECVERR with a sockaddr_in after the extended error', () => {
    const controlLen = errqueueV4.readUInt32LE(4);
    const cmsgs = parseCmsgs(errqueueV4.subarray(16, 16 + controlLen));
    expect(cmsgs.map((c) => [c.level, c.type, c.data.length])).toEqual([
      [1, 37, 48],
      [1, 54, 248],
      [0, 11, 32],
    ]);
  });

  it('frames carry MSG_ERRQUEUE|MSG_TRUNC but not MSG_CTRUNC', () => {
    // MSG_TRUNC: with OPT_STATS the stats are also the record's payload,
    // longer than the drainer's data buffer. Harmless; only CTRUNC loses data.
    expect(errqueueV4.readUInt32LE(8)).toBe(0x2000 | 0x20);
  });
});
