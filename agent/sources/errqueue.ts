// One error-queue reader per process: every instrumented socket's fd sits in
// one native Drainer (a private epoll set watched by the host loop), and each
// batch of raw records is parsed here and dispatched to the socket's owner.
import { native, type NativeDrainer } from '../native.js';
import { parseErrqueueBatch, type TxRecord } from '../parse/errqueue.js';

export type RecordHandler = (records: TxRecord[]) => void;

/**
 * One socket's place in the reader. Kept by identity: an fd number is reused
 * as soon as a socket closes, possibly before the old socket's 'close' event.
 */
export interface Registration {
  readonly fd: number;
  handler: RecordHandler;
}

export interface ErrqueueCounters {
  batches: number;
  records: number;
  malformed: number;
  orphaned: number; // records for an fd nobody owns any more
  handlerErrors: number;
}

class ErrqueueReader {
  private drainer: NativeDrainer | undefined;
  private readonly handlers = new Map<number, Registration>();
  readonly counters: ErrqueueCounters = { batches: 0, records: 0, malformed: 0, orphaned: 0, handlerErrors: 0 };

  /** Starts draining fd; records already queued are delivered synchronously. */
  add(fd: number, handler: RecordHandler): Registration {
    const reg: Registration = { fd, handler };
    this.handlers.set(fd, reg);
    try {
      const queued = this.ensureDrainer().add(fd);
      if (queued !== null) this.dispatch(queued);
    } catch (e) {
      this.forget(reg);
      throw e;
    }
    return reg;
  }

  /** Stops draining and delivers what was still queued. Call after timestamping is off, before the fd closes. */
  remove(reg: Registration): void {
    if (this.handlers.get(reg.fd) !== reg) return;
    const rest = this.drainer?.remove(reg.fd) ?? null;
    if (rest !== null) this.dispatch(rest);
    this.forget(reg);
  }

  /** The socket is closed: its queue died with it (and epoll dropped it). */
  forget(reg: Registration): void {
    if (this.handlers.get(reg.fd) !== reg) return;
    this.handlers.delete(reg.fd);
    if (this.handlers.size === 0 && this.drainer !== undefined) {
      this.drainer.close();
      this.drainer = undefined;
    }
  }

  get watched(): number {
    return this.handlers.size;
  }

  private ensureDrainer(): NativeDrainer {
    this.drainer ??= new (native().Drainer)((frames) => this.dispatch(frames));
    return this.drainer;
  }

  // Called from the native poll callback: must never throw into the host loop.
  private dispatch(frames: Buffer): void {
    this.counters.batches++;
    const batch = parseErrqueueBatch(frames, 'chunks');
    this.counters.malformed += batch.malformed;
    this.counters.records += batch.records.length;
    const records = batch.records;
    if (records.length === 0) return;
    // Usually one socket's records: handed over as they are, no regrouping.
    const fd = records[0]!.fd;
    let oneFd = true;
    for (let i = 1; i < records.length && oneFd; i++) oneFd = records[i]!.fd === fd;
    if (oneFd) {
      this.deliver(fd, records);
      return;
    }
    const byFd = new Map<number, TxRecord[]>();
    for (const r of records) {
      let list = byFd.get(r.fd);
      if (list === undefined) byFd.set(r.fd, (list = []));
      list.push(r);
    }
    for (const [f, list] of byFd) this.deliver(f, list);
  }

  private deliver(fd: number, records: TxRecord[]): void {
    const reg = this.handlers.get(fd);
    if (reg === undefined) {
      this.counters.orphaned += records.length;
      return;
    }
    try {
      reg.handler(records);
    } catch {
      this.counters.handlerErrors++;
    }
  }
}

/** The process-wide reader shared by every probe. */
export const errqueue = new ErrqueueReader();
