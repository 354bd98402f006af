// struct tcp_info (include/uapi/linux/tcp.h) as returned by getsockopt(TCP_INFO)
// and by sock_diag's INET_DIAG_INFO, decoded into base units.
//
// The struct only ever grows at the end, and the kernel copies
// min(its size, the caller's size): a shorter buffer is an older kernel, a
// longer one a newer kernel. The 192-byte layout of Linux 4.10 is required:
// it is the first with the sender chronographs (busy, rwnd/sndbuf-limited),
// which are this project's reason to exist, and requiring it keeps those
// fields non-optional. Each field after it is optional, undefined when the
// buffer ends before it; bytes past the last known field are ignored.
// Sizes: 104 (2.6-3.14, rejected), 192 (4.10-4.17), 200 (4.18), 224 (4.19),
// 232 (5.4-6.4), 240 (6.5/6.6), 248 (6.7-6.17), 280 (6.18, this machine).
import { ParseError } from './errors.js';
import { msToSeconds, rate64, u64, usToSeconds } from './units.js';

/** Linux 4.10's struct tcp_info (through tcpi_sndbuf_limited): the least we accept. */
export const TCP_INFO_MIN_LEN = 192;
/** Size of the layout decoded here (Linux 6.18). */
export const TCP_INFO_LEN = 280;

/** include/net/tcp_states.h */
export const TCP_STATES = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
  NEW_SYN_RECV: 12,
  BOUND_INACTIVE: 13,
} as const;

export type TcpStateName = keyof typeof TCP_STATES;

const STATE_NAMES = new Map<number, TcpStateName>(
  Object.entries(TCP_STATES).map(([name, n]) => [n, name as TcpStateName]),
);

/** 'ESTABLISHED' for 1, …; 'UNKNOWN(n)' for anything else. */
export function tcpStateName(n: number): string {
  return STATE_NAMES.get(n) ?? `UNKNOWN(${n})`;
}

/** enum tcp_ca_state: the loss-recovery state machine (tcpi_ca_state). */
export const TCP_CA_STATES = { Open: 0, Disorder: 1, CWR: 2, Recovery: 3, Loss: 4 } as const;

/** Bits of tcpi_options. */
export const TCPI_OPT = {
  TIMESTAMPS: 1,
  SACK: 2,
  WSCALE: 4,
  ECN: 8,
  ECN_SEEN: 16,
  SYN_DATA: 32,
  USEC_TS: 64,
  TFO_CHILD: 128,
} as const;

/**
 * Durations are seconds, rates bytes/second (Infinity for the kernel's
 * "unlimited" ~0), sizes and windows bytes, cwnd/ssthresh/counters packets.
 * The comment on each group gives the kernel that added it.
 */
export interface TcpInfo {
  /** Bytes decoded (the length the kernel returned, capped at TCP_INFO_LEN). */
  length: number;
  state: number;
  caState: number;
  retransmits: number;
  probes: number;
  backoff: number;
  /** TCPI_OPT bits. */
  options: number;
  sndWscale: number;
  rcvWscale: number;
  /** tcpi_delivery_rate_app_limited: the last delivery-rate sample was app-limited. */
  appLimited: boolean;
  /** tcpi_fastopen_client_fail (5.5; 0 before). */
  fastopenClientFail: number;
  rto: number;
  ato: number;
  sndMss: number;
  rcvMss: number;
  unacked: number;
  sacked: number;
  lost: number;
  retrans: number;
  fackets: number;
  /** Seconds since the event (the kernel counts in ms of jiffies). lastAckSent is always 0. */
  lastDataSent: number;
  lastAckSent: number;
  lastDataRecv: number;
  lastAckRecv: number;
  pmtu: number;
  rcvSsthresh: number;
  /** Smoothed RTT. */
  rtt: number;
  rttvar: number;
  /** Packets; 0x7fffffff (TCP_INFINITE_SSTHRESH) until the first loss. */
  sndSsthresh: number;
  sndCwnd: number;
  advmss: number;
  reordering: number;
  /** Receiver-side RTT estimate. */
  rcvRtt: number;
  rcvSpace: number;
  totalRetrans: number;
  // 3.15
  pacingRate: number;
  maxPacingRate: number;
  // 4.1
  bytesAcked: number;
  bytesReceived: number;
  // 4.2
  segsOut: number;
  segsIn: number;
  // 4.6
  notsentBytes: number;
  /** Undefined while the kernel has no RTT sample yet (~0). */
  minRtt?: number;
  dataSegsIn: number;
  dataSegsOut: number;
  // 4.9
  deliveryRate: number;
  // 4.10: the sender chronographs (busy includes the two limited times)
  busyTime: number;
  rwndLimited: number;
  sndbufLimited: number;

