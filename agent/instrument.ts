// instrument(socket): per-chunk delivery telemetry for a connected net.Socket
// in this process, from the socket's own error queue.
//
// Two ways to find the chunks' bytes:
//  - per write (the default): socket.write()/end() are hooked and define the
//    chunks (the bytes the application wrote, and when); the handle's write
//    methods are where Node hands bytes to the kernel: Node keeps at most one
//    write request in flight per socket and libuv starts it at once, so flags
//    switched just before a hand-over apply to exactly that request's sendmsg
//    calls. That is how records (and their costly OPT_STATS) are requested
//    only for the writes that end a sampled chunk.
//  - units only (`unitsOnly`, what instrumentHttp uses): nothing of the socket
//    is hooked. A unit's bytes are read from the socket's own count at its
//    boundaries (socket.bytesWritten: what was handed to the socket; the
//    handle's bytesWritten less its writeQueueSize: what reached the kernel,
//    whose keys count the same bytes), and the record flags are on from
//    finishing() (or unit()) until the kernel has the unit's last byte.
// Either way the handle's close is watched (once per process, on the handle's
// prototype) so that the queue is drained before the fd closes.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { nowSeconds } from './clock.js';
import { ChunkTracker, type ChronoSnapshot, type ChunkRecord } from './model/chunks.js';
import { SOL_SOCKET } from './parse/cmsg.js';
import { native } from './native.js';
import { readTcpChrono, type TcpChrono } from './parse/inet_diag.js';
import { parseTcpInfo, type TcpInfo } from './parse/tcp_info.js';
import { errqueue, type Registration } from './sources/errqueue.js';
import { enableTimestamping, idleFlags, recordFlags, setFlags } from './sources/timestamping.js';

export type { ChunkRecord } from './model/chunks.js';

export interface InstrumentOptions {
  /** Report a chunk as stalled when its last byte is not acked after this long. Default 10 000 ms. */
  stallAfterMs?: number;
  /** Sample chunks: an integer N ≥ 1 tracks every Nth chunk; a number in (0, 1) is a probability. Default 1. */
  sample?: number;
  /** Also request SND records (last byte left the host). Default false: SCHED and ACK suffice. */
  sndRecords?: boolean;
  /** Most chunks awaiting records; older ones are reported as stalled. Default 1024. */
  maxPending?: number;
  /** Spans shorter than this (seconds) are classified 'unknown'. Default 4 jiffies (0.016). */
  minSpan?: number;
  /**
   * Units announce their last writes with finishing(): request records only
   * for those (one set per unit instead of one per write). Default false.
   */
  finalWritesOnly?: boolean;
  /**
   * Only units are chunks, and the probe touches no write: socket.write()
   * and the socket's handle are left as they are, and each unit's bytes are
   * read from the socket's byte count at unit(), finishing() and endUnit().
   * Bytes written outside a unit belong to no chunk. A unit's writeTime is
   * the time of unit(); its lastWriteTime that of finishing() (or endUnit()).
   * The record flags are on from unit() (with finalWritesOnly: from
   * finishing()) until the kernel has the unit's last byte. Default false.
   */
  unitsOnly?: boolean;
}

export interface ProbeStats {
  /** Cumulative chronographs of the connection, seconds. */
  busy: number;
  rwndLimited: number;
  sndbufLimited: number;
  bytesAcked?: number;
  bytesRetrans?: number;
  deliveryRate?: number;
  rtt: number;
  /** Bytes handed to the socket since instrumentation. */
  bytesWritten: number;
  chunks: number;
  stalls: number;
  /** Chunks matched to a record keyed past their last byte (writes coalesced or a record missing). */
  inexact: number;
  pending: number;
  /**
   * ACK records the kernel dropped because the socket's error queue was full
   * (the host's event loop did not drain it in time: about 157 records fill
   * the default 128 KiB receive-memory budget). Their chunks complete with
   * `exact: false`, matched to a later record; when no later record comes
   * (the socket went quiet), a chunk past stallAfter whose bytes the kernel
   * shows acknowledged is counted here instead of reported as a stall.
   */
  lostRecords: number;
  /** Hand-overs to the kernel with bytes that did not pass through socket.write()/end(). */
  unaccountedWrites: number;
  /** The full tcp_info at the time of the call (undefined once the socket is closed). */
  tcpInfo?: TcpInfo;
}

