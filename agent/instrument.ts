// instrument(socket): per-chunk delivery telemetry for a connected net.Socket
// in this process, from the socket's own error queue.
//
// Bytes are counted where Node hands them to the kernel: the socket handle's
// write methods. Node keeps at most one write request in flight per socket and
// libuv starts it at once, so flags switched just before a hand-over apply to
// exactly the sendmsg calls of that request. That is how records (and their
// costly OPT_STATS) are requested only for the writes a sampled chunk needs.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { nowSeconds } from './clock.js';
import { ChunkTracker, type ChronoSnapshot, type ChunkRecord } from './model/chunks.js';
import { native } from './native.js';
import { parseTcpInfo, type TcpInfo } from './parse/tcp_info.js';
import { errqueue } from './sources/errqueue.js';
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

function toSnapshot(t: TcpInfo): ChronoSnapshot {
  return {
    busy: t.busyTime ?? 0,
    rwndLimited: t.rwndLimited ?? 0,
    sndbufLimited: t.sndbufLimited ?? 0,
    totalRetrans: t.totalRetrans,
    ...(t.deliveryRate !== undefined && { deliveryRate: t.deliveryRate }),
    cwnd: t.sndCwnd,
    srtt: t.rtt,
    ...(t.minRtt !== undefined && { minRtt: t.minRtt }),
  };
}

class SocketProbe extends EventEmitter implements Probe {
  private readonly fd: number;
  private readonly tracker: ChunkTracker;
  private readonly idle: number;
  private readonly full: number;
  private flagsOn = false;
  private finishingUnit = false;
  private closed = false;
  private sampleCounter = 0;
  private readonly sample: number;
  private readonly finalWritesOnly: boolean;
  private readonly saved = new Map<string, unknown>();
  private timer: NodeJS.Timeout | undefined;
  private last: TcpInfo | undefined;
  private readonly onSocketClose = (): void => this.detach(false);

  constructor(
    private readonly socket: Socket,
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
    errqueue.add(fd, (records) => this.tracker.onRecords(records, this.snapshotNow));
    this.hook(handle);
    socket.once('close', this.onSocketClose);
    const period = Math.min(1000, Math.max(20, stallAfterMs / 4));
    this.timer = setInterval(() => this.tracker.checkStalls(nowSeconds(), this.snapshotNow), period).unref();
  }

  unit(label?: string): void {
    if (this.closed) return;
    this.finishingUnit = false;
    this.tracker.startUnit(label, this.pickSample());
  }

  finishing(): void {
    this.finishingUnit = true;
  }

  endUnit(): void {
    this.finishingUnit = false;
    this.tracker.endUnit();
  }

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
      bytesWritten: this.tracker.written,
      chunks: c.chunks,
      stalls: c.stalls,
      inexact: c.inexact,
      pending: this.tracker.pendingCount,
      ...(!this.closed && t !== undefined && { tcpInfo: t }),
    };
  }

  close(): void {
    if (this.closed) return;
    this.tracker.endUnit();
    // Off first, then drain: nothing new can queue behind the drain.
    try {
      setFlags(this.fd, 0);
    } catch {
      /* socket already gone: its queue went with it */
    }
    errqueue.remove(this.fd);
    this.detach(true);
  }

  private readonly snapshotNow = (): ChronoSnapshot => {
    const t = this.closed ? this.last : this.readTcpInfo();
    return t === undefined ? { busy: 0, rwndLimited: 0, sndbufLimited: 0, totalRetrans: 0 } : toSnapshot(t);
  };

  private readTcpInfo(): TcpInfo | undefined {
    try {
      this.last = parseTcpInfo(native().tcpInfo(this.fd));
    } catch {
      /* closed under us, or unparsable: keep the last good figures */
    }
    return this.last;
  }

  private pickSample(): boolean {
    if (this.sample < 1) return Math.random() < this.sample;
    return this.sampleCounter++ % this.sample === 0;
  }

  private deliver(event: 'chunk' | 'stall', c: ChunkRecord): void {
    if (this.closed && event === 'stall') return;
    this.emit(event, c);
  }

  // Before each hand-over: decide whether its sendmsg calls carry records.
  private beforeWrite(bytes: number): void {
    const unit = this.tracker.openUnit;
    const sampleWrite = unit === undefined ? this.pickSample() : false;
    const want = unit === undefined ? sampleWrite : unit.sampled && (this.finishingUnit || !this.finalWritesOnly);
    if (want !== this.flagsOn) {
      try {
        setFlags(this.fd, want ? this.full : this.idle);
        this.flagsOn = want;
      } catch {
        /* the socket is closing; the write will fail the same way */
      }
    }
    const now = nowSeconds();
    this.tracker.write(bytes, now, sampleWrite, this.snapshotNow);
  }

  private hook(handle: StreamHandle): void {
    for (const m of WRITE_METHODS) {
      const orig = handle[m];
      if (typeof orig !== 'function') continue;
      this.saved.set(m, Object.prototype.hasOwnProperty.call(handle, m) ? orig : undefined);
      const probe = this;
      handle[m] = function (this: StreamHandle, req: unknown, ...args: unknown[]): number {
        let bytes = 0;
        try {
          bytes = bytesOf(m, args);
          probe.beforeWrite(bytes);
        } catch {
          /* never let instrumentation break a write */
        }
        return (orig as HandleWrite).call(this, req, ...args);
      };
    }
    // Drain what the kernel queued before Node closes the fd: the final ACKs are in there.
    const origClose = handle.close;
    if (typeof origClose === 'function') {
      this.saved.set('close', Object.prototype.hasOwnProperty.call(handle, 'close') ? origClose : undefined);
      handle.close = (...args: unknown[]): unknown => {
        try {
          if (!this.closed) errqueue.remove(this.fd);
        } catch {
          /* ignore */
        }
        return origClose.apply(handle, args);
      };
    }
  }

  private unhook(): void {
    const handle = handleOf(this.socket);
    if (handle === undefined) return;
    for (const [m, own] of this.saved) {
      if (own === undefined) delete handle[m];
      else handle[m] = own;
    }
    this.saved.clear();
  }

  // `byUser`: close() was called (no events after); else the socket closed.
  private detach(byUser: boolean): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (this.closed) return;
    this.socket.off('close', this.onSocketClose);
    this.unhook();
    if (!byUser) {
      errqueue.forget(this.fd);
      this.tracker.flush(nowSeconds(), this.last === undefined ? undefined : toSnapshot(this.last));
      this.closed = true;
    } else {
      this.closed = true;
      // Records of writes flagged before close() may still arrive (late ACKs):
      // keep draining them, silently, so the host loop never spins on them.
      errqueue.add(this.fd, () => undefined);
      this.socket.once('close', () => errqueue.forget(this.fd));
    }
    this.emit('close');
  }
}

export function instrument(socket: Socket, opts: InstrumentOptions = {}): Probe {
  return new SocketProbe(socket, opts);
}
