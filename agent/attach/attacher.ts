// Attach mode's engine: finds the target's TCP connections, turns timestamping
// on for them (through pidfd_getfd duplicates: the same sockets), feeds the
// records the native drainer thread reads to one RecordChunker per socket, and
// on the way out turns timestamping off so the target is left as it was.
//
// Discovery, every rescan: the target's fd table (/proc/PID/fd socket inodes)
// matched with one sock_diag dump (which gives each inode's state and ports).
// A socket is released when its inode leaves the target's fd table (or the
// drainer finds its fd closed); nothing is held open in between, so the
// target's close() still sends its FIN at once.
//
// Safety rules, per socket: a socket that already has SO_TIMESTAMPING set (by
// the application) or SO_ZEROCOPY is never touched: the application owns its
// error queue. The one exception is timestamping that a previous agent left
// behind when it was killed: it carries our marker bit (OPT_RX_FILTER, which
// no application needs on a TCP sender) on our flag pattern, and is adopted
// (selected sockets) or turned off and drained (the others) at start.
//
// Detaching a socket is three steps: (1) stop tagging new writes (idle flags,
// OPT_ID kept so the keys stay meaningful), (2) wait until every byte written
// while tagging was on is acknowledged, because the kernel still reports those
// writes afterwards, (3) turn timestamping off and drain. A record arriving
// after the agent left would sit in the queue and wake the target's event loop
// (level-triggered EPOLLERR) for the rest of the connection; (2) is bounded by
// the detach timeout and a socket that hit it is reported.
import { EventEmitter } from 'node:events';
import { closeSync, fstatSync } from 'node:fs';
import { attachBinding, isSystemError, native, type AttachDrainerStats, type NativeAttachDrainer } from '../native.js';
import type { ChunkRecord } from '../model/chunks.js';
import { parseErrqueueBatch, type TxRecord } from '../parse/errqueue.js';
import {
  AF_INET,
  AF_INET6,
  formatEndpoint,
  parseDiagBatch,
  portFilterBytecode,
  stateMask,
  TCP_STATES,
  type InetDiagHeader,
  type PortRange,
} from '../parse/inet_diag.js';
import { SOL_SOCKET } from '../parse/cmsg.js';
import { parseTcpInfo } from '../parse/tcp_info.js';
import { diagBinding } from '../sources/diag.js';
import { SOF } from '../sources/timestamping.js';
import { RecordChunker } from '../model/record_chunks.js';
import { explainTargetError, type Target } from './target.js';

/** SOF_TIMESTAMPING_OPT_RX_FILTER (Linux 6.12): no RX timestamps on the target's reads; also our marker. */
export const OPT_RX_FILTER = 1 << 17;
const SO_ZEROCOPY = 60;

/** Flags kept on every attached socket: records keyed by offset, with chronograph stats, no payload. */
export const ATTACH_BASE = SOF.SOFTWARE | SOF.OPT_ID | SOF.OPT_TSONLY | SOF.OPT_STATS;
const TAG_BITS = SOF.TX_SCHED | SOF.TX_ACK | SOF.TX_SOFTWARE;

/** Whether SO_TIMESTAMPING flags are the pattern an agent in attach mode sets (marker included). */
export function isAttachPattern(flags: number): boolean {
  return (flags & OPT_RX_FILTER) !== 0 && (flags & ~(TAG_BITS | SOF.OPT_ID_TCP)) === (ATTACH_BASE | OPT_RX_FILTER);
}

interface Variant {
  idTcp: boolean;
  marker: boolean;
}
// Newest kernel first; EINVAL means a bit is unknown to this kernel.
const VARIANTS: readonly Variant[] = [
  { idTcp: true, marker: true },
  { idTcp: false, marker: true },
  { idTcp: true, marker: false },
  { idTcp: false, marker: false },
];
const flagsOf = (v: Variant): number => ATTACH_BASE | (v.idTcp ? SOF.OPT_ID_TCP : 0) | (v.marker ? OPT_RX_FILTER : 0);

export type SkipReason = 'timestamping' | 'zerocopy' | 'error' | 'limit';

