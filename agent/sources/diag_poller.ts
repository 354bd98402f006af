// The one sock_diag poller: dumps through a DiagSource into whatever keeps
// the connections (the model's ConnectionTable, typed here only by the three
// calls it needs, so this layer imports nothing above it), and counts what the
// agent's self metrics and /healthz report. watch, top/diagnose (in-process),
// and the chunk modes' connection view all poll through it.
import { performance } from 'node:perf_hooks';
import { isSystemError } from '../native.js';
import type { InetDiagSocket } from '../parse/inet_diag.js';
import type { DiagSource, PollResult } from './diag.js';

/** What a poll feeds: ConnectionTable's streaming form of applyPoll. */
export interface PollSink {
  beginPoll(now: number, listening: Set<number>): void;
  track(s: InetDiagSocket): void;
  endPoll(complete: boolean): void;
}

export interface PollStats {
  polls: number;
  pollErrors: number;
  dumpParseErrors: number;
  /** Interrupted dumps (NLM_F_DUMP_INTR): each retried one, and a final one still interrupted. */
  dumpInterrupted: number;
  socketsSeen: number;
  /** Date.now() of the last poll that worked (0: none yet). */
  lastOk: number;
  lastError: string | undefined;
}

/** One network namespace of a scoped poll (watch --netns; see DiagPoller.pollScoped). */
export interface PollTarget {
  /** For messages. */
  label: string;
  source: DiagSource;
  /** Its dump socket (diagSocket()); undefined: this process's own namespace. */
  fd: number | undefined;
  /** The families to dump (default both); none: the namespace has no TCP socket now, and is complete. */
  families?: readonly number[];
  /** Before its dump: the sink takes its sockets as this namespace's (ConnectionTable.enterScope). */
  enter(listening: Set<number>): void;
  /** After it: complete is false when the dump failed or stayed interrupted. */
  leave(complete: boolean): void;
  /** Its dump threw (after leave(false)); the poll goes on with the other namespaces. */
  failed(e: unknown, sentence: string): void;
}

export const newPollStats = (): PollStats => ({ polls: 0, pollErrors: 0, dumpParseErrors: 0, dumpInterrupted: 0, socketsSeen: 0, lastOk: 0, lastError: undefined });

export class DiagPoller {
  readonly stats: PollStats = newPollStats();

  constructor(
    public source: DiagSource,
    private readonly sink: PollSink,
  ) {}

  /**
   * One poll into the sink, streamed (each socket goes to the sink as it is
   * decoded). An interrupted dump is retried by the source; if it is still
   * interrupted, nothing is closed for being absent from it. Throws native
   * errors (dumpFailure() words them); the caller decides whether to retry.
   */
  poll(duration?: { observe(seconds: number): void }, now = Date.now()): PollResult {
    const t0 = performance.now();
    const listening = new Set<number>();
    this.sink.beginPoll(now, listening);
    const r = this.source.poll((s) => this.sink.track(s), listening);
    this.sink.endPoll(!r.interrupted);
    duration?.observe((performance.now() - t0) / 1000);
    const st = this.stats;
    st.polls++;
    st.socketsSeen = r.seen;
    st.dumpParseErrors += r.parseErrors;
    st.dumpInterrupted += r.interruptedRetries + (r.interrupted ? 1 : 0);
    st.lastOk = Date.now();
    st.lastError = undefined;
    return r;
  }

  /**
   * One poll of several network namespaces into the sink, as one table poll:
   * a namespace whose dump fails or stays interrupted closes nothing for
   * being absent; the others go on. Each failure is counted in pollErrors
   * and handed to its target. The result adds up every namespace's.
   */
  pollScoped(targets: readonly PollTarget[], duration?: { observe(seconds: number): void }, now = Date.now()): PollResult & { failed: number } {
    const t0 = performance.now();
    const total: PollResult & { failed: number } = {
      sockets: [],
      kept: 0,
      listeningPorts: new Set(),
      seen: 0,
      parseErrors: 0,
      interruptedRetries: 0,
      interrupted: false,
      durationSeconds: 0,
      failed: 0,
    };
    const st = this.stats;
    let lastError: string | undefined;
    let stillInterrupted = 0;
    const track = (s: InetDiagSocket): void => this.sink.track(s);
    this.sink.beginPoll(now, new Set());
    for (const t of targets) {
      const listening = new Set<number>();
      t.enter(listening);
      let r: PollResult;
      try {
        r = t.source.poll(track, listening, t.fd, t.families);
      } catch (e) {
        t.leave(false);
        total.failed++;
        st.pollErrors++;
        lastError = `network namespace ${t.label}: ${dumpFailure(e)}`;
        t.failed(e, lastError);
        continue;
      }
      t.leave(!r.interrupted);
      total.kept += r.kept;
      total.sample ??= r.sample;
      total.seen += r.seen;
      total.parseErrors += r.parseErrors;
      total.firstParseError ??= r.firstParseError;
      total.interruptedRetries += r.interruptedRetries;
      total.interrupted ||= r.interrupted;
      if (r.interrupted) stillInterrupted++;
    }
    this.sink.endPoll(true);
    total.durationSeconds = (performance.now() - t0) / 1000;
    duration?.observe(total.durationSeconds);
    st.polls++;
    st.socketsSeen = total.seen;
    st.dumpParseErrors += total.parseErrors;
    st.dumpInterrupted += total.interruptedRetries + stillInterrupted;
    st.lastOk = Date.now();
    st.lastError = lastError;
    return total;
  }

  /** poll(), but a failure is counted and returned as a sentence instead of thrown. */
  tryPoll(duration?: { observe(seconds: number): void }): PollResult | string {
    try {
      return this.poll(duration);
    } catch (e) {
      this.stats.pollErrors++;
      this.stats.lastError = dumpFailure(e);
      return this.stats.lastError;
    }
  }
}

/** A sentence for a failed sock_diag dump, by error code (never by message). */
export function dumpFailure(e: unknown): string {
  if (isSystemError(e)) {
    const hints: Record<string, string> = {
      EPROTONOSUPPORT: 'the kernel has no sock_diag support for TCP (load the tcp_diag module: modprobe tcp_diag)',
      ENOENT: 'the kernel has no inet_diag handler for TCP (load the tcp_diag module: modprobe tcp_diag)',
      EPERM: 'the kernel refused the sock_diag dump (a seccomp or LSM policy may block netlink sockets)',
      EACCES: 'the kernel refused the sock_diag dump (a seccomp or LSM policy may block netlink sockets)',
      EINVAL: 'the kernel rejected the dump request (the port filter may be unsupported on this kernel)',
    };
    return `cannot dump TCP sockets: ${hints[e.code] ?? e.message} (${e.syscall}: ${e.code})`;
  }
  return `cannot dump TCP sockets: ${e instanceof Error ? e.message : String(e)}`;
}