export interface Probe extends EventEmitter {
  /** The writes from here to the next unit() or end() form one chunk. */
  unit(label?: string): void;
  /** The current unit's remaining data is written now: only these writes need records (cheaper). */
  finishing(): void;
  /** Ends the current unit now; later writes are chunks of their own. */
  endUnit(): void;
  stats(): ProbeStats;
  /** Turns timestamping off, drains, and emits nothing afterwards. */
  close(): void;
  on(event: 'chunk' | 'stall', listener: (c: ChunkRecord) => void): this;
}

const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
/**
 * Chunk starts this close together share one TCP_INFO read (a loop writing
 * chunk after chunk): the chronographs move in whole jiffies (1-4 ms), so a
 * read this recent is off by at most the jiffy each figure is already off by.
 * Under load the read is the costliest part of a chunk's start (the socket
 * lock and tcp_get_info(): 7 % of a per-write server's JS thread).
 */
const TCP_INFO_REUSE_MS = 0.5;
/** An upper bound of one record's truesize (skb with OPT_STATS), bytes. */
const RECORD_TRUESIZE_BOUND = 1536;

type HandleWrite = (req: unknown, ...args: unknown[]) => number;
const WRITE_METHODS = ['writeBuffer', 'writev', 'writeUtf8String', 'writeAsciiString', 'writeLatin1String', 'writeUcs2String'] as const;
const ENCODING_OF: Record<string, BufferEncoding> = {
  writeUtf8String: 'utf8',
  writeAsciiString: 'ascii',
  writeLatin1String: 'latin1',
  writeUcs2String: 'ucs2',
};

interface StreamHandle {
  fd?: number;
  /** Bytes handed to the handle (libuv) so far. */
  bytesWritten?: number;
  /** Of those, bytes libuv has not yet written to the kernel. */
  writeQueueSize?: number;
  close?: (...args: unknown[]) => unknown;
  [m: string]: unknown;
}

function handleOf(socket: Socket): StreamHandle | undefined {
  return (socket as unknown as { _handle?: StreamHandle | null })._handle ?? undefined;
}

/** Bytes one handle write hands over (strings are measured in their encoding). */
function bytesOf(method: string, args: unknown[]): number {
  if (method === 'writeBuffer') return (args[0] as Uint8Array).byteLength;
  if (method === 'writev') {
    const [chunks, allBuffers] = args as [unknown[], boolean];
    let n = 0;
    if (allBuffers) for (const b of chunks) n += (b as Uint8Array).byteLength;
    else
      for (let i = 0; i < chunks.length; i += 2) {
        const c = chunks[i];
        n += typeof c === 'string' ? Buffer.byteLength(c, chunks[i + 1] as BufferEncoding) : (c as Uint8Array).byteLength;
      }
    return n;
  }
  return Buffer.byteLength(args[0] as string, ENCODING_OF[method]);
}

