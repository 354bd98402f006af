// The trace mode's kernel side, as seen from JavaScript: finds the cgroup-v2
// mount, loads the BPF program (native/trace.cc) with the run's settings,
// attaches it to a cgroup, and hands out the ring buffer's records and the
// followed connections as decoded batches. The program lives as long as this
// process holds its link (no pinning): it cannot outlive the agent.
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { isSystemError, native } from '../native.js';
import type { PortRange } from '../parse/inet_diag.js';
import { discoverNamespaces, netnsFailure } from './netns.js';
import { decodeTraceConns, decodeTraceEvents, TRACE_COUNTERS, type TraceConn, type TraceCounters, type TraceEvent } from '../parse/trace_event.js';

export type TraceChunkMode = { kind: 'response' } | { kind: 'write' } | { kind: 'idle'; seconds: number };

export interface TraceOptions {
  cgroup: string;
  chunks: TraceChunkMode;
  /** Every Nth chunk of a connection gets timestamps; the others cost one callback per write. */
  sample: number;
  /** Local ports (at most 8 ranges; empty: every port). */
  ports: readonly PortRange[];
  /** Only writes of this process (0: every process). */
  pid: number;
  /** Most connections followed at once (the kernel map's size). */
  maxSockets: number;
  /** Ring-buffer bytes (a power of two, a multiple of the page size). */
  ringBytes: number;
}

export const MAX_PORT_RANGES = 8;

interface Tracer {
  readonly __tracer: unique symbol;
}

interface TraceBinding {
  traceOpen(cgroup: string, o: Record<string, unknown>): Tracer;
  traceConsume(t: Tracer): Buffer | null;
  traceWatch(t: Tracer, onReady: (status: number) => void): void;
  traceCounters(t: Tracer): number[];
  traceConns(t: Tracer): Buffer | null;
  traceAdopt(t: Tracer, nsFd: number): void;
  traceAdoptionOver(t: Tracer): void;
  traceClose(t: Tracer): void;
  traceLayout(): Record<string, number>;
}

/** The addon's trace functions, or undefined when it was built without libbpf. */
export function traceBinding(): TraceBinding | undefined {
  const n = native() as unknown as Partial<TraceBinding>;
  return typeof n.traceOpen === 'function' ? (n as TraceBinding) : undefined;
}

