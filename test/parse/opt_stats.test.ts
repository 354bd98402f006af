import { describe, expect, it } from 'vitest';
import { parseOptStats, TCP_NLA } from '../../agent/parse/opt_stats.js';
import { nla, u16, u32, u64, u8 } from './build.js';

describe('parseOptStats', () => {
  it('converts to base units', () => {
    const s = parseOptStats(
      Buffer.concat([
        nla(TCP_NLA.BUSY, u64(4_000_000)),
        nla(TCP_NLA.RWND_LIMITED, u64(1_500_000)),
        nla(TCP_NLA.SNDBUF_LIMITED, u64(0)),
        nla(TCP_NLA.PACING_RATE, u64(0xffff_ffff_ffff_ffffn)),
        nla(TCP_NLA.DELIVERY_RATE, u64(125_000_000)),
        nla(TCP_NLA.MIN_RTT, u32(40)),
        nla(TCP_NLA.SRTT, u32(20_000)),
        nla(TCP_NLA.DELIVERY_RATE_APP_LMT, u8(1)),
        nla(TCP_NLA.TIMEOUT_REHASH, u16(2)),
        nla(TCP_NLA.EDT, u64(389_674_141_787n)),
        nla(TCP_NLA.TTL, u8(64)),
        nla(TCP_NLA.REHASH, u32(3)),
      ]),
    );
    expect(s).toEqual({
      busy: 4,
      rwndLimited: 1.5,
      sndbufLimited: 0,
      pacingRate: Infinity,
      deliveryRate: 125_000_000,
      minRtt: 0.00004,
      srtt: 0.02,
      deliveryRateAppLimited: true,
      timeoutRehash: 2,
      edt: 389.674141787,
      ttl: 64,
      rehash: 3,
      unknown: [],
      problems: [],
    });
  });

  it('min_rtt ~0 means no sample yet', () => {
    expect(parseOptStats(nla(TCP_NLA.MIN_RTT, u32(0xffff_ffff))).minRtt).toBeUndefined();
  });

  it('skips PAD attributes (64-bit alignment on some architectures)', () => {
    const s = parseOptStats(Buffer.concat([nla(TCP_NLA.PAD, Buffer.alloc(0)), nla(TCP_NLA.BUSY, u64(8000))]));
    expect(s.busy).toBe(0.008);
    expect(s.problems).toEqual([]);
  });

  it('keeps unknown ids raw, and a known id of odd size', () => {
    const s = parseOptStats(Buffer.concat([nla(28, u32(7)), nla(TCP_NLA.SND_CWND, Buffer.of(1, 2, 3)), nla(TCP_NLA.TTL, u8(60))]));
    expect(s.unknown).toEqual([
      { type: 28, data: u32(7) },
      { type: TCP_NLA.SND_CWND, data: Buffer.of(1, 2, 3) },
    ]);
    expect(s.problems).toEqual(['attribute 8 (sndCwnd): unexpected size 3']);
    expect(s.ttl).toBe(60);
  });

  it('decodes a counter whatever its width', () => {
    expect(parseOptStats(nla(TCP_NLA.TIMEOUT_REHASH, u32(70_000))).timeoutRehash).toBe(70_000);
    expect(parseOptStats(nla(TCP_NLA.DATA_SEGS_OUT, u32(5))).dataSegsOut).toBe(5);
  });

  it('ignores the NLA_F_NESTED / NLA_F_NET_BYTEORDER flag bits of nla_type', () => {
    expect(parseOptStats(nla(0x8000 | TCP_NLA.SND_CWND, u32(10))).sndCwnd).toBe(10);
  });

  it('nla_len < 4 stops the walk and keeps what came before', () => {
    const s = parseOptStats(Buffer.concat([nla(TCP_NLA.SND_CWND, u32(10)), nla(TCP_NLA.REORDERING, u32(3), 2), nla(TCP_NLA.TTL, u8(1))]));
    expect(s.sndCwnd).toBe(10);
    expect(s.reordering).toBeUndefined();
    expect(s.ttl).toBeUndefined();
    expect(s.problems).toEqual(['attribute at 8: nla_len 2 < 4']);
  });

  it('a zero nla_len (zero padding) stops the walk', () => {
    const s = parseOptStats(Buffer.concat([nla(TCP_NLA.SND_CWND, u32(10)), Buffer.alloc(8)]));
    expect(s.sndCwnd).toBe(10);
    expect(s.problems).toHaveLength(1);
  });

  it('a truncated attribute is reported, not read past the end', () => {
    const whole = Buffer.concat([nla(TCP_NLA.SND_CWND, u32(10)), nla(TCP_NLA.BUSY, u64(4000))]);
    const s = parseOptStats(whole.subarray(0, whole.length - 3));
    expect(s.sndCwnd).toBe(10);
    expect(s.busy).toBeUndefined();
    expect(s.problems).toEqual(['attribute 1 at 8: nla_len 12 overruns 9 bytes']);
  });

  it('reports trailing bytes shorter than a header', () => {
    const s = parseOptStats(Buffer.concat([nla(TCP_NLA.SND_CWND, u32(10)), Buffer.of(1, 2)]));
    expect(s.sndCwnd).toBe(10);
    expect(s.problems).toEqual(['2 trailing bytes']);
  });

  it('accepts the last attribute without its padding', () => {
    const s = parseOptStats(Buffer.concat([nla(TCP_NLA.SND_CWND, u32(10)), nla(TCP_NLA.TTL, u8(64)).subarray(0, 5)]));
    expect(s.ttl).toBe(64);
    expect(s.problems).toEqual([]);
  });

  it('empty input is no stats', () => {
    expect(parseOptStats(Buffer.alloc(0))).toEqual({ unknown: [], problems: [] });
  });
});
