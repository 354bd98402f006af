// inet_diag (include/uapi/linux/inet_diag.h, sock_diag.h): decoding the
// messages of a SOCK_DIAG_BY_FAMILY dump or of the TCP destroy feed, and
// encoding the request pieces (state mask, extension mask, port bytecode).
// Pure: bytes in, plain objects out. A malformed message is counted and
// skipped, never fatal for the rest of the batch.
import { ParseError } from './errors.js';
import { NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP_INTR, nlmsgError, walkAttrs, walkMessages } from './netlink.js';
import { parseTcpInfo, type TcpInfo } from './tcp_info.js';

export const SOCK_DIAG_BY_FAMILY = 20;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** Kernel TCP states (include/net/tcp_states.h). */
export const TCP_STATES = {
  established: 1,
  'syn-sent': 2,
  'syn-recv': 3,
  'fin-wait-1': 4,
  'fin-wait-2': 5,
  'time-wait': 6,
  close: 7,
  'close-wait': 8,
  'last-ack': 9,
  listen: 10,
  closing: 11,
} as const;
export type TcpStateName = keyof typeof TCP_STATES;
export const TCP_ESTABLISHED = 1;
export const TCP_CLOSE = 7;
export const TCP_LISTEN = 10;

const STATE_NAMES: string[] = [];
for (const [name, n] of Object.entries(TCP_STATES)) STATE_NAMES[n] = name;
export function stateName(state: number): string {
  return STATE_NAMES[state] ?? `unknown-${state}`;
}

/** idiag_states bitmask for a list of states. */
export function stateMask(states: Iterable<number>): number {
  let mask = 0;
  for (const s of states) mask |= 1 << s;
  return mask >>> 0;
}

// Attribute types (enum in inet_diag.h; values past 6.1 are not used here).
export const INET_DIAG_MEMINFO = 1;
export const INET_DIAG_INFO = 2;
export const INET_DIAG_CONG = 4;
export const INET_DIAG_SKMEMINFO = 7;
export const INET_DIAG_SHUTDOWN = 8;
export const INET_DIAG_PROTOCOL = 10;
export const INET_DIAG_CGROUP_ID = 21; // Linux 5.7+, sent unasked

/** idiag_ext: only the first eight attributes can be requested, as bit (type - 1). */
export function extMask(types: Iterable<number>): number {
  let mask = 0;
  for (const t of types) {
    if (t < 1 || t > 8) throw new RangeError(`inet_diag attribute ${t} cannot be requested in idiag_ext`);
    mask |= 1 << (t - 1);
  }
  return mask;
}

// Bytecode ops (inet_diag_bc_op: u8 code, u8 yes, u16 no).
const BC_JMP = 1;
const BC_S_GE = 2;
const BC_S_LE = 3;

export interface PortRange {
  from: number;
  to: number;
}

/**
 * Kernel-side filter "local port in any of ranges" (INET_DIAG_REQ_BYTECODE).
 * The kernel rejects a non-matching socket for ~0.1 µs instead of sending
 * ~400 bytes of it. Layout per range, like ss's OR:
 *   S_GE lo (fail → next range) · S_LE hi (fail → next range) · JMP → accept
 * The JMP's never-taken `yes` of 4 puts the next range on the "yes chain"
 * that the kernel's validator (inet_diag_bc_audit) requires of jump targets.
 * The last range has no JMP: running off the end accepts, jumping 4 past it rejects.
 */
export function portFilterBytecode(ranges: readonly PortRange[]): Buffer | undefined {
  if (ranges.length === 0) return undefined;
  const blocks = ranges.map((_, i) => (i === ranges.length - 1 ? 16 : 20));
  const total = blocks.reduce((a, b) => a + b, 0);
  if (total > 4096) throw new RangeError('too many port ranges for one kernel filter (at most 200)');
  const bc = Buffer.alloc(total);
  let off = 0;
  ranges.forEach((r, i) => {
    const last = i === ranges.length - 1;
    const size = blocks[i]!;
    const remaining = total - off;
    const op = (at: number, code: number, yes: number, no: number, port?: number): void => {
      bc.writeUInt8(code, at);
      bc.writeUInt8(yes, at + 1);
      bc.writeUInt16LE(no, at + 2);
      if (port !== undefined) bc.writeUInt16LE(port, at + 6); // the port sits in the next op's `no`
    };
    // On failure: to the next block, or (last block) 4 past the end = reject.
    op(off, BC_S_GE, 8, last ? remaining + 4 : size, r.from);
    op(off + 8, BC_S_LE, 8, last ? remaining - 8 + 4 : size - 8, r.to);
    if (!last) op(off + 16, BC_JMP, 4, remaining - 16);
    off += size;
  });
  return bc;
}