export interface AttachOptions {
  /** Local ports to attach to; empty: the target's listening ports (all its connections if it listens on none). */
  ports: readonly PortRange[];
  /** Request SCHED records too (else ACK only: half the records). */
  sched: boolean;
  stallAfter: number;
  maxSockets: number;
  maxPendingChunks: number;
  /** Hand records to JavaScript at most this often (ms). */
  batchMs: number;
  /** false: attach to nothing, only clean up stale timestamping (--cleanup-only). */
  attach: boolean;
  /** The sndbuf-bound evidence of a socket, by inode, from a sock_diag table (RecordChunker's bufferBound). */
  bufferBound?: (inode: number) => boolean;
}

export interface AttachedSocket {
  readonly id: number;
  readonly inode: number;
  targetFd: number;
  readonly localPort: number;
  readonly peer: string;
  readonly chunker: RecordChunker | undefined; // undefined: only being cleaned up
  records: number;
  /** Bytes acked count at which everything tagged is acknowledged (detach). */
  until?: number;
  gone: boolean;
}

export interface AttachCounters {
  rescans: number;
  /** Rescans that found the same sockets in the target's fd table and skipped the dump. */
  dumpsSkipped: number;
  rescanErrors: number;
  lastRescanSeconds: number;
  attached: number;
  released: number;
  skipped: Record<SkipReason, number>;
  staleAdopted: number;
  staleCleaned: number;
  batches: number;
  records: { sched: number; snd: number; ack: number };
  malformed: number;
  lost: number;
  unfinished: number;
  chunks: number;
  stalls: number;
}

export interface DetachReport {
  sockets: number;
  /** Sockets whose tagged bytes were not all acknowledged within the timeout (a late record may still reach them). */
  timedOut: number;
  /** Sockets whose SO_TIMESTAMPING could not be read back as 0 (closed meanwhile ones excluded). */
  leftOn: number;
  /** Sockets that were closed by the target before or during detach. */
  closed: number;
  seconds: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export declare interface Attacher {
  on(event: 'chunk', listener: (c: ChunkRecord, s: AttachedSocket) => void): this;
  on(event: 'target-exit', listener: () => void): this;
  on(event: 'attached' | 'released', listener: (s: AttachedSocket) => void): this;
  on(event: 'skipped', listener: (reason: SkipReason, port: number, peer: string, detail: string) => void): this;
}

export class Attacher extends EventEmitter {
  readonly counters: AttachCounters = {
    rescans: 0,
    dumpsSkipped: 0,
    rescanErrors: 0,
    lastRescanSeconds: 0,
    attached: 0,
    released: 0,
    skipped: { timestamping: 0, zerocopy: 0, error: 0, limit: 0 },
    staleAdopted: 0,
    staleCleaned: 0,
    batches: 0,
    records: { sched: 0, snd: 0, ack: 0 },
    malformed: 0,
    lost: 0,
    unfinished: 0,
    chunks: 0,
    stalls: 0,
  };
  private readonly drainer: NativeAttachDrainer;
  private readonly sockets = new Map<number, AttachedSocket>();
  private readonly byInode = new Map<number, AttachedSocket>();
  /** Inodes left alone (application-owned error queue, or failed): not retried while they live. */
  private readonly skipped = new Map<number, SkipReason>();
  private variant: Variant | undefined;
  private nextId = 1;
  private stopped = false;
  private firstScan = true;
  private readonly tagging: number;
  /** Ports the target listens on, from the last rescan. */
  listeningPorts = new Set<number>();
  private drainerStats: AttachDrainerStats | undefined;
  private cleanup: Promise<DetachReport> | undefined;
  private lastFds: Map<number, number> | undefined;
  private connecting = 0;
  private lastResult = { found: 0, attached: 0, tcp: 0 };

  constructor(
    readonly target: Target,
    private readonly opts: AttachOptions,
  ) {
    super();
    this.tagging = SOF.TX_ACK | (opts.sched ? SOF.TX_SCHED : 0);
    this.drainer = new (attachBinding().AttachDrainer)(
      target.pidfd,
      (frames, gone, exited) => this.onBatch(frames, gone, exited),
      opts.batchMs,
    );
  }