  // Optional from here on: undefined when the kernel's struct ends earlier.
  // 4.18
  delivered?: number;
  deliveredCe?: number;
  // 4.19
  bytesSent?: number;
  bytesRetrans?: number;
  dsackDups?: number;
  reordSeen?: number;
  // 5.4
  rcvOoopack?: number;
  /** Peer's advertised receive window, scaled, bytes. */
  sndWnd?: number;
  // 6.5
  rcvWnd?: number;
  rehash?: number;
  // 6.7
  totalRto?: number;
  totalRtoRecoveries?: number;
  totalRtoTime?: number;
  // 6.18: Accurate ECN counters
  receivedCe?: number;
  deliveredE1Bytes?: number;
  deliveredE0Bytes?: number;
  deliveredCeBytes?: number;
  receivedE1Bytes?: number;
  receivedE0Bytes?: number;
  receivedCeBytes?: number;
  /**
   * 6.18 layout: u16 at 276 and 278. Later kernels repack these 4 bytes as
   * ecn_mode:2, accecn_opt_seen:2, accecn_fail_mode:4, options2:24 in one
   * u32, so on those kernels these two values are not meaningful.
   */
  accecnFailMode?: number;
  accecnOptSeen?: number;
}

export function parseTcpInfo(buf: Buffer): TcpInfo {
  if (buf.length < TCP_INFO_MIN_LEN) {
    throw new ParseError(`${buf.length} bytes, need at least ${TCP_INFO_MIN_LEN}`, 'tcp_info');
  }
  const len = Math.min(buf.length, TCP_INFO_LEN);
  const has = (offset: number, size: number): boolean => offset + size <= len;
  const opt32 = (offset: number): number | undefined => (has(offset, 4) ? buf.readUInt32LE(offset) : undefined);
  const opt16 = (offset: number): number | undefined => (has(offset, 2) ? buf.readUInt16LE(offset) : undefined);
  const opt64 = (offset: number): number | undefined => (has(offset, 8) ? u64(buf, offset) : undefined);
  const u32 = (offset: number): number => buf.readUInt32LE(offset);
  const us64 = (offset: number): number => usToSeconds(u64(buf, offset));

  const wscale = buf.readUInt8(6);
  const flags7 = buf.readUInt8(7);
  const minRttUs = u32(148);

  return {
    length: len,
    state: buf.readUInt8(0),
    caState: buf.readUInt8(1),
    retransmits: buf.readUInt8(2),
    probes: buf.readUInt8(3),
    backoff: buf.readUInt8(4),
    options: buf.readUInt8(5),
    // Bitfields are allocated from the low bit on little-endian ABIs.
    sndWscale: wscale & 0x0f,
    rcvWscale: wscale >> 4,
    appLimited: (flags7 & 1) !== 0,
    fastopenClientFail: (flags7 >> 1) & 3,
    rto: usToSeconds(u32(8)),
    ato: usToSeconds(u32(12)),
    sndMss: u32(16),
    rcvMss: u32(20),
    unacked: u32(24),
    sacked: u32(28),
    lost: u32(32),
    retrans: u32(36),
    fackets: u32(40),
    lastDataSent: msToSeconds(u32(44)),
    lastAckSent: msToSeconds(u32(48)),
    lastDataRecv: msToSeconds(u32(52)),
    lastAckRecv: msToSeconds(u32(56)),
    pmtu: u32(60),
    rcvSsthresh: u32(64),
    rtt: usToSeconds(u32(68)),
    rttvar: usToSeconds(u32(72)),
    sndSsthresh: u32(76),
    sndCwnd: u32(80),
    advmss: u32(84),
    reordering: u32(88),
    rcvRtt: usToSeconds(u32(92)),
    rcvSpace: u32(96),
    totalRetrans: u32(100),

    pacingRate: rate64(buf, 104),
    maxPacingRate: rate64(buf, 112),
    bytesAcked: u64(buf, 120),
    bytesReceived: u64(buf, 128),
    segsOut: u32(136),
    segsIn: u32(140),
    notsentBytes: u32(144),
    minRtt: minRttUs === 0xffff_ffff ? undefined : usToSeconds(minRttUs),
    dataSegsIn: u32(152),
    dataSegsOut: u32(156),
    deliveryRate: rate64(buf, 160),
    busyTime: us64(168),
    rwndLimited: us64(176),
    sndbufLimited: us64(184),
    delivered: opt32(192),
    deliveredCe: opt32(196),
    bytesSent: opt64(200),
    bytesRetrans: opt64(208),
    dsackDups: opt32(216),
    reordSeen: opt32(220),
    rcvOoopack: opt32(224),
    sndWnd: opt32(228),
    rcvWnd: opt32(232),
    rehash: opt32(236),
    totalRto: opt16(240),
    totalRtoRecoveries: opt16(242),
    totalRtoTime: has(244, 4) ? msToSeconds(u32(244)) : undefined,
    receivedCe: opt32(248),
    deliveredE1Bytes: opt32(252),
    deliveredE0Bytes: opt32(256),
    deliveredCeBytes: opt32(260),
    receivedE1Bytes: opt32(264),
    receivedE0Bytes: opt32(268),
    receivedCeBytes: opt32(272),
    accecnFailMode: opt16(276),
    accecnOptSeen: opt16(278),
  };
}
