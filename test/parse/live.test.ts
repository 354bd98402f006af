// The decoders against the running kernel (not a recording): loopback TCP
// with SO_TIMESTAMPING, three writes, each acked before the next.
import { release } from 'node:os';
import { describe, expect, it } from 'vitest';
import { IP_RECVERR, IPV6_RECVERR, parseCmsgs, SOL_IP, SOL_IPV6 } from '../../agent/parse/cmsg.js';
import { parseErrqueueBatch } from '../../agent/parse/errqueue.js';
import { parseTcpInfo, TCP_STATES } from '../../agent/parse/tcp_info.js';
import { captureLoopback } from '../fixtures/timestamped_loopback.js';

const CHUNKS = [1, 1500, 4000];

describe.each(['127.0.0.1', '::1'] as const)('live kernel, %s', (host) => {
  it('decodes SCHED/SND/ACK records with stats for every write', async () => {
    const cap = await captureLoopback(host, CHUNKS);
    const batch = parseErrqueueBatch(cap.batch);
    expect(batch.malformed).toBe(0);
    expect(batch.skipped).toBe(0);
    expect(batch.problems).toEqual([]);

    let sent = 0;
    const keys = CHUNKS.map((c) => (sent += c) - 1);
    expect(batch.records.map((r) => [r.kind, r.key])).toEqual(keys.flatMap((k) => [['sched', k], ['snd', k], ['ack', k]]));
    for (const r of batch.records) {
      expect(r.time).toBeGreaterThanOrEqual(cap.startedAt - 0.001);
      expect(r.time).toBeLessThanOrEqual(cap.endedAt + 0.001);
      expect(r.truncated).toBe(false);
      expect(r.stats?.problems).toEqual([]);
      expect(r.stats?.bytesSent).toBe(r.key + 1);
      expect(r.stats?.busy).toBeGreaterThanOrEqual(0);
      expect(r.stats?.srtt).toBeGreaterThan(0);
      expect(r.stats?.ttl).toBe(r.kind === 'ack' ? 64 : undefined);
    }

    const firstControl = cap.batch.subarray(16, 16 + cap.batch.readUInt32LE(4));
    const ee = parseCmsgs(firstControl).at(-1);
    expect([ee?.level, ee?.type]).toEqual(host === '::1' ? [SOL_IPV6, IPV6_RECVERR] : [SOL_IP, IP_RECVERR]);

    const info = parseTcpInfo(cap.tcpInfo);
    expect(info.state).toBe(TCP_STATES.ESTABLISHED);
    expect(info.bytesSent).toBe(sent);
    expect(info.bytesAcked).toBe(sent + 1); // + the SYN
    expect(info.length).toBeGreaterThanOrEqual(192);
    if (release().startsWith('6.18.')) expect(info.length).toBe(280);
  });
});