  get attachedCount(): number {
    let n = 0;
    for (const s of this.sockets.values()) if (s.chunker !== undefined) n++;
    return n;
  }

  /** Whether the kernel took our marker (stale timestamping can be recognised after a crash). */
  get markerSupported(): boolean | undefined {
    return this.variant?.marker;
  }

  get idTcp(): boolean | undefined {
    return this.variant?.idTcp;
  }

  drainerCounters(): AttachDrainerStats {
    return this.drainerStats ?? this.drainer.stats();
  }

  /**
   * One discovery pass: releases sockets the target closed, attaches new
   * connections, reports stalls. Throws AttachError for problems with the
   * target as a whole (gone, permission).
   */
  rescan(now: number): { found: number; attached: number; tcp: number } {
    if (this.stopped) return { found: 0, attached: 0, tcp: 0 };
    const t0 = performance.now();
    this.counters.rescans++;
    const fds = this.target.socketFds();
    for (const s of [...this.sockets.values()]) {
      const fd = fds.get(s.inode);
      if (fd === undefined) this.release(s);
      else s.targetFd = fd;
    }
    for (const ino of this.skipped.keys()) if (!fds.has(ino)) this.skipped.delete(ino);

    // The dump walks the kernel's whole TCP hash table (milliseconds even when
    // nearly empty): skip it while the target's sockets are the same ones and
    // none of them was still connecting.
    const last = this.lastFds;
    this.lastFds = fds;
    if (!this.firstScan && this.connecting === 0 && last !== undefined && last.size === fds.size && [...fds.keys()].every((k) => last.has(k))) {
      for (const s of this.sockets.values()) s.chunker?.checkStalls(now);
      this.counters.dumpsSkipped++;
      this.counters.lastRescanSeconds = (performance.now() - t0) / 1000;
      return { ...this.lastResult, attached: 0 };
    }

    // One dump per family: the target's listeners (for the default ports)
    // and connections. On the first pass every state, to find stale timestamping.
    const wanted: number[] = [TCP_STATES.established, TCP_STATES['close-wait']];
    const states: number[] = this.firstScan ? Object.values(TCP_STATES) : [...wanted, TCP_STATES.listen, TCP_STATES['syn-sent']];
    let connecting = 0;
    const conns: InetDiagHeader[] = [];
    const listening = new Set<number>();
    let listenerCount = 0;
    const bytecode = this.opts.ports.length > 0 && !this.firstScan ? portFilterBytecode(this.opts.ports) : undefined;
    for (const family of [AF_INET, AF_INET6]) {
      const raw = diagBinding().diagDump(family, stateMask(states), 0, bytecode);
      parseDiagBatch(raw, (h) => {
        if (h.inode === 0 || !fds.has(h.inode)) return false;
        if (h.state === TCP_STATES.listen) {
          listening.add(h.localPort);
          listenerCount++;
        } else if (h.state === TCP_STATES['syn-sent'] || h.state === TCP_STATES['syn-recv']) connecting++;
        else conns.push(h);
        return false; // headers are all we need
      });
    }
    this.listeningPorts = listening;
    const selected = (h: InetDiagHeader): boolean => {
      if (!this.opts.attach || !wanted.includes(h.state)) return false;
      if (this.opts.ports.length > 0) return this.opts.ports.some((r) => h.localPort >= r.from && h.localPort <= r.to);
      return listening.size === 0 || listening.has(h.localPort);
    };
    let attached = 0;
    let found = 0;
    const cleanup: AttachedSocket[] = [];
    for (const h of conns) {
      const sel = selected(h);
      if (sel) found++;
      if (this.byInode.has(h.inode) || this.skipped.has(h.inode)) continue;
      const fd = fds.get(h.inode)!;
      if (sel) {
        if (this.attachedCount >= this.opts.maxSockets) {
          this.counters.skipped.limit++;
          this.emit('skipped', 'limit', h.localPort, formatEndpoint(h.remoteAddress, h.remotePort), `--max-sockets ${this.opts.maxSockets} reached`);
          continue;
        }
        if (this.attachOne(h, fd)) attached++;
      } else if (this.firstScan) {
        const s = this.adoptStale(h, fd);
        if (s !== undefined) cleanup.push(s);
      }
    }
    this.firstScan = false;
    if (cleanup.length > 0) this.cleanup = this.detachSockets(cleanup, 10_000);
    for (const s of this.sockets.values()) if (s.chunker !== undefined) s.chunker.checkStalls(now);
    this.counters.lastRescanSeconds = (performance.now() - t0) / 1000;
    this.connecting = connecting;
    this.lastResult = { found, attached, tcp: conns.length + listenerCount + connecting };
    return this.lastResult;
  }

