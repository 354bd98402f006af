// inet_diag (include/uapi/linux/inet_diag.h, sock_diag.h): decoding the
// messages of a SOCK_DIAG_BY_FAMILY dump or of the TCP destroy feed, and
// encoding the request pieces (state mask, extension mask, port bytecode).
// Pure: bytes in, plain objects out. A malformed message is counted and
// skipped, never fatal for the rest of the batch.
import { ParseError } from './errors.js';
import { NLA_HDRLEN, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_DUMP_INTR, align4 } from './netlink.js';
import { TCP_INFO_MIN_LEN, parseTcpInfo, type TcpInfo } from './tcp_info.js';

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

/**
 * The tcp_info figures the agent reads on every poll, decoded straight from
 * the bytes (two u32 reads per u64, no BigInt, no 70-field object): the
 * full parseTcpInfo costs ~4 µs per socket, more than the kernel's dump.
 * Same names, units and offsets as TcpInfo (agent/parse/tcp_info.ts, which
 * test/watch/inet_diag.test.ts checks this against); a TcpInfo is a TcpChrono.
 */
export interface TcpChrono {
  state: number;
  /** Seconds (the kernel counts µs, in jiffy steps). */
  busyTime: number;
  rwndLimited: number;
  sndbufLimited: number;
  bytesAcked: number;
  bytesReceived: number;
  /** Linux 4.19+. */
  bytesSent?: number;
  bytesRetrans?: number;
  /** Bytes/second. */
  deliveryRate: number;
  /** Smoothed RTT, seconds. */
  rtt: number;
  sndCwnd: number;
  /** Sending MSS, bytes. */
  sndMss: number;
  /** Segments sent and not yet acknowledged. */
  unacked: number;
  /** Segments retransmitted over the connection's life. */
  totalRetrans: number;
  notsentBytes: number;
  appLimited: boolean;
  /** The peer's advertised window, bytes (Linux 5.4+). */
  sndWnd?: number;
}

/**
 * Netlink data is host-endian and 4-aligned: a Uint32Array over the batch
 * reads it several times faster than Buffer.readUInt32LE. A buffer whose
 * memory is not 4-aligned (a slice) is copied once.
 */
export interface Words {
  b: Buffer;
  w: Uint32Array;
}
export function wordsOf(buf: Buffer): Words {
  const b = (buf.byteOffset & 3) === 0 ? buf : Buffer.from(buf);
  return { b, w: new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2) };
}

const U32 = 0x1_0000_0000;

/** Reads the TcpChrono subset of the struct tcp_info at [s, e). Throws ParseError like parseTcpInfo. */
export function readTcpChrono(buf: Buffer, s = 0, e = buf.length): TcpChrono {
  const words = wordsOf(buf.subarray(s, e));
  return chronoAt(words, 0, words.b.length);
}

// s is 4-aligned in words.b; every field read here sits at a multiple of 4.
function chronoAt({ b, w }: Words, s: number, e: number): TcpChrono {
  const len = Math.min(e, b.length) - s;
  if (len < TCP_INFO_MIN_LEN) throw new ParseError(`${len} bytes, need at least ${TCP_INFO_MIN_LEN}`, 'tcp_info');
  const j = s >>> 2;
  const rateLo = w[j + 40]!;
  const rateHi = w[j + 41]!;
  return {
    state: b[s]!,
    appLimited: (b[s + 7]! & 1) !== 0,
    sndMss: w[j + 4]!, // 16
    unacked: w[j + 6]!, // 24
    rtt: w[j + 17]! / 1e6, // 68
    sndCwnd: w[j + 20]!, // 80
    totalRetrans: w[j + 25]!, // 100
    bytesAcked: w[j + 30]! + w[j + 31]! * U32, // 120
    bytesReceived: w[j + 32]! + w[j + 33]! * U32, // 128
    notsentBytes: w[j + 36]!, // 144
    deliveryRate: rateLo === 0xffffffff && rateHi === 0xffffffff ? Infinity : rateLo + rateHi * U32, // 160; ~0 = unlimited, as rate64
    busyTime: (w[j + 42]! + w[j + 43]! * U32) / 1e6, // 168
    rwndLimited: (w[j + 44]! + w[j + 45]! * U32) / 1e6, // 176
    sndbufLimited: (w[j + 46]! + w[j + 47]! * U32) / 1e6, // 184
    bytesSent: len >= 208 ? w[j + 50]! + w[j + 51]! * U32 : undefined, // 200, Linux 4.19
    bytesRetrans: len >= 216 ? w[j + 52]! + w[j + 53]! * U32 : undefined, // 208, Linux 4.19
    sndWnd: len >= 232 ? w[j + 57]! : undefined, // 228, Linux 5.4
  };
}

/** The fixed part of inet_diag_msg: identity and queue figures. */
export interface InetDiagHeader {
  readonly family: 4 | 6;
  readonly state: number;
  readonly timer: number;
  readonly retrans: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly ifindex: number;
  /** Socket cookie: unique for the life of the kernel, the connection's identity. */
  readonly cookie: bigint;
  /** Cookie as a Map key: a number while exact (always, in practice), else a string. */
  readonly key: number | string;
  readonly rqueue: number;
  readonly wqueue: number;
  readonly uid: number;
  /** sockfs inode (0 once the socket has no file, e.g. orphaned while closing). */
  readonly inode: number;
}

