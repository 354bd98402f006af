// SCM_TIMESTAMPING_OPT_STATS: the TCP_NLA_* netlink attributes the kernel
// attaches to a timestamp record (tcp_get_timestamping_opt_stats() in
// net/ipv4/tcp.c). Decoded into base units; ids this code does not know are
// kept raw. Tolerant: a bad attribute is recorded in `problems` and ends the
// walk, it never throws, so one odd record cannot cost the rest of a batch.
import { nsToSeconds, U64_MAX, usToSeconds } from './units.js';

/**
 * The enum in include/uapi/linux/tcp.h, with the kernel that added each id.
 * Defined here because hosts' uapi headers lag the kernel (6.1 headers on a
 * 6.18 kernel stop at TTL). Versions for 23-27 were checked against the
 * netdev postings; those for 4-22 are from the patch history as best known.
 * A 6.18 kernel sends 1-27 (TTL on ACK records only); nothing newer exists yet.
 */
export const TCP_NLA = {
  PAD: 0, // 4.10 (alignment filler, never data)
  BUSY: 1, // 4.10, u64 µs
  RWND_LIMITED: 2, // 4.10, u64 µs
  SNDBUF_LIMITED: 3, // 4.10, u64 µs
  DATA_SEGS_OUT: 4, // 4.11, u64
  TOTAL_RETRANS: 5, // 4.11, u64
  PACING_RATE: 6, // 4.15, u64 bytes/s (~0: unlimited)
  DELIVERY_RATE: 7, // 4.15, u64 bytes/s
  SND_CWND: 8, // 4.15, u32 packets
  REORDERING: 9, // 4.15, u32
  MIN_RTT: 10, // 4.15, u32 µs (~0: no sample)
  RECUR_RETRANS: 11, // 4.15, u8
  DELIVERY_RATE_APP_LMT: 12, // 4.15, u8 boolean
  SNDQ_SIZE: 13, // 4.18, u32 bytes written and not yet acked
  CA_STATE: 14, // 4.18, u8
  SND_SSTHRESH: 15, // 4.18, u32 packets
  DELIVERED: 16, // 4.18, u32 packets
  DELIVERED_CE: 17, // 4.18, u32 packets
  BYTES_SENT: 18, // 4.19, u64
  BYTES_RETRANS: 19, // 4.19, u64
  DSACK_DUPS: 20, // 4.19, u32
  REORD_SEEN: 21, // 4.19, u32
  SRTT: 22, // 5.1, u32 µs
  TIMEOUT_REHASH: 23, // 5.6, u16
  BYTES_NOTSENT: 24, // 5.7, u32 bytes written and not yet sent
  EDT: 25, // 5.9, u64 ns CLOCK_MONOTONIC
  TTL: 26, // 5.12, u8, ACK records only
  REHASH: 27, // 6.2, u32 (PLB + timeout rehashes)
} as const;

export interface OptStats {
  /** Seconds the connection had data in flight or queued (includes the two below). */
  busy?: number;
  /** Seconds limited by the peer's receive window. */
  rwndLimited?: number;
  /** Seconds limited by the local send buffer. */
  sndbufLimited?: number;
  dataSegsOut?: number;
  totalRetrans?: number;
  /** Bytes/second; Infinity when unlimited. */
  pacingRate?: number;
  /** Bytes/second, the kernel's most recent delivery-rate sample. */
  deliveryRate?: number;
  sndCwnd?: number;
  reordering?: number;
  /** Seconds; absent while the kernel has no RTT sample. */
  minRtt?: number;
  recurRetrans?: number;
  deliveryRateAppLimited?: boolean;
  /** Bytes written and not yet acked (write_seq - snd_una). */
  sndqSize?: number;
  caState?: number;
  sndSsthresh?: number;
  delivered?: number;
  deliveredCe?: number;
  bytesSent?: number;
  bytesRetrans?: number;
  dsackDups?: number;
  reordSeen?: number;
  /** Smoothed RTT, seconds. */
  srtt?: number;
  timeoutRehash?: number;
  /** Bytes written and not yet sent (write_seq - snd_nxt). */
  bytesNotsent?: number;
  /**
   * Earliest departure time of the timestamped skb, seconds on
   * CLOCK_MONOTONIC (not the realtime clock of the record's timestamp).
   */
  edt?: number;
  /** TTL / hop limit of the ACK that acknowledged the data (ACK records). */
  ttl?: number;
  rehash?: number;
  /** Attributes with ids not listed in TCP_NLA, or with an unexpected size. */
  unknown: Array<{ type: number; data: Buffer }>;
  /** What did not decode; empty for every record the kernel produced so far. */
  problems: string[];
}

type Decoded = Omit<OptStats, 'unknown' | 'problems'>;
// 'rtt' is µs where all-ones means "no sample yet" (min_rtt before the first ACK).
type Kind = 'count' | 'us' | 'rtt' | 'rate' | 'bool' | 'ns';