  /** Resolves when the stale timestamping found by the first rescan is off. */
  cleanupDone(): Promise<DetachReport> {
    return this.cleanup ?? Promise.resolve({ sockets: 0, timedOut: 0, leftOn: 0, closed: 0, seconds: 0 });
  }

  /** The attached connections, for /api/sockets. */
  list(): object[] {
    return [...this.sockets.values()]
      .filter((s) => s.chunker !== undefined)
      .map((s) => ({
        id: s.id,
        fd: s.targetFd,
        inode: s.inode,
        port: s.localPort,
        peer: s.peer,
        records: s.records,
        pendingChunks: s.chunker!.pendingCount,
        ...s.chunker!.counters,
      }));
  }

  private skip(h: InetDiagHeader, reason: SkipReason, detail: string): void {
    this.skipped.set(h.inode, reason);
    this.counters.skipped[reason]++;
    this.emit('skipped', reason, h.localPort, formatEndpoint(h.remoteAddress, h.remotePort), detail);
  }

  /** Duplicates the target's fd; undefined if it was closed (or reused) meanwhile. Throws for the target as a whole. */
  private dup(targetFd: number, inode: number): number | undefined {
    let fd: number;
    try {
      fd = attachBinding().pidfdGetfd(this.target.pidfd, targetFd);
    } catch (e) {
      if (isSystemError(e) && e.code === 'EBADF') return undefined;
      throw explainTargetError(this.target.pid, 'duplicate a socket', e);
    }
    try {
      if (fstatSync(fd).ino === inode) return fd;
    } catch {
      // fall through
    }
    closeSync(fd);
    return undefined;
  }

  private attachOne(h: InetDiagHeader, targetFd: number): boolean {
    const fd = this.dup(targetFd, h.inode);
    if (fd === undefined) return false;
    const n = native();
    try {
      const ts = n.getTimestamping(fd);
      const stale = ts !== 0 && isAttachPattern(ts);
      if (ts !== 0 && !stale) {
        this.skip(h, 'timestamping', `SO_TIMESTAMPING is already ${ts.toString(16)}h: the application owns this error queue`);
        return false;
      }
      if (n.getSockoptInt(fd, SOL_SOCKET, SO_ZEROCOPY) !== 0) {
        this.skip(h, 'zerocopy', 'SO_ZEROCOPY is set: the application owns this error queue');
        return false;
      }
      const s = this.register(h, targetFd);
      const bound = this.opts.bufferBound;
      (s as { chunker: RecordChunker }).chunker = new RecordChunker(
        {
          sched: this.opts.sched,
          stallAfter: this.opts.stallAfter,
          maxPending: this.opts.maxPendingChunks,
          ...(bound !== undefined && { bufferBound: () => bound(h.inode) }),
        },
        (c) => {
          if (c.stalled) this.counters.stalls++;
          else this.counters.chunks++;
          this.emit('chunk', c, s);
        },
      );
      // Watch first, then enable: no record can queue unseen.
      const queued = this.drainer.watch(s.id, fd, targetFd, h.inode);
      try {
        this.enable(fd);
      } catch (e) {
        this.forget(s);
        this.skip(h, 'error', `SO_TIMESTAMPING refused: ${e instanceof Error ? e.message : String(e)}`);
        return false;
      }
      if (queued !== null) this.dispatch(queued);
      this.counters.attached++;
      if (stale) this.counters.staleAdopted++;
      this.emit('attached', s);
      return true;
    } catch (e) {
      this.skip(h, 'error', e instanceof Error ? e.message : String(e));
      return false;
    } finally {
      closeSync(fd);
    }
  }

