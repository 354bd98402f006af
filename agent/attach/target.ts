// The process being attached to: its pidfd, name, executable, and the socket
// inodes in its fd table (/proc/PID/fd/N -> "socket:[INODE]").
// Errors here are the ones a user meets first; each is one sentence.
import { closeSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { attachBinding, isSystemError } from '../native.js';

export class AttachError extends Error {
  constructor(
    message: string,
    readonly reason: 'no-such-pid' | 'permission' | 'kernel' | 'no-sockets' | 'go' | 'netns' | 'other',
  ) {
    super(message);
  }
}

export const KERNEL_TOO_OLD = 'this kernel has no pidfd_getfd(): attach needs Linux 5.6 or later (use `tcp-chronograph proxy` or `watch` instead)';

export function permissionError(pid: number, what: string): AttachError {
  return new AttachError(
    `cannot ${what} of pid ${pid}: permission denied; attach needs CAP_SYS_PTRACE over the target ` +
      '(run as root, or as the same user with kernel.yama.ptrace_scope at 0; a container needs --cap-add SYS_PTRACE)',
    'permission',
  );
}

function ptraceScope(): number | undefined {
  try {
    return Number(readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8').trim());
  } catch {
    return undefined;
  }
}

/** Maps a native or fs error on the target to a one-sentence AttachError. */
export function explainTargetError(pid: number, what: string, e: unknown): Error {
  const code = isSystemError(e) || (e instanceof Error && 'code' in e) ? String((e as { code: unknown }).code) : '';
  if (code === 'ESRCH' || code === 'ENOENT') return new AttachError(`no process with pid ${pid} (it may have exited)`, 'no-such-pid');
  if (code === 'EPERM' || code === 'EACCES') {
    const err = permissionError(pid, what);
    const scope = ptraceScope();
    if (scope !== undefined && scope >= 2) err.message += `; ptrace_scope is ${scope} here, which needs CAP_SYS_PTRACE even for the same user`;
    return err;
  }
  if (code === 'ENOSYS') return new AttachError(KERNEL_TOO_OLD, 'kernel');
  return new AttachError(`cannot ${what} of pid ${pid}: ${e instanceof Error ? e.message : String(e)}`, 'other');
}

export class Target {
  readonly pidfd: number;
  readonly comm: string;
  readonly exe: string;

  constructor(readonly pid: number) {
    if (!Number.isInteger(pid) || pid < 1) throw new AttachError(`no process with pid ${pid}`, 'no-such-pid');
    try {
      this.pidfd = attachBinding().pidfdOpen(pid);
    } catch (e) {
      throw explainTargetError(pid, 'open a pidfd', e);
    }
    try {
      this.comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      this.exe = `/proc/${pid}/exe`;
    } catch (e) {
      this.close();
      throw explainTargetError(pid, 'read /proc', e);
    }
  }

  /** The target's network namespace is ours (sock_diag sees only our own). */
  sameNetns(): boolean {
    try {
      return readlinkSync(`/proc/${this.pid}/ns/net`) === readlinkSync('/proc/self/ns/net');
    } catch (e) {
      throw explainTargetError(this.pid, 'read the network namespace', e);
    }
  }

  /** Socket inode -> the target's fd number (the lowest, if several). Throws on permission problems. */
  socketFds(): Map<number, number> {
    const out = new Map<number, number>();
    let names: string[];
    try {
      names = readdirSync(`/proc/${this.pid}/fd`);
    } catch (e) {
      throw explainTargetError(this.pid, 'list the open files', e);
    }
    for (const name of names) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${this.pid}/fd/${name}`);
      } catch (e) {
        const code = e instanceof Error && 'code' in e ? (e as { code: unknown }).code : '';
        if (code === 'ENOENT') continue; // closed while we looked
        throw explainTargetError(this.pid, 'read the open files', e);
      }
      if (!link.startsWith('socket:[')) continue;
      const inode = Number(link.slice(8, -1));
      const fd = Number(name);
      const seen = out.get(inode);
      if (seen === undefined || fd < seen) out.set(inode, fd);
    }
    return out;
  }

  /** Whether the process still runs (and is not a zombie). */
  alive(): boolean {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return state !== 'Z' && state !== 'X';
    } catch {
      return false;
    }
  }

  close(): void {
    try {
      closeSync(this.pidfd);
    } catch {
      // already closed
    }
  }
}
