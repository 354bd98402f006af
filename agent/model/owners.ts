// Owner process of a socket (pid, comm), found the way ss -p does: the
// socket's inode appears as a `socket:[inode]` link under /proc/PID/fd/.
// Best effort and off the poll path: connections that need an owner are
// queued, and a background scan (async fs, the event loop keeps serving)
// runs at most every `minRescanMs`, writing the owner onto the connection
// itself, so nothing is cached here and memory follows the connections.
import { readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseProcCgroup } from './cgroup_path.js';

export interface Owner {
  pid: number;
  comm: string;
  /** The container the process runs in, from its cgroup path (only with OwnerOptions.containers; '' for none). */
  containerId?: string;
}

/** What the resolver needs of a connection. */
export interface Ownable {
  inode: number;
  owner?: Owner;
}

export interface OwnerStats {
  scans: number;
  lastScanSeconds: number;
  /** Processes whose fds could not be listed (other users without CAP_SYS_PTRACE, races). */
  unreadable: number;
}

export interface OwnerOptions {
  procRoot?: string;
  minRescanMs?: number;
  /** readlink calls in flight. */
  concurrency?: number;
  /** Also read each owner's /proc/PID/cgroup for its container ID (watch --netns-labels container_id). */
  containers?: boolean;
}

export class OwnerResolver {
  readonly stats: OwnerStats = { scans: 0, lastScanSeconds: 0, unreadable: 0 };
  private pending = new Set<Ownable>();
  private scanning: Promise<void> | undefined;
  private lastScan = -Infinity;
  private readonly procRoot: string;
  private readonly minRescanMs: number;
  private readonly concurrency: number;
  private readonly containers: boolean;

  constructor(opts: OwnerOptions = {}) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.minRescanMs = opts.minRescanMs ?? 5_000;
    this.concurrency = opts.concurrency ?? 32;
    this.containers = opts.containers ?? false;
  }

  /** Queues a connection whose owner is unknown (no-op if known or fileless). */
  request(c: Ownable): void {
    if (c.owner === undefined && c.inode !== 0) this.pending.add(c);
  }

  /**
   * Starts a background scan for the queued connections if the last one is
   * old enough. Never throws; returns the running scan (tests await it).
   */
  flush(now = Date.now()): Promise<void> | undefined {
    if (this.pending.size > 0 && this.scanning === undefined && now - this.lastScan >= this.minRescanMs) {
      this.lastScan = now;
      const batch = this.pending;
      this.pending = new Set();
      this.scanning = this.scan(batch)
        .catch(() => undefined)
        .finally(() => {
          this.scanning = undefined;
        });
    }
    return this.scanning;
  }

  private async scan(batch: Set<Ownable>): Promise<void> {
    const t0 = performance.now();
    const wanted = new Map<number, Ownable[]>();
    for (const c of batch) {
      if (c.owner !== undefined) continue;
      const list = wanted.get(c.inode);
      if (list === undefined) wanted.set(c.inode, [c]);
      else list.push(c);
    }
    if (wanted.size === 0) return;
    const pids = (await readdir(this.procRoot)).filter((d) => /^\d+$/.test(d));
    for (const pid of pids) {
      if (wanted.size === 0) break;
      const fdDir = join(this.procRoot, pid, 'fd');
      let fds: string[];
      try {
        fds = await readdir(fdDir);
      } catch {
        this.stats.unreadable++;
        continue;
      }
      let found: Ownable[] = [];
      for (let i = 0; i < fds.length && wanted.size > 0; i += this.concurrency) {
        const links = await Promise.all(
          fds.slice(i, i + this.concurrency).map((fd) => readlink(join(fdDir, fd)).catch(() => '')),
        );
        for (const l of links) {
          if (!l.startsWith('socket:[')) continue;
          const ino = Number(l.slice(8, -1));
          const conns = wanted.get(ino);
          if (conns === undefined) continue;
          wanted.delete(ino);
          found = found.concat(conns);
        }
      }
      if (found.length === 0) continue;
      let comm = '';
      try {
        comm = (await readFile(join(this.procRoot, pid, 'comm'), 'utf8')).trim();
      } catch {
        // exited meanwhile: the pid is still the best answer
      }
      const owner: Owner = { pid: Number(pid), comm };
      if (this.containers) {
        try {
          owner.containerId = parseProcCgroup(await readFile(join(this.procRoot, pid, 'cgroup'), 'utf8')).containerId ?? '';
        } catch {
          owner.containerId = ''; // exited meanwhile
        }
      }
      for (const c of found) c.owner ??= owner;
    }
    this.stats.scans++;
    this.stats.lastScanSeconds = (performance.now() - t0) / 1000;
  }
}