// id -> [field, unit]. The width is taken from the attribute itself, so a
// kernel that widens a counter (e.g. u16 -> u32) still decodes.
const FIELDS: ReadonlyMap<number, readonly [keyof Decoded, Kind]> = new Map([
  [TCP_NLA.BUSY, ['busy', 'us']],
  [TCP_NLA.RWND_LIMITED, ['rwndLimited', 'us']],
  [TCP_NLA.SNDBUF_LIMITED, ['sndbufLimited', 'us']],
  [TCP_NLA.DATA_SEGS_OUT, ['dataSegsOut', 'count']],
  [TCP_NLA.TOTAL_RETRANS, ['totalRetrans', 'count']],
  [TCP_NLA.PACING_RATE, ['pacingRate', 'rate']],
  [TCP_NLA.DELIVERY_RATE, ['deliveryRate', 'rate']],
  [TCP_NLA.SND_CWND, ['sndCwnd', 'count']],
  [TCP_NLA.REORDERING, ['reordering', 'count']],
  [TCP_NLA.MIN_RTT, ['minRtt', 'rtt']],
  [TCP_NLA.RECUR_RETRANS, ['recurRetrans', 'count']],
  [TCP_NLA.DELIVERY_RATE_APP_LMT, ['deliveryRateAppLimited', 'bool']],
  [TCP_NLA.SNDQ_SIZE, ['sndqSize', 'count']],
  [TCP_NLA.CA_STATE, ['caState', 'count']],
  [TCP_NLA.SND_SSTHRESH, ['sndSsthresh', 'count']],
  [TCP_NLA.DELIVERED, ['delivered', 'count']],
  [TCP_NLA.DELIVERED_CE, ['deliveredCe', 'count']],
  [TCP_NLA.BYTES_SENT, ['bytesSent', 'count']],
  [TCP_NLA.BYTES_RETRANS, ['bytesRetrans', 'count']],
  [TCP_NLA.DSACK_DUPS, ['dsackDups', 'count']],
  [TCP_NLA.REORD_SEEN, ['reordSeen', 'count']],
  [TCP_NLA.SRTT, ['srtt', 'us']],
  [TCP_NLA.TIMEOUT_REHASH, ['timeoutRehash', 'count']],
  [TCP_NLA.BYTES_NOTSENT, ['bytesNotsent', 'count']],
  [TCP_NLA.EDT, ['edt', 'ns']],
  [TCP_NLA.TTL, ['ttl', 'count']],
  [TCP_NLA.REHASH, ['rehash', 'count']],
]);

const NLA_HDRLEN = 4;
// nla_type carries two flag bits (NLA_F_NESTED, NLA_F_NET_BYTEORDER).
const NLA_TYPE_MASK = 0x3fff;
const BAD_SIZE = Symbol('bad size');

function decode(data: Buffer, kind: Kind): number | boolean | undefined | typeof BAD_SIZE {
  const width = data.length;
  if (width === 8) {
    // Only 64-bit values go through BigInt (EDT needs it for its nanoseconds).
    const v = data.readBigUInt64LE(0);
    if (kind === 'ns') return nsToSeconds(v);
    if (kind === 'bool') return v !== 0n;
    if (v === U64_MAX && (kind === 'rate' || kind === 'rtt')) return kind === 'rate' ? Infinity : undefined;
    return kind === 'us' || kind === 'rtt' ? usToSeconds(Number(v)) : Number(v);
  }
  let v: number;
  if (width === 4) v = data.readUInt32LE(0);
  else if (width === 2) v = data.readUInt16LE(0);
  else if (width === 1) v = data.readUInt8(0);
  else return BAD_SIZE;
  const allOnes = v === 2 ** (width * 8) - 1;
  switch (kind) {
    case 'count':
      return v;
    case 'bool':
      return v !== 0;
    case 'rate':
      return allOnes ? Infinity : v;
    case 'rtt':
      return allOnes ? undefined : usToSeconds(v);
    case 'us':
      return usToSeconds(v);
    case 'ns':
      return v / 1e9;
  }
}

export function parseOptStats(buf: Buffer): OptStats {
  const out: OptStats = { unknown: [], problems: [] };
  const fields = out as unknown as Record<string, number | boolean | undefined>;
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const nlaLen = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (nlaLen < NLA_HDRLEN) {
      out.problems.push(`attribute at ${off}: nla_len ${nlaLen} < ${NLA_HDRLEN}`);
      return out;
    }
    if (off + nlaLen > buf.length) {
      out.problems.push(`attribute ${type} at ${off}: nla_len ${nlaLen} overruns ${buf.length - off} bytes`);
      return out;
    }
    const data = buf.subarray(off + NLA_HDRLEN, off + nlaLen);
    off += (nlaLen + 3) & ~3;
    if (type === TCP_NLA.PAD) continue;
    const field = FIELDS.get(type);
    const value = field === undefined ? BAD_SIZE : decode(data, field[1]);
    if (value === BAD_SIZE) {
      if (field !== undefined) out.problems.push(`attribute ${type} (${field[0]}): unexpected size ${data.length}`);
      // Copied: a view would keep the whole error-queue batch alive.
      out.unknown.push({ type, data: Buffer.from(data) });
    } else if (value !== undefined && field !== undefined) {
      fields[field[0]] = value;
    }
  }
  if (off < buf.length) out.problems.push(`${buf.length - off} trailing bytes`);
  return out;
}