/** Bytes of a socket.write()/end() argument (a callback or nothing counts 0). */
export function appBytes(data: unknown, encoding: unknown): number {
  if (typeof data === 'string') return Buffer.byteLength(data, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  if (data instanceof Uint8Array) return data.byteLength;
  return 0;
}

/** Puts back what hook() replaced: own properties restored, shadowing ones deleted. */
function restore(target: Record<string, unknown>, saved: Map<string, unknown>): void {
  for (const [m, own] of saved) {
    if (own === undefined) delete target[m];
    else target[m] = own;
  }
  saved.clear();
}

// Before Node closes an instrumented socket's fd (handle.close(), or
// handle.reset() for a reset): the probe drains the error queue (the final
// ACKs are in there) and leaves the reader, so a new socket reusing the fd
// number is not confused with this one. Hooked once per handle prototype
// (TCP), not on each handle: Node's own objects keep their hidden classes.
const beforeClose = new WeakMap<object, () => void>();
const closeWatched = new WeakSet<object>();

function watchClose(handle: StreamHandle, onClose: () => void): void {
  const proto = Object.getPrototypeOf(handle) as Record<string, unknown> | null;
  if (proto !== null && !closeWatched.has(proto)) {
    closeWatched.add(proto);
    for (const m of ['close', 'reset'] as const) {
      const orig = proto[m];
      if (typeof orig !== 'function') continue;
      proto[m] = function (this: object, ...args: unknown[]): unknown {
        const f = beforeClose.get(this);
        if (f !== undefined) {
          beforeClose.delete(this);
          try {
            f();
          } catch {
            /* never let instrumentation break a close */
          }
        }
        return (orig as (...a: unknown[]) => unknown).apply(this, args);
      };
    }
  }
  beforeClose.set(handle, onClose);
}

/** What both ways of finding the chunks share: timestamping, the error queue, the stall timer, stats and close. */
abstract class ProbeCore extends EventEmitter implements Probe {
  protected readonly fd: number;
  protected readonly tracker: ChunkTracker;
  protected readonly idle: number;
  protected readonly full: number;
  protected flagsOn = false;
  protected closed = false;
  protected readonly finalWritesOnly: boolean;
  /** ackedUpTo() when the fd was about to close (see finish()). */
  private ackedAtClose = 0;
  private sampleCounter = 0;
  private readonly sample: number;
  private timer: NodeJS.Timeout | undefined;
  private last: TcpInfo | undefined;
  private lastSnap: ChronoSnapshot | undefined;
  /** The last TCP_INFO read for a snapshot, and when (performance.now()). */
  private chrono: TcpChrono | undefined;
  private chronoAt = -Infinity;
  private reg: Registration;
  private readonly onSocketClose = (): void => {
    errqueue.forget(this.reg);
    this.finish();
  };

  constructor(
    protected readonly socket: Socket,
    opts: InstrumentOptions,
  ) {
    super();
    const handle = handleOf(socket);
    const fd = handle?.fd;
    if (handle === undefined || typeof fd !== 'number' || fd < 0 || socket.remoteAddress === undefined) {
      throw new TypeError('instrument() needs a connected TCP net.Socket (call it after connect or in the connection handler)');
    }
    this.fd = fd;
    const sample = opts.sample ?? 1;
    if (!(sample > 0) || (sample >= 1 && !Number.isInteger(sample))) {
      throw new RangeError(`sample must be an integer N >= 1 (every Nth chunk) or a probability in (0, 1); got ${sample}`);
    }
    this.sample = sample;
    this.finalWritesOnly = opts.finalWritesOnly ?? false;
    const stallAfterMs = opts.stallAfterMs ?? 10_000;
    if (!(stallAfterMs > 0)) throw new RangeError(`stallAfterMs must be > 0; got ${stallAfterMs}`);

    if (native().getTimestamping(fd) !== 0) {
      throw new Error('this socket already has SO_TIMESTAMPING set: its owner reads the error queue, so it is left alone');
    }
    const { idTcp } = enableTimestamping(fd);
    this.idle = idleFlags(idTcp);
    this.full = recordFlags(idTcp, opts.sndRecords ?? false);
    this.tracker = new ChunkTracker(
      {
        stallAfter: stallAfterMs / 1000,
        maxPending: opts.maxPending ?? 1024,
        ...(opts.minSpan !== undefined && { minSpan: opts.minSpan }),
      },
      { chunk: (c) => this.deliver('chunk', c), stall: (c) => this.deliver('stall', c) },
    );
    try {
      this.reg = errqueue.add(fd, (records) => {
        this.beforeRecords();
        this.tracker.onRecords(records, this.snapshotNow, this.queueWasFull(records.length));
        this.afterRecords();
      });
    } catch (e) {
      // Nobody would drain this socket's error queue: leave it as we found it.
      setFlags(fd, 0);
      throw e;
    }
    // Stays in place after close() for the late-record sink; released when the fd closes.
    watchClose(handle, () => {
      errqueue.remove(this.reg);
      // The last look at the kernel's figures: was everything acknowledged?
      this.ackedAtClose = this.ackedUpTo();
    });
    socket.once('close', this.onSocketClose);
    const period = Math.min(1000, Math.max(20, stallAfterMs / 4));
    this.timer = setInterval(() => this.tick(), period).unref();
  }

  abstract unit(label?: string): void;
  abstract finishing(): void;
  abstract endUnit(): void;

  stats(): ProbeStats {
    const t = this.closed ? this.last : this.readTcpInfo();
    const c = this.tracker.counters;
    return {
      busy: t?.busyTime ?? 0,
      rwndLimited: t?.rwndLimited ?? 0,
      sndbufLimited: t?.sndbufLimited ?? 0,
      ...(t?.bytesAcked !== undefined && { bytesAcked: t.bytesAcked }),
      ...(t?.bytesRetrans !== undefined && { bytesRetrans: t.bytesRetrans }),
      ...(t?.deliveryRate !== undefined && { deliveryRate: t.deliveryRate }),
      rtt: t?.rtt ?? 0,
      bytesWritten: this.bytesWritten(),
      chunks: c.chunks,
      stalls: c.stalls,
      inexact: c.inexact,
      pending: this.tracker.pendingCount,
      lostRecords: c.lostRecords,
      unaccountedWrites: this.unaccounted(),
      ...(!this.closed && t !== undefined && { tcpInfo: t }),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closeUnit();
    // Off first, then drain: nothing new can queue behind the drain.
    try {
      setFlags(this.fd, 0);
    } catch {
      /* socket already gone: its queue went with it */
    }
    errqueue.remove(this.reg);
    this.closed = true;
    this.stopTimer();
    this.unhook();
    // Writes flagged before close() may still be acked later: keep draining
    // their records, silently, so the host loop never spins on them. The
    // close watch and the 'close' listener release this at the end.
    this.reg = errqueue.add(this.fd, () => undefined);
    this.emit('close');
  }

  /** Bytes handed to the kernel since instrumentation (the records' key space). */
  protected abstract handedOver(): number;
  /** Bytes handed to the socket since instrumentation. */
  protected abstract bytesWritten(): number;
  protected abstract unaccounted(): number;
  /** close(): the open unit ends here. */
  protected abstract closeUnit(): void;
  /** close(): put back what was hooked. */
  protected abstract unhook(): void;
  /** Records are about to be applied. */
  protected beforeRecords(): void {}
  /** Records were applied. */
  protected afterRecords(): void {}
  /** The socket closed: bring the open unit up to date before the last flush. */
  protected settle(): void {}

  /** The stall timer. */
  protected tick(): void {
    this.tracker.checkStalls(nowSeconds(), this.snapshotNow, this.ackedUpTo);
  }

  // The offset below which the kernel has acknowledged every byte: all that
  // was handed over when nothing is unacked or unsent, else 0 (unknown).
  private readonly ackedUpTo = (): number => {
    if (this.closed) return 0;
    try {
      const c = readTcpChrono(native().tcpInfo(this.fd));
      return c.unacked === 0 && c.notsentBytes === 0 ? this.handedOver() : 0;
    } catch {
      return 0;
    }
  };

  // The chronographs now, for a chunk's start (read on every tracked chunk,
  // or taken from a read less than TCP_INFO_REUSE_MS old; only the fields a
  // snapshot needs are decoded), and the send buffer's size (one getsockopt,
  // always: an application may set it between two writes) for the
  // sndbuf-bound inference (classify.ts).
  protected readonly snapshotNow = (): ChronoSnapshot => {
    if (!this.closed) {
      try {
        const n = native();
        const t = performance.now();
        if (this.chrono === undefined || t - this.chronoAt >= TCP_INFO_REUSE_MS) {
          this.chrono = readTcpChrono(n.tcpInfo(this.fd));
          this.chronoAt = t;
        }
        const c = this.chrono;
        this.lastSnap = {
          busy: c.busyTime,
          rwndLimited: c.rwndLimited,
          sndbufLimited: c.sndbufLimited,
          totalRetrans: c.totalRetrans,
          deliveryRate: c.deliveryRate,
          cwnd: c.sndCwnd,
          srtt: c.rtt,
          mss: c.sndMss,
          sndbuf: n.getSockoptInt(this.fd, SOL_SOCKET, SO_SNDBUF),
        };
      } catch {
        /* closed under us, or unparsable: keep the last good figures */
      }
    }
    return this.lastSnap ?? { busy: 0, rwndLimited: 0, sndbufLimited: 0, totalRetrans: 0 };
  };

  /**
   * Whether one drain of `n` records emptied a full error queue. The queue is
   * charged to the socket's receive memory (SO_RCVBUF) at the records'
   * truesize, about 830 B with OPT_STATS; a drain holding as many records as
   * the budget fits at 1.5 KiB each is taken as full (157 fill 128 KiB; the
   * test is only made, one getsockopt, past 32 records).
   */
  private queueWasFull(n: number): boolean {
    if (n < 32) return false;
    try {
      return n * RECORD_TRUESIZE_BOUND >= native().getSockoptInt(this.fd, SOL_SOCKET, SO_RCVBUF);
    } catch {
      return false;
    }
  }

  private readTcpInfo(): TcpInfo | undefined {
    try {
      this.last = parseTcpInfo(native().tcpInfo(this.fd));
    } catch {
      /* closed under us, or unparsable: keep the last good figures */
    }
    return this.last;
  }

  protected pickSample(): boolean {
    if (this.sample < 1) return Math.random() < this.sample;
    return this.sampleCounter++ % this.sample === 0;
  }

  private deliver(event: 'chunk' | 'stall', c: ChunkRecord): void {
    if (!this.closed) this.emit(event, c);
  }

  protected setRecordFlags(want: boolean): boolean {
    if (want === this.flagsOn) return false;
    try {
      setFlags(this.fd, want ? this.full : this.idle);
      this.flagsOn = want;
      return true;
    } catch {
      /* the socket is closing; the write will fail the same way */
      return false;
    }
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  // The socket closed: what was never acked is reported as stalled (records
  // lost while everything was acknowledged are counted as lost instead).
  private finish(): void {
    this.stopTimer();
    if (this.closed) return;
    this.settle();
    this.tracker.flush(nowSeconds(), this.lastSnap, this.ackedAtClose);
    this.closed = true;
    this.emit('close');
  }
}

/** Chunks from hooked writes: every write outside a unit is a chunk of its own. */
class SocketProbe extends ProbeCore {
  private handed = 0;
  private desync = 0;
  private readonly saved = new Map<string, unknown>(); // handle methods we replaced
  private readonly savedSocket = new Map<string, unknown>();

  constructor(socket: Socket, opts: InstrumentOptions) {
    super(socket, opts);
    this.hook(handleOf(socket)!);
  }

  unit(label?: string): void {
    if (!this.closed) this.tracker.startUnit(label, this.pickSample());
  }

  finishing(): void {
    this.tracker.finishing();
  }

  endUnit(): void {
    this.tracker.endUnit();
  }

  protected handedOver(): number {
    return this.handed;
  }

  protected bytesWritten(): number {
    return this.tracker.written;
  }

  protected unaccounted(): number {
    return this.desync;
  }

  protected closeUnit(): void {
    this.tracker.endUnit();
  }

  protected unhook(): void {
    restore(this.socket as unknown as Record<string, unknown>, this.savedSocket);
    restore(handleOf(this.socket) ?? {}, this.saved);
  }

  // socket.write()/end(): the application's bytes, which define the chunks.
  private onAppWrite(bytes: number): void {
    if (bytes <= 0) return;
    const sampleWrite = this.tracker.openUnit === undefined && this.pickSample();
    const now = this.tracker.tracks(sampleWrite) ? nowSeconds() : 0;
    this.tracker.write(bytes, now, sampleWrite, this.snapshotNow);
  }

  // Before each hand-over to the kernel: do its sendmsg calls carry records?
  private beforeHandover(bytes: number): void {
    const from = this.handed;
    this.handed += bytes;
    if (this.handed > this.tracker.written) {
      // Bytes that bypassed socket.write (another writer on the handle): keep the offsets aligned.
      this.desync++;
      this.tracker.skip(this.handed - this.tracker.written);
    }
    this.setRecordFlags(this.tracker.wantsRecords(from, this.handed, this.finalWritesOnly));
    if (this.flagsOn && bytes > 0) this.tracker.expectAck(this.handed - 1);
  }

  private hook(handle: StreamHandle): void {
    const probe = this;
    const sock = this.socket as unknown as Record<string, unknown>;
    for (const m of ['write', 'end'] as const) {
      const orig = sock[m] as (...a: unknown[]) => unknown;
      this.savedSocket.set(m, Object.prototype.hasOwnProperty.call(sock, m) ? orig : undefined);
      // Fixed arity (no rest/apply): this runs on every write of the host.
      sock[m] = function (this: Socket, data: unknown, encoding: unknown, cb: unknown): unknown {
        try {
          probe.onAppWrite(appBytes(data, encoding));
        } catch {
          /* never let instrumentation break a write */
        }
        return orig.call(this, data, encoding, cb);
      };
    }
    for (const m of WRITE_METHODS) {
      const orig = handle[m];
      if (typeof orig !== 'function') continue;
      this.saved.set(m, Object.prototype.hasOwnProperty.call(handle, m) ? orig : undefined);
      handle[m] = function (this: StreamHandle, req: unknown, ...args: unknown[]): number {
        try {
          probe.beforeHandover(bytesOf(m, args));
        } catch {
          /* never let instrumentation break a write */
        }
        return (orig as HandleWrite).call(this, req, ...args);
      };
    }
  }
}

/**
 * Chunks from unit boundaries only (`unitsOnly`): no write is touched. The
 * socket's byte count at a boundary is the unit's offset; the handle's count
 * less its queue is what the kernel has (its keys count the same bytes).
 * instrumentHttp drives it with startUnit()/writing()/finishingUnit()/
 * endUnitOf(), which name the unit so that a late call for an earlier
 * response (pipelining) cannot end a later one.
 */
export class UnitProbe extends ProbeCore {
  /** What the kernel had from this socket when timestamping was enabled: the records' key 0. */
  private readonly origin: number;
  /** handedOver() when the record flags last went on: bytes from here on are sent with them. */
  private onFrom = 0;
  /** Keep the flags on until the kernel has this many bytes (an ended unit's last byte is still queued); -1: none. */
  private offAfter = -1;
  /** When the open unit announced its last writes (its lastWriteTime); -Infinity: not yet (a double from the start: the field never changes representation). */
  private finishingAt = -Infinity;

  constructor(socket: Socket, opts: InstrumentOptions) {
    const h = handleOf(socket);
    // Read before timestamping goes on (the base constructor): bytes sent so far carry no keys.
    const origin = h === undefined ? 0 : Number(h.bytesWritten ?? 0) - Number(h.writeQueueSize ?? 0);
    super(socket, opts);
    this.origin = origin;
  }

  unit(label?: string): void {
    if (this.startUnit(label) >= 0) this.tracker.beginChunk(nowSeconds(), this.snapshotNow);
  }

  finishing(): void {
    const u = this.tracker.openUnit;
    if (u !== undefined) this.finishingUnit(u.id);
  }

  endUnit(): void {
    if (!this.closed) this.closeUnit();
  }

  /** Starts a unit whose chunk begins at its first write (writing()); returns its id (-1: closed). */
  startUnit(label?: string): number {
    if (this.closed) return -1;
    this.closeUnit();
    this.sync(); // bytes written since the last unit ended belong to no chunk
    this.tracker.startUnit(label, this.pickSample());
    this.updateFlags();
    return this.tracker.openUnit!.id;
  }

  /** Unit `id`'s first byte is about to be handed to the socket. */
  writing(id: number): void {
    const u = this.tracker.openUnit;
    if (!this.closed && u !== undefined && u.id === id && u.sampled) this.tracker.beginChunk(nowSeconds(), this.snapshotNow);
  }

  /** Unit `id`'s remaining bytes are about to be written: records on for them. */
  finishingUnit(id: number): void {
    const u = this.tracker.openUnit;
    if (this.closed || u === undefined || u.id !== id) return;
    if (this.finishingAt < 0) {
      this.finishingAt = nowSeconds();
      this.tracker.finishing();
    }
    this.updateFlags();
  }

  /** Ends unit `id` if it is still the open one. */
  endUnitOf(id: number): void {
    const u = this.tracker.openUnit;
    if (!this.closed && u !== undefined && u.id === id) this.closeUnit();
  }

  protected handedOver(): number {
    const h = handleOf(this.socket);
    // Gone: nothing more will be sent.
    if (h === undefined) return Number.MAX_SAFE_INTEGER;
    return Number(h.bytesWritten) - Number(h.writeQueueSize) - this.origin;
  }

  protected bytesWritten(): number {
    const n = this.socket.bytesWritten;
    return typeof n === 'number' ? Math.max(this.tracker.written, n - this.origin) : this.tracker.written;
  }

  protected unaccounted(): number {
    return 0;
  }

  // The open unit ends at the socket's byte count now. Its last byte was
  // sent with the flags on, or will be: an ACK record is expected there, and
  // the flags stay on until the kernel has it.
  protected closeUnit(): void {
    if (this.tracker.openUnit === undefined) return;
    this.sync();
    const last = this.tracker.openChunkEnd;
    if (last >= 0 && this.flagsOn && this.onFrom <= last) {
      this.tracker.expectAck(last);
      if (this.handedOver() <= last) this.offAfter = Math.max(this.offAfter, last + 1);
    }
    this.tracker.endUnit();
    this.finishingAt = -Infinity;
    this.updateFlags();
  }

  protected unhook(): void {
    /* nothing was hooked but the close watch, which stays for the late-record sink */
  }

  // The records may be for bytes of the open unit that no boundary has counted yet.
  protected override beforeRecords(): void {
    if (this.tracker.openUnit !== undefined) this.sync();
  }

  protected override afterRecords(): void {
    if (this.offAfter >= 0) this.updateFlags();
  }

  protected override settle(): void {
    this.sync();
  }

  // A unit in progress: its bytes so far (a stall is judged from its last
  // write, here the last tick that saw it grow).
  protected override tick(): void {
    this.sync();
    this.updateFlags();
    super.tick();
  }

  // The bytes written since the last look belong to the open unit (or none).
  private sync(): void {
    const n = this.socket.bytesWritten;
    if (typeof n !== 'number' || n - this.origin <= this.tracker.written) return;
    this.tracker.advanceTo(n - this.origin, this.finishingAt >= 0 ? this.finishingAt : nowSeconds(), this.snapshotNow);
  }

  private updateFlags(): void {
    if (this.closed) return;
    const u = this.tracker.openUnit;
    let want = u !== undefined && u.sampled && (!this.finalWritesOnly || u.finishing);
    if (!want && this.offAfter >= 0) {
      if (this.handedOver() < this.offAfter) want = true;
      else this.offAfter = -1;
    }
    if (this.setRecordFlags(want) && want) this.onFrom = this.handedOver();
  }
}

export function instrument(socket: Socket, opts: InstrumentOptions = {}): Probe {
  return opts.unitsOnly === true ? new UnitProbe(socket, opts) : new SocketProbe(socket, opts);
}
