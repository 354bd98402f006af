// The only module that touches the compiled addon (build/Release/tcp_chronograph.node).
// Everything it exposes is a thin syscall; errors are Node-shaped
// ({code, errno, syscall}) with a sentence for the user added here.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface DrainerStats { wakeups: number; records: number; errors: number }

/** Private epoll set of sockets, drained in the host loop turn that signals it. */
export interface NativeDrainer {
  /** Starts watching fd; returns records already queued (raw frames) or null. */
  add(fd: number): Buffer | null;
  /** Stops watching fd; returns records still queued. Turn timestamping off first. */
  remove(fd: number): Buffer | null;
  close(): void;
  stats(): DrainerStats;
}

export interface NativeBinding {
  tcpInfo(fd: number): Buffer;
  setTimestamping(fd: number, flags: number): void;
  getTimestamping(fd: number): number;
  getSockoptInt(fd: number, level: number, name: number): number;
  setSockoptInt(fd: number, level: number, name: number, value: number): void;
  realtimeNs(): bigint;
  drainErrqueue(fd: number, maxRecords?: number): Buffer | null;
  Drainer: new (onBatch: (frames: Buffer) => void) => NativeDrainer;
}

function findAddon(): string {
  // agent/native.ts (tests) and dist/agent/native.js (built) sit at different depths.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'build', 'Release', 'tcp_chronograph.node');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error(
    'tcp-chronograph: the native addon is not built (build/Release/tcp_chronograph.node missing). ' +
      'Run `npm ci` (or `npm rebuild tcp-chronograph`); it needs python3, make and g++.',
  );
}

let cached: NativeBinding | undefined;

export function native(): NativeBinding {
  if (cached === undefined) {
    const require = createRequire(import.meta.url);
    cached = require(findAddon()) as NativeBinding;
  }
  return cached;
}

export interface SystemError extends Error { code: string; errno: number; syscall: string }

export function isSystemError(e: unknown): e is SystemError {
  return e instanceof Error && typeof (e as SystemError).code === 'string' && typeof (e as SystemError).syscall === 'string';
}

/** Adds what the user should do to a native error, keeping code/errno/syscall. */
export function explain(e: unknown, hint: Partial<Record<string, string>>): unknown {
  if (!isSystemError(e)) return e;
  const sentence = hint[e.code];
  if (sentence !== undefined) e.message = `${sentence} (${e.syscall}: ${e.code})`;
  return e;
}

// ---- attach mode (native/attach.cc) ----

export interface AttachDrainerStats {
  /** Thread wake-ups with at least one event. */
  wakeups: number;
  /** Error queues emptied (one per signalled socket per wake-up). */
  drains: number;
  records: number;
  /** Records read (so the target's queue emptied) but thrown away: JavaScript was too far behind. */
  dropped: number;
  errors: number;
  /** Batches handed to JavaScript. */
  posts: number;
  /** Sockets found closed by the target while draining. */
  gone: number;
  watched: number;
}

/** A thread draining other processes' sockets (see native/attach.cc). */
export interface NativeAttachDrainer {
  /** Watches the socket behind fd (a duplicate of target fd `targetFd`, inode `inode`) as `id`; returns records already queued. */
  watch(id: number, fd: number, targetFd: number, inode: number): Buffer | null;
  /** Ignores the socket's events from now on. */
  unwatch(id: number): void;
  /** Frames pending for JavaScript, now. */
  take(): Buffer | null;
  /** Stops the thread; forgets every socket. */
  close(): void;
  stats(): AttachDrainerStats;
}

export interface AttachBinding {
  pidfdOpen(pid: number): number;
  pidfdGetfd(pidfd: number, targetFd: number): number;
  /** Bytes written but not yet acknowledged (SIOCOUTQ). */
  sockOutq(fd: number): number;
  AttachDrainer: new (
    pidfd: number,
    onBatch: (frames: Buffer | null, goneIds: number[], targetExited: boolean) => void,
    batchMs?: number,
    batchBytes?: number,
    maxPendingBytes?: number,
  ) => NativeAttachDrainer;
}

export function attachBinding(): AttachBinding {
  return native() as unknown as AttachBinding;
}