  /** A new socket entry for the target's fd (no chunker yet), found by id and by inode from now on. */
  private register(h: InetDiagHeader, targetFd: number): AttachedSocket {
    const s: AttachedSocket = {
      id: this.nextId++,
      inode: h.inode,
      targetFd,
      localPort: h.localPort,
      peer: formatEndpoint(h.remoteAddress, h.remotePort),
      chunker: undefined,
      records: 0,
      gone: false,
    };
    this.sockets.set(s.id, s);
    this.byInode.set(s.inode, s);
    return s;
  }

  /** A not-selected socket still carrying our flags from a killed agent: watch it so it can be turned off and drained. */
  private adoptStale(h: InetDiagHeader, targetFd: number): AttachedSocket | undefined {
    const fd = this.dup(targetFd, h.inode);
    if (fd === undefined) return undefined;
    try {
      if (!isAttachPattern(native().getTimestamping(fd))) return undefined;
      const s = this.register(h, targetFd);
      this.drainer.watch(s.id, fd, targetFd, h.inode);
      this.counters.staleCleaned++;
      return s;
    } catch {
      return undefined;
    } finally {
      closeSync(fd);
    }
  }

  private enable(fd: number): void {
    const n = native();
    if (this.variant !== undefined) {
      n.setTimestamping(fd, flagsOf(this.variant) | this.tagging);
      return;
    }
    let last: unknown;
    for (const v of VARIANTS) {
      try {
        n.setTimestamping(fd, flagsOf(v) | this.tagging);
        this.variant = v;
        return;
      } catch (e) {
        if (!isSystemError(e) || e.code !== 'EINVAL') throw e;
        last = e;
      }
    }
    throw last;
  }

  private release(s: AttachedSocket): void {
    if (this.sockets.get(s.id) !== s) return;
    s.gone = true;
    s.chunker?.close();
    if (s.chunker !== undefined) {
      this.counters.unfinished += s.chunker.counters.unfinished;
      this.counters.lost += s.chunker.counters.lost;
      this.counters.released++;
    }
    this.forget(s);
    this.emit('released', s);
  }

  private forget(s: AttachedSocket): void {
    this.drainer.unwatch(s.id);
    this.sockets.delete(s.id);
    if (this.byInode.get(s.inode) === s) this.byInode.delete(s.inode);
  }

  /** Records lost so far, including sockets still attached. */
  get lostRecords(): number {
    let n = this.counters.lost;
    for (const s of this.sockets.values()) n += s.chunker?.counters.lost ?? 0;
    return n;
  }

  private onBatch(frames: Buffer | null, gone: number[], exited: boolean): void {
    try {
      if (frames !== null) this.dispatch(frames);
      for (const id of gone) {
        const s = this.sockets.get(id);
        if (s !== undefined) this.release(s);
      }
      if (exited) this.emit('target-exit');
    } catch (e) {
      // Never throw into the thread-safe call; count it.
      this.counters.malformed++;
      this.emit('error-internal', e);
    }
  }

  private dispatch(frames: Buffer, as?: AttachedSocket): void {
    this.counters.batches++;
    const batch = parseErrqueueBatch(frames);
    this.counters.malformed += batch.malformed;
    const byId = new Map<AttachedSocket, TxRecord[]>();
    for (const r of batch.records) {
      this.counters.records[r.kind]++;
      const s = as ?? this.sockets.get(r.fd);
      if (s === undefined) continue;
      let list = byId.get(s);
      if (list === undefined) byId.set(s, (list = []));
      list.push(r);
    }
    for (const [s, records] of byId) {
      s.records += records.length;
      s.chunker?.onRecords(records);
    }
  }