/** Where cgroup v2 is mounted (the unified hierarchy; hybrid layouts mount it beside v1), from mountinfo. */
export function cgroup2Mount(mountinfo = '/proc/self/mountinfo'): string | undefined {
  let text: string;
  try {
    text = readFileSync(mountinfo, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    // id parent major:minor root mountpoint options [optional fields] - fstype source superopts
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const fstype = line.slice(dash + 3).split(' ')[0];
    if (fstype !== 'cgroup2') continue;
    const mountPoint = line.slice(0, dash).split(' ')[4];
    if (mountPoint !== undefined) return mountPoint.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  return undefined;
}

/** Linux version as [major, minor] from a release string (6.18.44-… → [6, 18]). */
export function kernelVersion(r = release()): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(r);
  return m === null ? [0, 0] : [Number(m[1]), Number(m[2])];
}

/** What traceUnavailable looks at (tests give other values). */
export interface TraceHost {
  /** The kernel release (uname -r). */
  release: string;
  /** Where the kernel's own BTF is (CO-RE needs it). */
  btf: string;
  /** Whether the addon has the BPF loader. */
  loader: boolean;
}

const thisHost = (): TraceHost => ({ release: release(), btf: '/sys/kernel/btf/vmlinux', loader: traceBinding() !== undefined });

/** Why the trace mode cannot run here, as one sentence; undefined when it can try. */
export function traceUnavailable(cgroup: string, host: TraceHost = thisHost()): string | undefined {
  if (!host.loader) {
    return 'this build has no BPF loader: the addon was built without libbpf (install libbpf-dev and pkg-config, then npm rebuild)';
  }
  const [maj, min] = kernelVersion(host.release);
  if (maj < 6 || (maj === 6 && min < 15)) return `trace needs Linux 6.15 or later (BPF TX timestamping); this kernel is ${host.release}: use attach or proxy instead`;
  if (!existsSync(host.btf)) return `trace needs a kernel with BTF (${host.btf}, CONFIG_DEBUG_INFO_BTF); this one has none: use attach or proxy instead`;
  try {
    if (!statSync(cgroup).isDirectory()) return `--cgroup ${cgroup} is not a directory of the cgroup-v2 hierarchy`;
  } catch {
    return `--cgroup ${cgroup} does not exist; give a directory of the cgroup-v2 hierarchy (e.g. ${cgroup2Mount() ?? '/sys/fs/cgroup'})`;
  }
  return undefined;
}

/** A sentence for a failed load or attach, by error code. */
export function traceLoadFailure(e: unknown): string {
  if (isSystemError(e)) {
    const detail = (e as { detail?: string }).detail;
    const why: Record<string, string> = {
      EPERM: 'permission denied: loading and attaching a BPF program needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)',
      EACCES: 'the kernel verifier refused the program',
      EINVAL: 'the kernel refused the program or its cgroup attachment (is the path a cgroup-v2 directory?)',
      ENOENT: 'this kernel lacks something the program uses (BTF, or a kfunc of Linux 6.15)',
      ENOTDIR: 'the --cgroup path is not a directory',
      E2BIG: 'the kernel refused a map size (--max-sockets)',
    };
    return `cannot load the trace program: ${why[e.code] ?? e.message} (${e.syscall}: ${e.code}${detail !== undefined ? `; libbpf: ${detail}` : ''})`;
  }
  return `cannot load the trace program: ${e instanceof Error ? e.message : String(e)}`;
}

export class TraceSource {
  private tracer: Tracer | undefined;
  private readonly b: TraceBinding;
  /** Whether the programs for the connections open before the attach are detached. */
  private adoptionOver = false;
  malformed = 0;

  /** Loads and attaches; throws a Node-shaped error (traceLoadFailure words it). */
  constructor(o: TraceOptions) {
    const b = traceBinding();
    if (b === undefined) throw new Error('this build has no BPF loader (built without libbpf)');
    this.b = b;
    if (o.ports.length > MAX_PORT_RANGES) throw new RangeError(`at most ${MAX_PORT_RANGES} port ranges`);
    this.tracer = b.traceOpen(o.cgroup, {
      chunkMode: o.chunks.kind === 'response' ? 0 : o.chunks.kind === 'write' ? 1 : 2,
      idleNs: o.chunks.kind === 'idle' ? Math.round(o.chunks.seconds * 1e9) : 0,
      sample: o.sample,
      ports: o.ports.map((r) => [r.from, r.to]),
      tgid: o.pid,
      maxSockets: o.maxSockets,
      ringBytes: o.ringBytes,
    });
  }

  private get t(): Tracer {
    if (this.tracer === undefined) throw new Error('the trace source is closed');
    return this.tracer;
  }

  /**
   * Calls onReady once, as soon as the ring buffer has a record (at once if
   * it has one now), with 0, or with a negative libuv error code when the
   * ring's epoll fd failed. The tracer holds onReady until close().
   */
  watch(onReady: (status: number) => void): void {
    this.b.traceWatch(this.t, onReady);
  }

  /** Everything in the ring buffer now. */
  consume(): TraceEvent[] {
    const { events, malformed } = decodeTraceEvents(this.b.traceConsume(this.t));
    this.malformed += malformed;
    return events;
  }

  /**
   * Follows the connections established before the attach (the cgroup
   * attachment only sees new ones), in this process's network namespace and
   * in every other one on the host (/proc/PID/ns/net, /run/netns): the
   * kernel's TCP iterator walks one namespace's sockets, so it is run once
   * in each, from a short-lived thread that enters it. Call it before the
   * capabilities are dropped (entering a namespace needs CAP_SYS_ADMIN).
   * Returns the namespaces that could not be entered, with why.
   */
  adoptExisting(): { namespaces: number; failed: { label: string; reason: string }[] } {
    this.b.traceAdopt(this.t, -1);
    const own = statSync('/proc/self/ns/net').ino;
    const failed: { label: string; reason: string }[] = [];
    let namespaces = 1;
    for (const ns of discoverNamespaces(['all']).found.values()) {
      if (ns.inode === own) continue;
      let fd: number;
      try {
        fd = openSync(ns.path, 'r');
      } catch {
        continue; // gone meanwhile: nothing open there to follow
      }
      try {
        this.b.traceAdopt(this.t, fd);
        namespaces++;
      } catch (e) {
        failed.push({ label: ns.label, reason: netnsFailure(ns.label, e).reason });
      } finally {
        closeSync(fd);
      }
    }
    return { namespaces, failed };
  }

  /**
   * Every followed connection now (for stalls and quiet chunks). The first
   * scan that finds no adopted connection left (open before the attach)
   * detaches the programs that were there for them.
   */
  connections(): TraceConn[] {
    const conns = decodeTraceConns(this.b.traceConns(this.t));
    if (!this.adoptionOver && !conns.some((c) => c.existing)) {
      this.b.traceAdoptionOver(this.t);
      this.adoptionOver = true;
    }
    return conns;
  }

  counters(): TraceCounters {
    const raw = this.b.traceCounters(this.t);
    const out = { malformed: (raw[TRACE_COUNTERS.length] ?? 0) + this.malformed } as TraceCounters;
    TRACE_COUNTERS.forEach((name, i) => (out[name] = raw[i] ?? 0));
    return out;
  }

  get open(): boolean {
    return this.tracer !== undefined;
  }

  /** Detaches and unloads now. */
  close(): void {
    if (this.tracer === undefined) return;
    this.b.traceClose(this.tracer);
    this.tracer = undefined;
  }
}
