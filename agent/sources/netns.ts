// Network namespaces for `watch --netns`: which exist now (discovery), and a
// sock_diag socket inside each. A socket keeps the namespace it was made in,
// so native/diag.cc makes it in a short-lived thread that enters the
// namespace (setns, CAP_SYS_ADMIN) and ends; no other thread ever changes
// namespace. This process's own namespace needs neither: it is dumped through
// the process's usual socket.
import { closeSync, fstatSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { isSystemError } from '../native.js';
import { parseProcCgroup } from '../model/cgroup_path.js';
import { AF_INET, AF_INET6 } from '../parse/inet_diag.js';
import { diagBinding, type DiagBinding } from './diag.js';

/** Where the namespaces are found (tests point them elsewhere). */
export interface NetnsPaths {
  proc: string;
  /** Where `ip netns add` (and CNI plugins) bind-mount named namespaces. */
  runNetns: string;
}

export const NETNS_PATHS: NetnsPaths = { proc: '/proc', runNetns: '/run/netns' };

/** One --netns value: `all`, or a path to a namespace file. Throws an Error saying what is expected. */
export function parseNetnsChoice(text: string): string {
  const t = text.trim();
  if (t === 'all' || t.startsWith('/')) return t;
  throw new Error('expected all, /run/netns/NAME or /proc/PID/ns/net');
}

export interface FoundNamespace {
  inode: number;
  /** The series label: its name under /run/netns, else inode:<number>. */
  label: string;
  /** A file to open it by. */
  path: string;
  /** The lowest-numbered process in it, where one was seen (`all`, a /proc/PID/ns/net path, or withPids). */
  pid?: number;
}

export interface Discovery {
  found: Map<number, FoundNamespace>;
  /** Paths given that name no network namespace now (with why). */
  missing: { path: string; reason: string }[];
}

const NET_LINK = /^net:\[(\d+)\]$/;

const PID_NS = /\/(\d+)\/ns\/net$/;

/**
 * The namespaces `choices` name now, by inode: `all` is every namespace of
 * a process (/proc/PID/ns/net; threads are not looked at) and every one
 * bind-mounted under /run/netns; a path is the namespace it names. Each
 * carries its lowest-numbered process where the listing saw one; withPids
 * lists the processes for that even without `all`.
 */
export function discoverNamespaces(choices: readonly string[], paths: NetnsPaths = NETNS_PATHS, withPids = false): Discovery {
  const found = new Map<number, FoundNamespace>();
  const missing: Discovery['missing'] = [];
  const nsfs = statSync(`${paths.proc}/self/ns/net`).dev;
  const names = namedNamespaces(paths.runNetns, nsfs);
  // A namespace's process is its lowest-numbered one seen.
  const lowerPid = (f: FoundNamespace, pid: number): void => {
    if (f.pid === undefined || pid < f.pid) f.pid = pid;
  };
  const add = (inode: number, path: string, pid?: number): void => {
    const had = found.get(inode);
    if (had !== undefined) {
      if (pid !== undefined) lowerPid(had, pid);
      return;
    }
    const name = names.get(inode);
    found.set(inode, { inode, label: name ?? `inode:${inode}`, path: name !== undefined ? `${paths.runNetns}/${name}` : path, ...(pid !== undefined && { pid }) });
  };
  /** Every process's namespace: each to `each` (inode, its ns file, pid). */
  const processes = (each: (inode: number, path: string, pid: number) => void): void => {
    for (const pid of listDir(paths.proc)) {
      if (!/^\d+$/.test(pid)) continue;
      const path = `${paths.proc}/${pid}/ns/net`;
      let link: string;
      try {
        link = readlinkSync(path);
      } catch {
        continue; // exited meanwhile, or not ours to look at
      }
      const m = NET_LINK.exec(link);
      if (m !== null) each(Number(m[1]), path, Number(pid));
    }
  };
  const all = choices.includes('all');
  for (const choice of choices) {
    if (choice === 'all') {
      for (const [inode, name] of names) add(inode, `${paths.runNetns}/${name}`);
      processes(add);
      continue;
    }
    try {
      const st = statSync(choice);
      if (st.dev !== nsfs) {
        missing.push({ path: choice, reason: 'not a namespace file (expected /run/netns/NAME or /proc/PID/ns/net)' });
        continue;
      }
      const pid = PID_NS.exec(choice);
      add(st.ino, choice, pid !== null && choice.startsWith(`${paths.proc}/`) ? Number(pid[1]) : undefined);
    } catch (e) {
      missing.push({ path: choice, reason: isSystemError(e) && e.code === 'ENOENT' ? 'no such file' : e instanceof Error ? e.message : String(e) });
    }
  }
  if (withPids && !all && found.size > 0) {
    processes((inode, _path, pid) => {
      const f = found.get(inode);
      if (f !== undefined) lowerPid(f, pid);
    });
  }
  return { found, missing };
}

/** inode → name of the namespaces bind-mounted under dir (a leftover plain file is not one). */
function namedNamespaces(dir: string, nsfs: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of listDir(dir).sort()) {
    try {
      const st = statSync(`${dir}/${name}`);
      if (st.dev === nsfs && !out.has(st.ino)) out.set(st.ino, name);
    } catch {
      // deleted meanwhile
    }
  }
  return out;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** A namespace being watched. */
export interface WatchedNamespace {
  readonly inode: number;
  label: string;
  /** This process's own namespace: dumped and subscribed without entering it. */
  readonly own: boolean;
  /** The open namespace file (undefined for the own namespace). */
  readonly nsFd: number | undefined;
  /** Its sock_diag socket (undefined: the process's own, for the own namespace). */
  dumpFd: number | undefined;
  /**
   * Its /proc/net/sockstat and sockstat6 (-1: not readable). Every dump
   * walks the host's whole TCP hash table, whichever the namespace, so a
   * family without a TCP socket there (their "inuse" counts are the
   * namespace's own) is not dumped.
   */
  readonly sockstat: readonly [number, number];
  /** Its lowest-numbered process at the last discovery (NetnsOptions.pods only). */
  pid?: number;
  /**
   * The Kubernetes pod whose namespace it is (NetnsOptions.pods): the pod
   * UID in the cgroup path of its lowest-numbered process. Undefined until
   * a process is seen in it; '' while that process is in no pod (the host's
   * namespace: pid 1), looked for again at the next discoveries
   * (POD_LOOKUPS in all); once found, it stays.
   */
  pod?: string;
}

export interface NetnsOptions {
  /** Find each namespace's pod (WatchedNamespace.pod). */
  pods?: boolean;
}

/**
 * Discoveries in which a namespace's pod is looked for, while its process
 * is in none: a process entering a pod's namespace may be in it a moment
 * before the runtime moves it into the pod's cgroup.
 */
export const POD_LOOKUPS = 5;

/** What goes with each namespace (its table scope, its destroy feed), made and undone by the caller. */
export interface NetnsHooks<T> {
  /** A namespace to watch from now on (ns.nsFd: for subscriptions inside it). Throws to refuse it. */
  added(ns: WatchedNamespace): T;
  /** It went away, or the set is closing. */
  removed(ns: WatchedNamespace, data: T): void;
  /** It has a better label now (a name under /run/netns); false keeps the old one. */
  relabel(ns: WatchedNamespace, data: T, label: string): boolean;
}

export interface RefreshResult {
  added: string[];
  removed: string[];
  /** Namespaces that could not be entered (each reported once while it exists). */
  refused: { label: string; code: string; reason: string }[];
}

/** The sentence for a namespace that could not be entered. */
export function netnsFailure(label: string, e: unknown): { code: string; reason: string } {
  if (isSystemError(e)) {
    if (e.syscall.startsWith('setns') && (e.code === 'EPERM' || e.code === 'EACCES')) {
      return {
        code: e.code,
        reason: `cannot enter network namespace ${label}: setns needs CAP_SYS_ADMIN (run as root, or grant cap_sys_admin) (${e.syscall}: ${e.code})`,
      };
    }
    if (e.syscall.startsWith('setns') && e.code === 'EINVAL') {
      return { code: e.code, reason: `${label} is not a network namespace (${e.syscall}: ${e.code})` };
    }
    return { code: e.code, reason: `cannot watch network namespace ${label}: ${e.message}` };
  }
  return { code: 'ERROR', reason: `cannot watch network namespace ${label}: ${e instanceof Error ? e.message : String(e)}` };
}

/**
 * The namespaces of --netns, re-discovered by refresh() (every interval):
 * new ones are opened (the namespace file kept open, a sock_diag socket made
 * inside), gone ones closed. Each costs five file descriptors (namespace,
 * dump socket, destroy feed, sockstat and sockstat6).
 */
export class NetnsSet<T> {
  private readonly watched = new Map<number, { ns: WatchedNamespace; data: T }>();
  /** Inodes that could not be entered: not retried while they exist. */
  private readonly refused = new Map<number, string>();
  private readonly ownInode: number;
  /** Pod lookups done per namespace (NetnsOptions.pods), while its pod is unknown. */
  private readonly podLookups = new WeakMap<WatchedNamespace, number>();

  constructor(
    readonly choices: readonly string[],
    private readonly hooks: NetnsHooks<T>,
    private readonly binding: DiagBinding = diagBinding(),
    private readonly paths: NetnsPaths = NETNS_PATHS,
    private readonly options: NetnsOptions = {},
  ) {
    this.ownInode = statSync(`${paths.proc}/self/ns/net`).ino;
  }

  get size(): number {
    return this.watched.size;
  }

  entries(): IterableIterator<{ ns: WatchedNamespace; data: T }> {
    return this.watched.values();
  }

  /** Discovers the namespaces now and opens or closes what changed. Never throws for one namespace. */
  refresh(): RefreshResult & { missing: Discovery['missing'] } {
    const pods = this.options.pods === true;
    const { found, missing } = discoverNamespaces(this.choices, this.paths, pods);
    const result: RefreshResult & { missing: Discovery['missing'] } = { added: [], removed: [], refused: [], missing };
    // Gone first: a namespace of the same name made since takes its label over.
    for (const [inode, w] of this.watched) {
      if (found.has(inode)) continue;
      this.drop(inode, w);
      result.removed.push(w.ns.label);
    }
    for (const inode of this.refused.keys()) if (!found.has(inode)) this.refused.delete(inode);
    for (const f of found.values()) {
      const w = this.watched.get(f.inode);
      if (w !== undefined) {
        if (w.ns.label !== f.label && !f.label.startsWith('inode:') && this.hooks.relabel(w.ns, w.data, f.label)) w.ns.label = f.label;
        continue;
      }
      if (this.refused.has(f.inode)) continue;
      const err = this.open(f);
      if (err === undefined) result.added.push(f.label);
      else if (err !== 'raced') {
        this.refused.set(f.inode, err.reason);
        result.refused.push({ label: f.label, ...err });
      }
    }
    if (pods) {
      for (const { ns } of this.watched.values()) {
        ns.pid = found.get(ns.inode)?.pid;
        if (ns.pod === undefined || ns.pod === '') this.lookUpPod(ns);
      }
    }
    return result;
  }

  /** ns.pod from its process's cgroup path: found, or '' after POD_LOOKUPS discoveries that found none. */
  private lookUpPod(ns: WatchedNamespace): void {
    if (ns.pid === undefined) return;
    const done = this.podLookups.get(ns) ?? 0;
    if (done >= POD_LOOKUPS) return;
    this.podLookups.set(ns, done + 1);
    let uid: string | undefined;
    try {
      uid = parseProcCgroup(readFileSync(`${this.paths.proc}/${ns.pid}/cgroup`, 'latin1')).podUid;
    } catch {
      // exited meanwhile: the next discovery has another process, or none
    }
    ns.pod = uid ?? '';
  }

  /** A dump through ns.dumpFd failed: that socket is closed, and a new one made inside before its next dump. */
  dumpFailed(ns: WatchedNamespace): void {
    if (ns.dumpFd === undefined) return;
    closeQuietly(ns.dumpFd);
    ns.dumpFd = undefined;
  }

  /**
   * The families with TCP sockets in the namespace now, from its sockstat
   * counts (listeners included, time-wait not); both when unreadable.
   */
  tcpFamilies(ns: WatchedNamespace): number[] {
    const out: number[] = [];
    if (inUse(ns.sockstat[0], 'TCP') !== 0) out.push(AF_INET);
    if (inUse(ns.sockstat[1], 'TCP6') !== 0) out.push(AF_INET6);
    return out;
  }

  /** Makes the dump socket of a namespace whose last one failed; false (and why) if it cannot. */
  ensureDumpSocket(ns: WatchedNamespace): true | { code: string; reason: string } {
    if (ns.own || ns.dumpFd !== undefined || ns.nsFd === undefined) return true;
    try {
      ns.dumpFd = this.diagSocket(ns.nsFd);
      return true;
    } catch (e) {
      return netnsFailure(ns.label, e);
    }
  }

  close(): void {
    for (const [inode, w] of this.watched) this.drop(inode, w);
  }

  private diagSocket(nsFd: number): number {
    if (this.binding.diagSocket === undefined) throw new Error('the native addon predates diagSocket; rebuild it (npm rebuild)');
    return this.binding.diagSocket(nsFd);
  }

  private procNet(nsFd: number, name: string): number {
    try {
      return this.binding.procNetOpen?.(nsFd, name) ?? -1;
    } catch {
      return -1; // then that family is always dumped
    }
  }

  private open(f: FoundNamespace): undefined | 'raced' | { code: string; reason: string } {
    if (f.inode === this.ownInode) {
      const ns: WatchedNamespace = { inode: f.inode, label: f.label, own: true, nsFd: undefined, dumpFd: undefined, sockstat: [openOwn('sockstat'), openOwn('sockstat6')] };
      try {
        this.watched.set(f.inode, { ns, data: this.hooks.added(ns) });
        return undefined;
      } catch (e) {
        return netnsFailure(f.label, e);
      }
    }
    let nsFd: number;
    try {
      nsFd = openSync(f.path, 'r');
    } catch {
      return 'raced'; // its process exited between the listing and now: found again if it still exists
    }
    try {
      if (fstatSync(nsFd).ino !== f.inode) {
        closeSync(nsFd);
        return 'raced'; // the pid was reused
      }
      const dumpFd = this.diagSocket(nsFd);
      const ns: WatchedNamespace = { inode: f.inode, label: f.label, own: false, nsFd, dumpFd, sockstat: [this.procNet(nsFd, 'sockstat'), this.procNet(nsFd, 'sockstat6')] };
      try {
        this.watched.set(f.inode, { ns, data: this.hooks.added(ns) });
      } catch (e) {
        closeQuietly(dumpFd);
        for (const fd of ns.sockstat) if (fd >= 0) closeQuietly(fd);
        throw e;
      }
      return undefined;
    } catch (e) {
      closeQuietly(nsFd);
      return netnsFailure(f.label, e);
    }
  }

  private drop(inode: number, w: { ns: WatchedNamespace; data: T }): void {
    this.watched.delete(inode);
    try {
      this.hooks.removed(w.ns, w.data);
    } finally {
      if (w.ns.dumpFd !== undefined) closeQuietly(w.ns.dumpFd);
      w.ns.dumpFd = undefined;
      if (w.ns.nsFd !== undefined) closeQuietly(w.ns.nsFd);
      for (const fd of w.ns.sockstat) if (fd >= 0) closeQuietly(fd);
    }
  }
}

function openOwn(name: string): number {
  try {
    return openSync(`/proc/thread-self/net/${name}`, 'r');
  } catch {
    return -1;
  }
}

const statBuf = Buffer.alloc(4096);

/** The "inuse" count of `proto` in a sockstat file (undefined: unreadable). */
function inUse(fd: number, proto: 'TCP' | 'TCP6'): number | undefined {
  if (fd < 0) return undefined;
  try {
    const text = statBuf.toString('latin1', 0, readSync(fd, statBuf, 0, statBuf.length, 0));
    const at = text.indexOf(`\n${proto}: inuse `);
    const start = at >= 0 ? at + proto.length + 9 : text.startsWith(`${proto}: inuse `) ? proto.length + 8 : -1;
    if (start < 0) return undefined;
    const n = parseInt(text.slice(start, start + 12), 10);
    return Number.isNaN(n) ? undefined : n;
  } catch {
    return undefined;
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