  /** Turns timestamping off on every socket (see the file comment); resolves when done. */
  async detachAll(timeoutMs: number): Promise<DetachReport> {
    this.stopped = true;
    const report = await this.detachSockets([...this.sockets.values()], timeoutMs);
    // Stop the thread, then take what it still held and drain once more from here.
    this.drainer.close();
    this.drainerStats = this.drainer.stats();
    const rest = this.drainer.take();
    if (rest !== null) this.dispatch(rest);
    for (const s of [...this.sockets.values()]) {
      if (!s.gone) {
        const fd = this.tryDup(s);
        if (fd !== undefined) {
          try {
            const left = native().drainErrqueue(fd);
            if (left !== null) this.dispatch(left, s);
          } catch {
            // closed meanwhile
          } finally {
            closeSync(fd);
          }
        }
      }
      this.release(s);
    }
    return report;
  }

  /**
   * Last resort when the agent is about to die of a bug: timestamping off and
   * one drain per socket, synchronously, without waiting for acknowledgements.
   */
  emergencyOff(): number {
    let n = 0;
    for (const s of this.sockets.values()) {
      const fd = this.tryDup(s);
      if (fd === undefined) continue;
      try {
        native().setTimestamping(fd, 0);
        native().drainErrqueue(fd);
        n++;
      } catch {
        // closed meanwhile
      } finally {
        closeSync(fd);
      }
    }
    return n;
  }

  private tryDup(s: AttachedSocket): number | undefined {
    try {
      const fd = this.dup(s.targetFd, s.inode);
      if (fd === undefined) s.gone = true;
      return fd;
    } catch {
      s.gone = true; // the target is gone
      return undefined;
    }
  }

  /** Steps (1)–(3) of the file comment for `list`; the drainer keeps draining meanwhile. */
  async detachSockets(list: AttachedSocket[], timeoutMs: number): Promise<DetachReport> {
    const t0 = performance.now();
    const n = native();
    const waiting: AttachedSocket[] = [];
    for (const s of list) {
      const fd = this.tryDup(s);
      if (fd === undefined) continue;
      try {
        const ts = n.getTimestamping(fd);
        // Keep OPT_ID (turning it off would reset the keys of the records still due).
        if (ts & TAG_BITS) n.setTimestamping(fd, ts & ~TAG_BITS);
        const outq = attachBinding().sockOutq(fd);
        s.until = parseTcpInfo(n.tcpInfo(fd)).bytesAcked + outq;
        waiting.push(s);
      } catch {
        s.gone = true;
      } finally {
        closeSync(fd);
      }
    }
    let timedOut = 0;
    const deadline = t0 + timeoutMs;
    let pending = waiting;
    while (pending.length > 0) {
      pending = pending.filter((s) => {
        const fd = this.tryDup(s);
        if (fd === undefined) return false;
        try {
          const info = parseTcpInfo(n.tcpInfo(fd));
          const flowing = info.state === TCP_STATES.established || info.state === TCP_STATES['close-wait'] ||
            info.state === TCP_STATES['fin-wait-1'] || info.state === TCP_STATES.closing || info.state === TCP_STATES['last-ack'];
          return flowing && info.bytesAcked < (s.until ?? 0);
        } catch {
          return false;
        } finally {
          closeSync(fd);
        }
      });
      if (pending.length === 0) break;
      if (performance.now() >= deadline) {
        timedOut = pending.length;
        break;
      }
      await sleep(10);
    }
    let leftOn = 0;
    let closed = 0;
    for (const s of list) {
      const fd = this.tryDup(s);
      if (fd === undefined) {
        closed++;
        continue;
      }
      try {
        n.setTimestamping(fd, 0);
        if (n.getTimestamping(fd) !== 0) leftOn++;
      } catch {
        closed++;
      } finally {
        closeSync(fd);
      }
    }
    // Let the thread take what arrived meanwhile.
    await sleep(Math.max(20, this.opts.batchMs * 2));
    for (const s of list) if (s.chunker === undefined) this.forget(s);
    return { sockets: list.length, timedOut, leftOn, closed, seconds: (performance.now() - t0) / 1000 };
  }
}
