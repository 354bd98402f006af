// The TCP destroy feed: the kernel multicasts each TCP socket's final
// inet_diag message (with tcp_info) when the socket is freed, so a
// connection that lives less than one poll interval still has its figures
// counted. Mainline kernels let any process subscribe (sock_diag's netlink
// has NL_CFG_F_NONROOT_RECV; seen unprivileged on 6.18), but a kernel or a
// security policy may refuse (EPERM): then the agent falls back to the last
// poll and says so once.
import { isSystemError } from '../native.js';
import { TCP_LISTEN, parseDiagBatch, type InetDiagHeader, type InetDiagSocket } from '../parse/inet_diag.js';
import { diagBinding, type DiagBinding, type NativeDestroyFeed } from './diag.js';

export interface DestroyCounters {
  batches: number;
  sockets: number;
  parseErrors: number;
  handlerErrors: number;
}

export type DestroyHandler = (sockets: InetDiagSocket[]) => void;

export type DestroyFeedStart =
  | { ok: true; feed: DestroyFeed }
  | { ok: false; code: string; reason: string };

export class DestroyFeed {
  readonly counters: DestroyCounters = { batches: 0, sockets: 0, parseErrors: 0, handlerErrors: 0 };
  firstParseError: string | undefined;
  private native: NativeDestroyFeed | undefined;

  private constructor(
    private readonly handler: DestroyHandler,
    private readonly keep: (h: InetDiagHeader) => boolean,
  ) {}

  /**
   * Subscribes; never throws. `keep` filters on identity (listeners are
   * always dropped) before tcp_info is decoded. `nsFd`: subscribe in that
   * network namespace (an open nsfs file) instead of this process's.
   */
  static start(
    handler: DestroyHandler,
    keep: (h: InetDiagHeader) => boolean = () => true,
    binding: DiagBinding = diagBinding(),
    nsFd?: number,
  ): DestroyFeedStart {
    const feed = new DestroyFeed(handler, keep);
    try {
      const onBatch = (buf: Buffer): void => feed.onBatch(buf);
      feed.native = nsFd === undefined ? new binding.DestroyFeed(onBatch) : new binding.DestroyFeed(onBatch, nsFd);
      return { ok: true, feed };
    } catch (e) {
      if (isSystemError(e) && e.syscall.startsWith('setns')) {
        return { ok: false, code: e.code, reason: `cannot enter the network namespace to subscribe there: ${e.code === 'EPERM' ? 'setns needs CAP_SYS_ADMIN' : e.message}` };
      }
      if (isSystemError(e) && e.code === 'EPERM') {
        return {
          ok: false,
          code: 'EPERM',
          reason:
            'the kernel refused the destroy-feed subscription (EPERM): connections closed between two polls ' +
            'keep only the figures of their last poll (grant CAP_NET_ADMIN, or allow netlink multicast in the security policy)',
        };
      }
      const code = isSystemError(e) ? e.code : 'ERROR';
      return { ok: false, code, reason: `destroy feed unavailable: ${e instanceof Error ? e.message : String(e)}` };
    }
  }

  /** Kernel-side counts: overruns are datagrams lost to a full receive queue. */
  nativeStats(): ReturnType<NativeDestroyFeed['stats']> {
    return this.native?.stats() ?? { wakeups: 0, datagrams: 0, bytes: 0, overruns: 0, errors: 0 };
  }

  /** Unsubscribes; with `flush`, messages already queued are handled first. */
  close(flush = false): void {
    if (flush) this.native?.close(true);
    else this.native?.close();
    this.native = undefined;
  }

  // Runs from the native poll callback: must never throw.
  private onBatch(buf: Buffer): void {
    this.counters.batches++;
    try {
      const batch = parseDiagBatch(buf, (h) => h.state !== TCP_LISTEN && this.keep(h));
      this.counters.parseErrors += batch.parseErrors;
      this.firstParseError ??= batch.firstError;
      this.counters.sockets += batch.sockets.length;
      if (batch.sockets.length > 0) this.handler(batch.sockets);
    } catch {
      this.counters.handlerErrors++;
    }
  }
}