export interface SkMemInfo {
  rmemAlloc: number;
  rcvbuf: number;
  wmemAlloc: number;
  sndbuf: number;
  fwdAlloc: number;
  wmemQueued: number;
  optmem: number;
  backlog: number;
  drops: number;
}

/** The fixed part of inet_diag_msg: identity and queue figures. */
export interface InetDiagHeader {
  family: 4 | 6;
  state: number;
  timer: number;
  retrans: number;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  ifindex: number;
  /** Socket cookie: unique for the life of the kernel, the connection's key. */
  cookie: bigint;
  /** Cookie as a Map key: a number while exact (always, in practice), else a string. */
  key: number | string;
  rqueue: number;
  wqueue: number;
  uid: number;
  /** sockfs inode (0 once the socket has no file, e.g. orphaned while closing). */
  inode: number;
}

export interface InetDiagSocket extends InetDiagHeader {
  /** Absent for sockets without tcp_info (time-wait, request sockets) or if it failed to parse. */
  info?: TcpInfo;
  cong?: string;
  skmem?: SkMemInfo;
  cgroupId?: bigint;
  shutdown?: number;
}

const INET_DIAG_MSG_LEN = 72;

function formatIPv4(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** RFC 5952 text form; v4-mapped addresses are shown as plain IPv4. */
export function formatIPv6(buf: Buffer, off: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(buf.readUInt16BE(off + 2 * i));
  if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff) {
    return formatIPv4(buf, off + 12);
  }
  // Longest run of zero words (length >= 2) becomes "::".
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number, b: number): string => w.slice(a, b).map((x) => x.toString(16)).join(':');
  if (bestAt < 0) return hex(0, 8);
  return `${hex(0, bestAt)}::${hex(bestAt + bestLen, 8)}`;
}

/** `ip:port`, IPv6 in brackets. */
export function formatEndpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Decodes the fixed inet_diag_msg at [start, end). Throws ParseError if it does not fit. */
export function parseInetDiagHeader(buf: Buffer, start: number, end: number): InetDiagHeader {
  if (end - start < INET_DIAG_MSG_LEN) {
    throw new ParseError(`${end - start} bytes, expected at least ${INET_DIAG_MSG_LEN}`, 'inet_diag_msg');
  }
  const af = buf[start]!;
  if (af !== AF_INET && af !== AF_INET6) throw new ParseError(`unexpected family ${af}`, 'inet_diag_msg');
  const v4 = af === AF_INET;
  const lo = buf.readUInt32LE(start + 44);
  const hi = buf.readUInt32LE(start + 48);
  return {
    family: v4 ? 4 : 6,
    state: buf[start + 1]!,
    timer: buf[start + 2]!,
    retrans: buf[start + 3]!,
    localPort: buf.readUInt16BE(start + 4),
    remotePort: buf.readUInt16BE(start + 6),
    localAddress: v4 ? formatIPv4(buf, start + 8) : formatIPv6(buf, start + 8),
    remoteAddress: v4 ? formatIPv4(buf, start + 24) : formatIPv6(buf, start + 24),
    ifindex: buf.readUInt32LE(start + 40),
    cookie: (BigInt(hi) << 32n) | BigInt(lo),
    key: hi < 0x200000 ? hi * 0x100000000 + lo : `${hi}:${lo}`,
    rqueue: buf.readUInt32LE(start + 56),
    wqueue: buf.readUInt32LE(start + 60),
    uid: buf.readUInt32LE(start + 64),
    inode: buf.readUInt32LE(start + 68),
  };
}

