import { describe, expect, it } from 'vitest';
import { ParseError } from '../../agent/parse/errors.js';
import { parseTcpInfo, TCP_INFO_LEN, TCP_INFO_MIN_LEN, TCP_STATES, tcpStateName, TCPI_OPT } from '../../agent/parse/tcp_info.js';
import { tcpInfo as fixture } from './fixtures.js';

/** A 280-byte tcp_info with every field set to a recognisable value. */
function synthetic(): Buffer {
  const b = Buffer.alloc(TCP_INFO_LEN);
  b.writeUInt8(TCP_STATES.ESTABLISHED, 0);
  b.writeUInt8(3, 1); // ca_state Recovery
  b.writeUInt8(0x97, 6); // snd_wscale 7, rcv_wscale 9
  b.writeUInt8(0b101, 7); // app-limited, fastopen_client_fail 2
  b.writeUInt32LE(204_000, 8); // rto µs
  b.writeUInt32LE(1500, 44); // last_data_sent ms
  b.writeUInt32LE(40_000, 68); // rtt µs
  b.writeUInt32LE(10, 80); // snd_cwnd
  b.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, 112); // max_pacing_rate: unlimited
  b.writeBigUInt64LE(12_345_678_901n, 120); // bytes_acked
  b.writeUInt32LE(0xffff_ffff, 148); // min_rtt: no sample
  b.writeBigUInt64LE(2_500_000n, 160); // delivery_rate B/s
  b.writeBigUInt64LE(3_000_000n, 168); // busy µs
  b.writeBigUInt64LE(1_000_000n, 176); // rwnd_limited µs
  b.writeBigUInt64LE(500_000n, 184); // sndbuf_limited µs
  b.writeBigUInt64LE(99n, 208); // bytes_retrans
  b.writeUInt32LE(65_536, 228); // snd_wnd
  b.writeUInt16LE(7, 240); // total_rto
  b.writeUInt32LE(2500, 244); // total_rto_time ms
  b.writeUInt32LE(5, 248); // received_ce
  b.writeUInt16LE(3, 278); // accecn_opt_seen
  return b;
}

describe('parseTcpInfo', () => {
  it('decodes every field in base units', () => {
    const t = parseTcpInfo(synthetic());
    expect(t).toMatchObject({
      length: 280,
      state: 1,
      caState: 3,
      sndWscale: 7,
      rcvWscale: 9,
      appLimited: true,
      fastopenClientFail: 2,
      rto: 0.204,
      lastDataSent: 1.5,
      rtt: 0.04,
      sndCwnd: 10,
      maxPacingRate: Infinity,
      bytesAcked: 12_345_678_901,
      deliveryRate: 2_500_000,
      busyTime: 3,
      rwndLimited: 1,
      sndbufLimited: 0.5,
      bytesRetrans: 99,
      sndWnd: 65_536,
      totalRto: 7,
      totalRtoTime: 2.5,
      receivedCe: 5,
      accecnFailMode: 0,
      accecnOptSeen: 3,
    });
    expect(t.minRtt).toBeUndefined();
  });

  it('decodes the tcp_info recorded on this kernel (280 bytes)', () => {
    const t = parseTcpInfo(fixture);
    expect(fixture.length).toBe(280);
    expect(t.length).toBe(280);
    expect(tcpStateName(t.state)).toBe('ESTABLISHED');
    expect(t.options & (TCPI_OPT.SACK | TCPI_OPT.TIMESTAMPS | TCPI_OPT.WSCALE)).toBe(7);
    expect(t.bytesSent).toBe(6000);
    // bytes_acked counts the SYN too.
    expect(t.bytesAcked).toBe(6001);
    expect(t.dataSegsOut).toBe(3);
    expect(t.rtt).toBeGreaterThan(0);
    expect(t.rtt).toBeLessThan(0.1);
    expect(t.minRtt).toBeGreaterThan(0);
    expect(t.sndWnd).toBeGreaterThan(0);
    expect(t.rcvWnd).toBeGreaterThan(0);
    expect(t.lastDataSent).toBeLessThan(1);
    expect(t.busyTime).toBeGreaterThanOrEqual(t.rwndLimited + t.sndbufLimited);
    // Every field of the 6.18 layout is present.
    for (const [k, v] of Object.entries(t)) if (k !== 'minRtt') expect(v, k).not.toBeUndefined();
  });

  it('rejects anything shorter than the 4.10 layout', () => {
    for (const n of [0, 8, 104, TCP_INFO_MIN_LEN - 1]) {
      expect(() => parseTcpInfo(Buffer.alloc(n))).toThrow(ParseError);
    }
    try {
      parseTcpInfo(Buffer.alloc(104));
    } catch (e) {
      expect((e as ParseError).code).toBe('ERR_TCPCHRONO_PARSE');
      expect((e as ParseError).what).toBe('tcp_info');
    }
  });

  it('older kernels: 192 bytes (4.10) leaves every later field undefined', () => {
    const t = parseTcpInfo(synthetic().subarray(0, 192));
    expect(t.length).toBe(192);
    expect(t.busyTime).toBe(3);
    expect(t.sndbufLimited).toBe(0.5);
    expect(t.delivered).toBeUndefined();
    expect(t.bytesRetrans).toBeUndefined();
    expect(t.sndWnd).toBeUndefined();
    expect(t.accecnOptSeen).toBeUndefined();
  });

  it('a field cut in half is undefined, not misread', () => {
    const t = parseTcpInfo(synthetic().subarray(0, 230)); // snd_wnd is [228, 232)
    expect(t.rcvOoopack).toBe(0);
    expect(t.sndWnd).toBeUndefined();
    const u = parseTcpInfo(synthetic().subarray(0, 248)); // 6.7-6.17
    expect(u.totalRtoTime).toBe(2.5);
    expect(u.receivedCe).toBeUndefined();
  });

  it('newer kernels: bytes past 280 are ignored', () => {
    const long = Buffer.concat([synthetic(), Buffer.alloc(40, 0xff)]);
    expect(long.length).toBe(320);
    expect(parseTcpInfo(long)).toEqual(parseTcpInfo(synthetic()));
  });

  it('names states', () => {
    expect(tcpStateName(1)).toBe('ESTABLISHED');
    expect(tcpStateName(10)).toBe('LISTEN');
    expect(tcpStateName(99)).toBe('UNKNOWN(99)');
  });
});
