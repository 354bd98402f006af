// Owner process of a socket (pid, comm), found the way ss -p does: the
// socket's inode appears as a `socket:[inode]` link under /proc/PID/fd/.
// Best effort and off the poll path: a scan runs in the background (async
// fs, so the event loop keeps serving), only when an inode we need is
// unknown, and at most every `minRescanMs`. Only the inodes asked for are
// remembered, so memory follows the exported connections, not the host.
import { readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface Owner {
  pid: number;
  comm: string;
}

export interface OwnerStats {
  scans: number;
  lastScanSeconds: number;
  /** fds we could not read (other users' processes without CAP_SYS_PTRACE, races). */
  unreadable: number;
}

export interface OwnerOptions {
  procRoot?: string;
  minRescanMs?: number;
  /** How long an inode no process holds stays "unknown" before it may trigger a scan again. */
  negativeMs?: number;
  /** readlink calls in flight. */
  concurrency?: number;
}

export class OwnerResolver {
  readonly stats: OwnerStats = { scans: 0, lastScanSeconds: 0, unreadable: 0 };
  private readonly known = new Map<number, Owner>();
  private readonly missing = new Map<number, number>(); // inode -> retry after (ms)
  private scanning: Promise<void> | undefined;
  private lastScan = -Infinity;
  private readonly procRoot: string;
  private readonly minRescanMs: number;
  private readonly negativeMs: number;
  private readonly concurrency: number;

  constructor(opts: OwnerOptions = {}) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.minRescanMs = opts.minRescanMs ?? 10_000;
    this.negativeMs = opts.negativeMs ?? 60_000;
    this.concurrency = opts.concurrency ?? 32;
  }

  /** Cached owner of a socket inode, if a scan has found it. */
  lookup(inode: number): Owner | undefined {
    return this.known.get(inode);
  }

  /**
   * Declares the inodes currently needed; starts a background scan when one
   * of them is unknown and the last scan is old enough. Forgets inodes no
   * longer needed. Never throws; returns the running scan (tests await it).
   */
  want(inodes: Iterable<number>, now = Date.now()): Promise<void> | undefined {
    const wanted = new Set<number>();
    let unknown = false;
    for (const ino of inodes) {
      if (ino === 0) continue;
      wanted.add(ino);
      if (!this.known.has(ino) && (this.missing.get(ino) ?? -Infinity) <= now) unknown = true;
    }
    for (const ino of this.known.keys()) if (!wanted.has(ino)) this.known.delete(ino);
    for (const ino of this.missing.keys()) if (!wanted.has(ino)) this.missing.delete(ino);
    if (unknown && this.scanning === undefined && now - this.lastScan >= this.minRescanMs) {
      this.lastScan = now;
      this.scanning = this.scan(wanted, now).finally(() => {
        this.scanning = undefined;
      });
    }
    return this.scanning;
  }

  private async scan(wanted: Set<number>, now: number): Promise<void> {
    const t0 = performance.now();
    const found = new Map<number, number>(); // inode -> pid
    let pids: string[] = [];
    try {
      pids = (await readdir(this.procRoot)).filter((d) => /^\d+$/.test(d));
    } catch {
      return;
    }
    for (const pid of pids) {
      let fds: string[];
      const fdDir = join(this.procRoot, pid, 'fd');
      try {
        fds = await readdir(fdDir);
      } catch {
        this.stats.unreadable++;
        continue;
      }
      for (let i = 0; i < fds.length; i += this.concurrency) {
        const links = await Promise.all(
          fds.slice(i, i + this.concurrency).map((fd) => readlink(join(fdDir, fd)).catch(() => '')),
        );
        for (const l of links) {
          if (!l.startsWith('socket:[')) continue;
          const ino = Number(l.slice(8, -1));
          if (wanted.has(ino) && !found.has(ino)) found.set(ino, Number(pid));
        }
      }
    }
    const comms = new Map<number, string>();
    for (const pid of new Set(found.values())) {
      try {
        comms.set(pid, (await readFile(join(this.procRoot, String(pid), 'comm'), 'utf8')).trim());
      } catch {
        comms.set(pid, '');
      }
    }
    for (const ino of wanted) {
      const pid = found.get(ino);
      if (pid === undefined) {
        if (!this.known.has(ino)) this.missing.set(ino, now + this.negativeMs);
      } else {
        this.known.set(ino, { pid, comm: comms.get(pid) ?? '' });
        this.missing.delete(ino);
      }
    }
    this.stats.scans++;
    this.stats.lastScanSeconds = (performance.now() - t0) / 1000;
  }
}
