import { describe, expect, it } from 'vitest';
import { MAX_PROBLEMS, parseErrqueueBatch } from '../../agent/parse/errqueue.js';
import { TCP_NLA } from '../../agent/parse/opt_stats.js';
import { cmsg, frame, nla, timestamping, txControl, u32 } from './build.js';
import { errqueueV4 } from './fixtures.js';

const SCHED = 1;
const ACK = 2;

describe('parseErrqueueBatch', () => {
  it('decodes hand-built frames', () => {
    const b = parseErrqueueBatch(
      Buffer.concat([
        frame(7, txControl({ info: SCHED, key: 99, sec: 100n, nsec: 500_000_000n })),
        frame(8, txControl({ info: ACK, key: 0xffff_ffff, stats: nla(TCP_NLA.SND_CWND, u32(10)) })),
      ]),
    );
    expect(b).toEqual({
      records: [
        { fd: 7, kind: 'sched', key: 99, time: 100.5, truncated: false },
        { fd: 8, kind: 'ack', key: 0xffff_ffff, time: expect.any(Number), truncated: false, stats: { sndCwnd: 10, unknown: [], problems: [] } },
      ],
      malformed: 0,
      skipped: 0,
      problems: [],
    });
  });

  it('skips a real error (e.g. ICMP) and keeps going', () => {
    const b = parseErrqueueBatch(
      Buffer.concat([frame(3, txControl({ info: 0, key: 0, errno: 111, origin: 2 })), frame(3, txControl({ info: ACK, key: 5 }))]),
    );
    expect(b.records.map((r) => r.key)).toEqual([5]);
    expect(b.skipped).toBe(1);
    expect(b.malformed).toBe(0);
    expect(b.problems).toEqual(['fd 3: ee_errno 111, ee_origin 2: not a timestamp, skipped']);
  });

  it('skips timestamp types it did not ask for', () => {
    const b = parseErrqueueBatch(frame(3, txControl({ info: 3, key: 5 })));
    expect(b.records).toEqual([]);
    expect(b.skipped).toBe(1);
  });

  it('counts records missing a cmsg as malformed and decodes the next frame', () => {
    const noTimestamp = cmsg(0, 11, txControl({ info: 1, key: 1 }).subarray(64 + 16, 64 + 16 + 32));
    const noErr = cmsg(1, 37, timestamping(1n, 0n));
    const b = parseErrqueueBatch(Buffer.concat([frame(1, noTimestamp), frame(1, noErr), frame(1, txControl({ info: SCHED, key: 9 }))]));
    expect(b.malformed).toBe(2);
    expect(b.records.map((r) => r.key)).toEqual([9]);
    expect(b.problems).toEqual([
      'fd 1: errqueue record: no SCM_TIMESTAMPING cmsg',
      'fd 1: errqueue record: no IP_RECVERR/IPV6_RECVERR cmsg',
    ]);
  });

  it('a record with a zero software stamp is malformed', () => {
    const b = parseErrqueueBatch(frame(1, txControl({ info: SCHED, key: 9, sec: 0n, nsec: 0n })));
    expect(b.malformed).toBe(1);
    expect(b.records).toEqual([]);
  });

  it('flags MSG_CTRUNC', () => {
    const b = parseErrqueueBatch(frame(1, txControl({ info: SCHED, key: 9 }), 0x2000 | 0x8));
    expect(b.records[0]?.truncated).toBe(true);
  });

  it('passes OPT_STATS problems up', () => {
    const b = parseErrqueueBatch(frame(4, txControl({ info: ACK, key: 9, stats: nla(TCP_NLA.BUSY, u32(1), 2) })));
    expect(b.records).toHaveLength(1);
    expect(b.problems).toEqual(['fd 4 key 9 ack stats: attribute at 0: nla_len 2 < 4']);
  });

  it('a control_len beyond the batch stops it; earlier records are kept', () => {
    const good = frame(1, txControl({ info: SCHED, key: 9 }));
    const bad = frame(1, txControl({ info: ACK, key: 9 }), 0, 4096);
    const b = parseErrqueueBatch(Buffer.concat([good, bad, good]));
    expect(b.records).toHaveLength(1);
    expect(b.malformed).toBe(1);
    expect(b.problems[0]).toMatch(/^frame at \d+: bad header \(control_len 4096/);
  });

  it('a nonzero reserved word stops the batch (lost framing)', () => {
    const b = parseErrqueueBatch(frame(1, txControl({ info: SCHED, key: 9 }), 0, undefined, 1));
    expect(b).toMatchObject({ records: [], malformed: 1 });
  });

  it('a tail shorter than a frame header is malformed', () => {
    const b = parseErrqueueBatch(Buffer.concat([errqueueV4, Buffer.alloc(8)]));
    expect(b.records).toHaveLength(9);
    expect(b.malformed).toBe(1);
  });

  it('the last frame may lack its padding', () => {
    const f = frame(1, Buffer.concat([txControl({ info: SCHED, key: 9 }), Buffer.alloc(4)]), 0, txControl({ info: SCHED, key: 9 }).length + 4);
    const b = parseErrqueueBatch(f.subarray(0, f.length - 4));
    expect(b.records).toHaveLength(1);
    expect(b.malformed).toBe(0);
  });

  it(`keeps only the first ${MAX_PROBLEMS} problems`, () => {
    const bad = frame(1, cmsg(1, 37, timestamping(1n, 0n)));
    const b = parseErrqueueBatch(Buffer.concat(Array.from({ length: 15 }, () => bad)));
    expect(b.malformed).toBe(15);
    expect(b.problems).toHaveLength(MAX_PROBLEMS);
  });

  it('empty input is an empty batch', () => {
    expect(parseErrqueueBatch(Buffer.alloc(0))).toEqual({ records: [], malformed: 0, skipped: 0, problems: [] });
  });
});
