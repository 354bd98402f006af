// Decoders for the trace mode's kernel records (native/bpf/trace.h):
// struct trace_event from the ring buffer, struct trace_conn from the
// connection map. Pure: bytes in, objects out; the offsets are the
// compiler's (test/trace/layout.test.ts compares them with native offsetof).
import { formatEndpoint, formatIPv4, formatIPv6 } from './inet_diag.js';

export const TRACE_EV = { acked: 1, closed: 2, superseded: 3 } as const;
export const TRACE_EVENT_SIZE = 240;
export const TRACE_CHUNK_SIZE = 176;
export const TRACE_CONN_SIZE = 416;

/** The counters of native/bpf/trace.h (TRACE_C_*), in their order. */
export const TRACE_COUNTERS = ['sockets', 'writes', 'chunks', 'records', 'ringbufLost', 'mapFull', 'enableFailed', 'unsampled', 'superseded', 'existing'] as const;
export type TraceCounters = Record<(typeof TRACE_COUNTERS)[number] | 'malformed', number>;

/** One chunk as the kernel saw it (struct trace_chunk); times are CLOCK_MONOTONIC nanoseconds. */
export interface TraceChunk {
  chunk: number;
  firstWriteNs: bigint;
  lastWriteNs: bigint;
  schedNs: bigint;
  ackNs: bigint;
  startKey: number;
  lastKey: number;
  writes: number;
  pid: number;
  busy0: number;
  rwnd0: number;
  sndbuf0Us: number;
  retrans0: number;
  sndbuf0: number;
  cwnd0: number;
  mss0: number;
  busy1: number;
  rwnd1: number;
  sndbuf1Us: number;
  retrans1: number;
  cwnd1: number;
  mss1: number;
  srtt1Us: number;
  rateDelivered1: number;
  rateInterval1Us: number;
  sndbuf1: number;
  wmemQueued1: number;
  sampled: boolean;
  comm: string;
}

export interface TraceConnId {
  cookie: bigint;
  localPort: number;
  remotePort: number;
  family: number;
  local: string;
  remote: string;
}

export interface TraceEvent extends TraceConnId {
  kind: number;
  nowNs: bigint;
  c: TraceChunk;
}

export interface TraceConn extends TraceConnId {
  hasPrev: boolean;
  /** Open before the program was attached: its close is found by the iterator's passes (TraceSource.connections). */
  existing: boolean;
  cur: TraceChunk;
  prev: TraceChunk;
}

const AF_INET = 2;

function cString(b: Buffer, at: number, len: number): string {
  const end = b.indexOf(0, at);
  return b.toString('latin1', at, end < 0 || end > at + len ? at + len : end);
}

const address = (b: Buffer, at: number, family: number): string => (family === AF_INET ? formatIPv4(b, at) : formatIPv6(b, at));

function decodeChunk(b: Buffer, o: number): TraceChunk {
  return {
    chunk: Number(b.readBigUInt64LE(o)),
    firstWriteNs: b.readBigUInt64LE(o + 8),
    lastWriteNs: b.readBigUInt64LE(o + 16),
    schedNs: b.readBigUInt64LE(o + 24),
    ackNs: b.readBigUInt64LE(o + 32),
    startKey: b.readUInt32LE(o + 40),
    lastKey: b.readUInt32LE(o + 44),
    writes: b.readUInt32LE(o + 48),
    pid: b.readUInt32LE(o + 52),
    busy0: Number(b.readBigUInt64LE(o + 56)),
    rwnd0: Number(b.readBigUInt64LE(o + 64)),
    sndbuf0Us: Number(b.readBigUInt64LE(o + 72)),
    retrans0: b.readUInt32LE(o + 80),
    sndbuf0: b.readUInt32LE(o + 84),
    cwnd0: b.readUInt32LE(o + 88),
    mss0: b.readUInt32LE(o + 92),
    busy1: Number(b.readBigUInt64LE(o + 96)),
    rwnd1: Number(b.readBigUInt64LE(o + 104)),
    sndbuf1Us: Number(b.readBigUInt64LE(o + 112)),
    retrans1: b.readUInt32LE(o + 120),
    cwnd1: b.readUInt32LE(o + 124),
    mss1: b.readUInt32LE(o + 128),
    srtt1Us: b.readUInt32LE(o + 132),
    rateDelivered1: b.readUInt32LE(o + 136),
    rateInterval1Us: b.readUInt32LE(o + 140),
    sndbuf1: b.readUInt32LE(o + 144),
    wmemQueued1: b.readUInt32LE(o + 148),
    sampled: b[o + 152] !== 0,
    comm: cString(b, o + 160, 16),
  };
}

function decodeId(b: Buffer, o: number, ports: number, family: number, cookie: number, laddr: number, raddr: number): TraceConnId {
  const fam = b.readUInt16LE(o + family);
  const localPort = b.readUInt16LE(o + ports);
  const remotePort = b.readUInt16LE(o + ports + 2);
  return {
    cookie: b.readBigUInt64LE(o + cookie),
    localPort,
    remotePort,
    family: fam,
    local: formatEndpoint(address(b, o + laddr, fam), localPort),
    remote: formatEndpoint(address(b, o + raddr, fam), remotePort),
  };
}

/**
 * The events in a ring-buffer batch (whole structs, as the loader copies
 * them); a batch whose length is not a multiple of the struct is cut at the
 * last whole one and the rest counted in `malformed`.
 */
export function decodeTraceEvents(b: Buffer | null): { events: TraceEvent[]; malformed: number } {
  const events: TraceEvent[] = [];
  if (b === null) return { events, malformed: 0 };
  const whole = b.length - (b.length % TRACE_EVENT_SIZE);
  for (let o = 0; o < whole; o += TRACE_EVENT_SIZE) {
    const kind = b.readUInt32LE(o);
    if (kind < TRACE_EV.acked || kind > TRACE_EV.superseded) continue;
    events.push({ kind, nowNs: b.readBigUInt64LE(o + 24), ...decodeId(b, o, 4, 8, 16, 32, 48), c: decodeChunk(b, o + 64) });
  }
  return { events, malformed: b.length === whole ? 0 : 1 };
}

/** The followed connections in a map scan (whole structs). */
export function decodeTraceConns(b: Buffer | null): TraceConn[] {
  const out: TraceConn[] = [];
  if (b === null) return out;
  for (let o = 0; o + TRACE_CONN_SIZE <= b.length; o += TRACE_CONN_SIZE) {
    out.push({ ...decodeId(b, o, 20, 24, 0, 32, 48), hasPrev: b[o + 26] !== 0, existing: b[o + 27] !== 0, cur: decodeChunk(b, o + 64), prev: decodeChunk(b, o + 240) });
  }
  return out;
}