export interface InetDiagSocket extends InetDiagHeader {
  /** What the agent polls for; absent for sockets without tcp_info (time-wait, request sockets). */
  readonly chrono?: TcpChrono;
  /** The whole struct tcp_info, decoded on first use (undefined if absent or undecodable). */
  readonly info?: TcpInfo;
  readonly cong?: string;
  readonly skmem?: SkMemInfo;
  readonly cgroupId?: bigint;
  readonly shutdown?: number;
}

const INET_DIAG_MSG_LEN = 72;

export function formatIPv4(buf: Buffer, off: number): string {
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

/**
 * One decoded message. Numbers are read eagerly; strings, BigInts and the
 * full tcp_info only when asked for: on a steady poll the table needs none
 * of them for connections it already knows. Holds a reference to the batch.
 */
class DiagMessage implements InetDiagSocket {
  readonly family: 4 | 6;
  readonly state: number;
  readonly timer: number;
  readonly retrans: number;
  readonly localPort: number;
  readonly remotePort: number;
  readonly ifindex: number;
  readonly key: number | string;
  readonly rqueue: number;
  readonly wqueue: number;
  readonly uid: number;
  readonly inode: number;
  chrono?: TcpChrono;
  shutdown?: number;
  // Attribute payload offsets into buf (-1: absent).
  infoAt = -1;
  infoEnd = -1;
  congAt = -1;
  congEnd = -1;
  skmemAt = -1;
  skmemEnd = -1;
  cgroupAt = -1;
  private addrs?: [string, string];
  private infoMemo?: TcpInfo | null;

  constructor(
    private readonly buf: Buffer,
    private readonly at: number,
    w: Uint32Array,
  ) {
    const af = buf[at]!;
    if (af !== AF_INET && af !== AF_INET6) throw new ParseError(`unexpected family ${af}`, 'inet_diag_msg');
    const i = at >>> 2;
    this.family = af === AF_INET ? 4 : 6;
    this.state = buf[at + 1]!;
    this.timer = buf[at + 2]!;
    this.retrans = buf[at + 3]!;
    this.localPort = (buf[at + 4]! << 8) | buf[at + 5]!; // network order
    this.remotePort = (buf[at + 6]! << 8) | buf[at + 7]!;
    this.ifindex = w[i + 10]!;
    const lo = w[i + 11]!;
    const hi = w[i + 12]!;
    this.key = hi < 0x200000 ? hi * U32 + lo : `${hi}:${lo}`;
    this.rqueue = w[i + 14]!;
    this.wqueue = w[i + 15]!;
    this.uid = w[i + 16]!;
    this.inode = w[i + 17]!;
  }

  get cookie(): bigint {
    return this.buf.readBigUInt64LE(this.at + 44);
  }

  private addresses(): [string, string] {
    if (this.addrs === undefined) {
      const f = this.family === 4 ? formatIPv4 : formatIPv6;
      this.addrs = [f(this.buf, this.at + 8), f(this.buf, this.at + 24)];
    }
    return this.addrs;
  }

  get localAddress(): string {
    return this.addresses()[0];
  }

  get remoteAddress(): string {
    return this.addresses()[1];
  }

  get info(): TcpInfo | undefined {
    if (this.infoMemo === undefined) {
      try {
        this.infoMemo = this.infoAt < 0 ? null : parseTcpInfo(this.buf.subarray(this.infoAt, this.infoEnd));
      } catch {
        this.infoMemo = null; // readTcpChrono already counted it
      }
    }
    return this.infoMemo ?? undefined;
  }

  get cong(): string | undefined {
    if (this.congAt < 0) return undefined;
    const nul = this.buf.indexOf(0, this.congAt);
    return this.buf.toString('latin1', this.congAt, nul >= this.congAt && nul < this.congEnd ? nul : this.congEnd);
  }

  get skmem(): SkMemInfo | undefined {
    if (this.skmemAt < 0 || this.skmemEnd - this.skmemAt < 36) return undefined; // 9 u32 since Linux 4.x
    const u = (i: number): number => this.buf.readUInt32LE(this.skmemAt + 4 * i);
    return { rmemAlloc: u(0), rcvbuf: u(1), wmemAlloc: u(2), sndbuf: u(3), fwdAlloc: u(4), wmemQueued: u(5), optmem: u(6), backlog: u(7), drops: u(8) };
  }

  get cgroupId(): bigint | undefined {
    return this.cgroupAt < 0 ? undefined : this.buf.readBigUInt64LE(this.cgroupAt);
  }
}

/** Decodes the fixed inet_diag_msg at [start, end). Throws ParseError if it does not fit. */
export function parseInetDiagHeader(buf: Buffer, start: number, end: number, words?: Words): InetDiagHeader {
  if (end - start < INET_DIAG_MSG_LEN) {
    throw new ParseError(`${end - start} bytes, expected at least ${INET_DIAG_MSG_LEN}`, 'inet_diag_msg');
  }
  if (words === undefined || words.b !== buf || (start & 3) !== 0) {
    const own = wordsOf(buf.subarray(start, end));
    return new DiagMessage(own.b, 0, own.w);
  }
  return new DiagMessage(buf, start, words.w);
}

/**
 * Decodes one inet_diag_msg with its attributes. `keep` sees the fixed part
 * first, so sockets filtered out cost no attribute decoding.
 * Returns undefined for a socket `keep` rejects; throws ParseError if malformed.
 */
export function parseInetDiagMsg(
  buf: Buffer,
  start: number,
  end: number,
  keep?: (h: InetDiagHeader) => boolean,
  words?: Words,
): InetDiagSocket | undefined {
  if (words === undefined || words.b !== buf || (start & 3) !== 0) {
    // Standalone use: decode an aligned copy of this one message.
    const own = wordsOf(buf.subarray(start, end));
    return parseInetDiagMsg(own.b, 0, own.b.length, keep, own);
  }
  const m = parseInetDiagHeader(buf, start, end, words) as DiagMessage;
  if (keep !== undefined && !keep(m)) return undefined;
  // Attribute walk inlined (no closure per socket): 4-byte nlattr headers, 4-aligned.
  const w = words.w;
  let off = start + INET_DIAG_MSG_LEN;
  const limit = Math.min(end, buf.length);
  while (off + NLA_HDRLEN <= limit) {
    const hdr = w[off >>> 2]!;
    const len = hdr & 0xffff;
    if (len < NLA_HDRLEN || off + len > limit) {
      throw new ParseError(`malformed attributes (port ${m.localPort})`, 'inet_diag_msg');
    }
    const s = off + NLA_HDRLEN;
    const e = off + len;
    switch ((hdr >>> 16) & 0x3fff) {
      case INET_DIAG_INFO:
        m.infoAt = s;
        m.infoEnd = e;
        m.chrono = chronoAt(words, s, e);
        break;
      case INET_DIAG_CONG:
        m.congAt = s;
        m.congEnd = e;
        break;
      case INET_DIAG_SKMEMINFO:
        m.skmemAt = s;
        m.skmemEnd = e;
        break;
      case INET_DIAG_CGROUP_ID:
        if (e - s >= 8) m.cgroupAt = s;
        break;
      case INET_DIAG_SHUTDOWN:
        if (e > s) m.shutdown = buf[s]!;
        break;
      default:
        break; // newer kernels add attributes: ignore what we do not know
    }
    off += align4(len);
  }
  return m;
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
  /** Sockets decoded (in `sockets`, or handed to the visitor). */
  decoded: number;
}

/**
 * Decodes a dump response or a destroy-feed batch (concatenated nlmsghdr frames).
 * With `visit`, each socket is handed over as soon as it is decoded and not
 * collected: on a 100k-socket dump the objects then die young (cheap to
 * collect) instead of being promoted while the whole batch is held.
 */
export function parseDiagBatch(
  buf: Buffer,
  keep?: (h: InetDiagHeader) => boolean,
  visit?: (s: InetDiagSocket) => void,
): DiagBatch {
  const out: DiagBatch = { sockets: [], interrupted: false, done: false, parseErrors: 0, filtered: 0, decoded: 0 };
  const words = wordsOf(buf);
  const { b, w } = words;
  // nlmsghdr walk inlined (u32 len, u16 type, u16 flags, u32 seq, u32 pid), 4-aligned frames.
  let off = 0;
  let messages = 0;
  while (off + NLMSG_HDRLEN <= b.length) {
    const len = w[off >>> 2]!;
    if (len < NLMSG_HDRLEN || off + len > b.length) {
      out.parseErrors++;
      out.firstError ??= `netlink framing broken after ${messages} messages`;
      return out;
    }
    const tf = w[(off >>> 2) + 1]!;
    const type = tf & 0xffff;
    messages++;
    if ((tf >>> 16) & NLM_F_DUMP_INTR) out.interrupted = true;
    if (type === SOCK_DIAG_BY_FAMILY) {
      try {
        const s = parseInetDiagMsg(b, off + NLMSG_HDRLEN, off + len, keep, words);
        if (s === undefined) {
          out.filtered++;
        } else {
          out.decoded++;
          if (visit !== undefined) visit(s);
          else out.sockets.push(s);
        }
      } catch (err) {
        out.parseErrors++;
        out.firstError ??= err instanceof Error ? err.message : String(err);
      }
    } else if (type === NLMSG_DONE) {
      out.done = true;
    } else if (type === NLMSG_ERROR && len >= NLMSG_HDRLEN + 4) {
      const errno = -b.readInt32LE(off + NLMSG_HDRLEN);
      if (errno !== 0) out.kernelErrno ??= errno;
    }
    off += align4(len);
  }
  // Trailing bytes shorter than a header: only padding (zeros) is legitimate.
  for (let i = off; i < b.length; i++) {
    if (b[i] !== 0) {
      out.parseErrors++;
      out.firstError ??= `netlink framing broken after ${messages} messages`;
      break;
    }
  }
  return out;
}
