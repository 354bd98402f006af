// The diag source: one NETLINK_SOCK_DIAG dump per family per poll, decoded
// into sockets, with the filters that decide what the agent watches.
// Ports are filtered in the kernel (bytecode); remote CIDRs, states and the
// "carried data" rule here, before tcp_info is decoded.
import { BlockList } from 'node:net';
import { performance } from 'node:perf_hooks';
import { native } from '../native.js';
import {
  AF_INET,
  AF_INET6,
  INET_DIAG_CONG,
  INET_DIAG_INFO,
  INET_DIAG_SKMEMINFO,
  TCP_ESTABLISHED,
  TCP_LISTEN,
  TCP_STATES,
  extMask,
  parseDiagBatch,
  portFilterBytecode,
  stateMask,
  type InetDiagHeader,
  type InetDiagSocket,
  type PortRange,
  type TcpChrono,
} from '../parse/inet_diag.js';

/** Native exports of native/diag.cc (declared here, next to their only user). */
export interface NativeDestroyFeed {
  close(flush?: boolean): void;
  stats(): { wakeups: number; datagrams: number; bytes: number; overruns: number; errors: number };
}
export interface DiagBinding {
  /** One dump into a new Buffer (through `fd`, a diagSocket(), if given). */
  diagDump(family: number, statesMask: number, extMask: number, bytecode?: Buffer, fd?: number): Buffer;
  /** One dump copied into `into`: bytes, or -bytes if `into` is too small (then diagCopyLast). */
  diagDumpInto(family: number, statesMask: number, extMask: number, bytecode: Buffer | undefined, into: Buffer, fd?: number): number;
  diagCopyLast(into: Buffer): number;
  /**
   * A sock_diag socket made in the network namespace of `nsFd` (an open
   * /run/netns/NAME or /proc/PID/ns/net; setns needs CAP_SYS_ADMIN), for the
   * dumps' `fd`; the caller closes it. Without nsFd: this process's namespace.
   */
  diagSocket?(nsFd?: number): number;
  /** /proc/thread-self/net/<name> opened inside the namespace of nsFd (it keeps showing that namespace). */
  procNetOpen?(nsFd: number, name: string): number;
  /** Subscribed in the namespace of `nsFd` if given. close(true) hands what is queued to onBatch first. */
  DestroyFeed: new (onBatch: (datagrams: Buffer) => void, nsFd?: number) => NativeDestroyFeed;
}
export function diagBinding(): DiagBinding {
  return native() as unknown as DiagBinding;
}

export const DEFAULT_STATES: readonly number[] = [
  TCP_STATES.established,
  TCP_STATES['fin-wait-1'],
  TCP_STATES['fin-wait-2'],
  TCP_STATES['close-wait'],
  TCP_STATES['last-ack'],
  TCP_STATES.closing,
];

export interface DiagFilter {
  /** Local port ranges; empty = all ports. */
  ports: readonly PortRange[];
  /** Remote address prefixes ("10.0.0.0/8", "2001:db8::/32"); empty = everywhere. */
  remoteCidrs: readonly string[];
  /** TCP states to report (kernel numbers). */
  states: readonly number[];
}

/** Compiled filter: what the kernel does, and what is checked per socket here. */
export class SocketFilter {
  readonly statesMask: number;
  readonly bytecode: Buffer | undefined;
  private readonly remotes: BlockList | undefined;
  private readonly wanted: Set<number>;

  constructor(readonly spec: DiagFilter) {
    this.wanted = new Set(spec.states);
    // Listeners are dumped too (a handful of sockets) so connections can be
    // labelled by service port; they are never reported as connections.
    this.statesMask = stateMask([...spec.states, TCP_LISTEN]);
    this.bytecode = portFilterBytecode(spec.ports);
    if (spec.remoteCidrs.length > 0) {
      this.remotes = new BlockList();
      for (const c of spec.remoteCidrs) {
        const { address, prefix, family } = parseCidr(c);
        this.remotes.addSubnet(address, prefix, family);
      }
    }
  }

  /** Identity-level check of a dumped socket (before tcp_info is decoded). */
  matchesHeader(h: InetDiagHeader): boolean {
    return this.wanted.has(h.state) && this.matchesRemote(h);
  }

  /** Check of a destroyed socket: its state is always `close`, and the kernel filter did not run. */
  matchesDestroyed(h: InetDiagHeader): boolean {
    return this.matchesPort(h.localPort) && this.matchesRemote(h);
  }

  matchesRemote(h: InetDiagHeader): boolean {
    if (this.remotes === undefined) return true;
    return this.remotes.check(h.remoteAddress, h.remoteAddress.includes(':') ? 'ipv6' : 'ipv4');
  }

  matchesPort(port: number): boolean {
    if (this.spec.ports.length === 0) return true;
    return this.spec.ports.some((r) => port >= r.from && port <= r.to);
  }

  /** Full check: outside established, only connections that carried data count. */
  matches(s: InetDiagSocket): boolean {
    if (s.chrono === undefined) return false;
    if (s.state === TCP_ESTABLISHED) return true;
    return carriedData(s);
  }
}

export function carriedData(s: InetDiagSocket): boolean {
  const i = s.chrono;
  return i !== undefined && (i.bytesAcked > 0 || i.bytesReceived > 0);
}