function parseSkMem(buf: Buffer, start: number, end: number): SkMemInfo | undefined {
  if (end - start < 36) return undefined; // 9 u32 since Linux 4.x
  const u = (i: number): number => buf.readUInt32LE(start + 4 * i);
  return {
    rmemAlloc: u(0),
    rcvbuf: u(1),
    wmemAlloc: u(2),
    sndbuf: u(3),
    fwdAlloc: u(4),
    wmemQueued: u(5),
    optmem: u(6),
    backlog: u(7),
    drops: u(8),
  };
}

/**
 * Decodes one inet_diag_msg with its attributes. `keep` sees the fixed part
 * first, so sockets filtered out cost no tcp_info decoding.
 * Returns undefined for a socket `keep` rejects; throws ParseError if malformed.
 */
export function parseInetDiagMsg(
  buf: Buffer,
  start: number,
  end: number,
  keep?: (h: InetDiagHeader) => boolean,
): InetDiagSocket | undefined {
  const sock: InetDiagSocket = parseInetDiagHeader(buf, start, end);
  if (keep !== undefined && !keep(sock)) return undefined;
  let infoError: unknown;
  const ok = walkAttrs(buf, start + INET_DIAG_MSG_LEN, end, (type, s, e) => {
    switch (type) {
      case INET_DIAG_INFO:
        try {
          sock.info = parseTcpInfo(buf.subarray(s, e));
        } catch (err) {
          infoError = err;
        }
        break;
      case INET_DIAG_CONG: {
        const nul = buf.indexOf(0, s);
        sock.cong = buf.toString('latin1', s, nul >= s && nul < e ? nul : e);
        break;
      }
      case INET_DIAG_SKMEMINFO:
        sock.skmem = parseSkMem(buf, s, e);
        break;
      case INET_DIAG_CGROUP_ID:
        if (e - s >= 8) sock.cgroupId = buf.readBigUInt64LE(s);
        break;
      case INET_DIAG_SHUTDOWN:
        if (e - s >= 1) sock.shutdown = buf[s]!;
        break;
      default:
        break; // newer kernels add attributes: ignore what we do not know
    }
  });
  if (!ok) throw new ParseError(`malformed attributes (port ${sock.localPort})`, 'inet_diag_msg');
  if (infoError !== undefined) {
    throw infoError instanceof ParseError ? infoError : new ParseError(String(infoError), 'tcp_info');
  }
  return sock;
}

export interface DiagBatch {
  sockets: InetDiagSocket[];
  /** NLM_F_DUMP_INTR seen: the socket tables changed mid-dump, the snapshot may be inconsistent. */
  interrupted: boolean;
  /** NLMSG_DONE seen (dumps only; destroy-feed batches have none). */
  done: boolean;
  /** Messages (or framing faults) that could not be decoded. */
  parseErrors: number;
  /** First parse error, for a log line. */
  firstError?: string;
  /** errno from an NLMSG_ERROR in the stream, if any. */
  kernelErrno?: number;
  /** Messages the keep predicate rejected. */
  filtered: number;
}

/** Decodes a dump response or a destroy-feed batch (concatenated nlmsghdr frames). */
export function parseDiagBatch(buf: Buffer, keep?: (h: InetDiagHeader) => boolean): DiagBatch {
  const out: DiagBatch = { sockets: [], interrupted: false, done: false, parseErrors: 0, filtered: 0 };
  const walk = walkMessages(buf, (h) => {
    if (h.flags & NLM_F_DUMP_INTR) out.interrupted = true;
    if (h.type === NLMSG_DONE) {
      out.done = true;
      return;
    }
    if (h.type === NLMSG_ERROR) {
      const errno = nlmsgError(buf, h);
      if (errno !== 0) out.kernelErrno ??= errno ?? -1;
      return;
    }
    if (h.type !== SOCK_DIAG_BY_FAMILY) return;
    try {
      const s = parseInetDiagMsg(buf, h.start, h.end, keep);
      if (s === undefined) out.filtered++;
      else out.sockets.push(s);
    } catch (err) {
      out.parseErrors++;
      out.firstError ??= err instanceof Error ? err.message : String(err);
    }
  });
  if (walk.malformed) {
    out.parseErrors++;
    out.firstError ??= `netlink framing broken after ${walk.messages} messages`;
  }
  return out;
}