/** Parses "a.b.c.d/n" or "v6/n" (a bare address is a /32 or /128). Throws RangeError. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } {
  const [address = '', bits, extra] = text.trim().split('/');
  const family = address.includes(':') ? 'ipv6' : 'ipv4';
  const max = family === 'ipv6' ? 128 : 32;
  const prefix = bits === undefined ? max : Number(bits);
  const probe = new BlockList();
  try {
    if (extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > max || bits === '') throw new Error();
    probe.addSubnet(address, prefix, family);
  } catch {
    throw new RangeError(`"${text}" is not an address prefix like 10.0.0.0/8 or 2001:db8::/32`);
  }
  return { address, prefix, family };
}

export interface PollResult {
  /** Connections that passed every filter (empty when a visitor was given to poll()). */
  sockets: InetDiagSocket[];
  /** How many connections passed every filter. */
  kept: number;
  /** The first kept connection's figures (to tell which optional fields this kernel has). */
  sample?: TcpChrono;
  /** Local ports with a listener (any address, either family). */
  listeningPorts: Set<number>;
  /** Sockets the kernel returned (before the filters applied here). */
  seen: number;
  parseErrors: number;
  firstParseError?: string;
  /** Dumps retried because the kernel marked them interrupted (NLM_F_DUMP_INTR: the tables changed mid-dump). */
  interruptedRetries: number;
  /** Still inconsistent after the retries (the result is used anyway). */
  interrupted: boolean;
  durationSeconds: number;
}

const EXT = extMask([INET_DIAG_INFO, INET_DIAG_CONG, INET_DIAG_SKMEMINFO]);
const BOTH: readonly number[] = [AF_INET, AF_INET6];
/** Retries of an interrupted dump per family (so at most three dumps). */
export const MAX_INTR_RETRIES = 2;

export class DiagSource {
  readonly filter: SocketFilter;
  /** Reused by every streamed dump (see diagDumpInto in native/diag.cc for why). */
  private scratch: Buffer;

  constructor(
    spec: DiagFilter,
    private readonly binding: DiagBinding = diagBinding(),
    scratchBytes = 256 * 1024,
  ) {
    this.filter = new SocketFilter(spec);
    this.scratch = Buffer.allocUnsafeSlow(scratchBytes);
  }

  /**
   * One poll: both families, synchronous (a 50k-socket dump is tens of ms).
   * With `visit`, connections are streamed to it as they are decoded (a
   * socket may be visited twice if a dump is retried; it is valid only
   * during the call, its bytes are reused by the next dump) and listener
   * ports are added to `listening` as they are seen; the kernel dumps a
   * family's listeners before its connections. `fd`: dump through this
   * diagSocket() (another network namespace's) instead of the process's
   * own; `families`: only these (default both). Throws native errors.
   */
  poll(visit?: (s: InetDiagSocket) => void, listening: Set<number> = new Set(), fd?: number, families: readonly number[] = BOTH): PollResult {
    const t0 = performance.now();
    const result: PollResult = {
      sockets: [],
      kept: 0,
      listeningPorts: listening,
      seen: 0,
      parseErrors: 0,
      interruptedRetries: 0,
      interrupted: false,
      durationSeconds: 0,
    };
    const keep = (h: InetDiagHeader): boolean => {
      if (h.state === TCP_LISTEN) {
        listening.add(h.localPort);
        return false;
      }
      return this.filter.matchesHeader(h);
    };
    const accept = (s: InetDiagSocket): void => {
      if (!this.filter.matches(s)) return;
      result.kept++;
      result.sample ??= s.chrono;
      if (visit !== undefined) visit(s);
      else result.sockets.push(s);
    };
    for (const family of families) {
      for (let attempt = 0; ; attempt++) {
        // An interrupted attempt is discarded: what it collected (and counted
        // as kept) is dropped, so a retried socket is neither listed nor
        // counted twice. Streamed sockets cannot be taken back; the table's
        // track() is idempotent within a poll.
        const socketsMark = result.sockets.length;
        const keptMark = result.kept;
        const raw =
          visit !== undefined
            ? this.dumpReused(family, fd)
            : fd === undefined
              ? this.binding.diagDump(family, this.filter.statesMask, EXT, this.filter.bytecode)
              : this.binding.diagDump(family, this.filter.statesMask, EXT, this.filter.bytecode, fd);
        const batch = parseDiagBatch(raw, keep, accept);
        if (batch.interrupted && attempt < MAX_INTR_RETRIES) {
          result.interruptedRetries++;
          result.sockets.length = socketsMark;
          result.kept = keptMark;
          continue;
        }
        result.interrupted ||= batch.interrupted;
        result.seen += batch.decoded + batch.filtered;
        result.parseErrors += batch.parseErrors;
        result.firstParseError ??= batch.firstError;
        break;
      }
    }
    result.durationSeconds = (performance.now() - t0) / 1000;
    return result;
  }

  private dumpReused(family: number, fd: number | undefined): Buffer {
    let n =
      fd === undefined
        ? this.binding.diagDumpInto(family, this.filter.statesMask, EXT, this.filter.bytecode, this.scratch)
        : this.binding.diagDumpInto(family, this.filter.statesMask, EXT, this.filter.bytecode, this.scratch, fd);
    if (n < 0) {
      // Grown with headroom; never shrunk (the peak is what it must hold).
      this.scratch = Buffer.allocUnsafeSlow(Math.ceil(-n * 1.25));
      n = this.binding.diagCopyLast(this.scratch);
    }
    return this.scratch.subarray(0, n);
  }
}
