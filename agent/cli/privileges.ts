// Least privilege, per mode (docs/privileges.md): what each mode keeps once
// started, which modes may refuse root on request (--refuse-root, flags.ts
// asks offersRootRefusal), and the start line's summary of who the agent
// runs as and what it will keep.
//
// Capabilities are per thread in Linux; native/caps.cc changes them in every
// thread of the process at once. This module decides what to keep, checks the
// result in /proc/self/task/*/status and logs one line saying what was kept.
// The uid is not changed: a root agent stays uid 0 without capabilities, which
// still owns (reads and writes) every root-owned file and most of /proc/sys,
// so an unprivileged user remains the better way to run what needs nothing.
import { readdirSync, readFileSync } from 'node:fs';
import { native } from '../native.js';
import type { Level } from './log.js';

/** Capability names by number (linux/capability.h, without CAP_), 0 to 40. */
export const CAPABILITIES = [
  'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap', 'linux_immutable',
  'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw', 'ipc_lock', 'ipc_owner', 'sys_module', 'sys_rawio', 'sys_chroot', 'sys_ptrace',
  'sys_pacct', 'sys_admin', 'sys_boot', 'sys_nice', 'sys_resource', 'sys_time', 'sys_tty_config', 'mknod', 'lease', 'audit_write',
  'audit_control', 'setfcap', 'mac_override', 'mac_admin', 'syslog', 'wake_alarm', 'block_suspend', 'audit_read', 'perfmon', 'bpf',
  'checkpoint_restore',
] as const;
export type Capability = (typeof CAPABILITIES)[number];

export type Mode = 'watch' | 'attach' | 'trace' | 'proxy' | 'top' | 'diagnose';

/**
 * What each mode keeps after start-up (measured on Linux 6.18, test/cli/privileges.test.ts).
 * watch: owner lookup lists /proc/PID/fd of every process (another user's
 * needs CAP_DAC_READ_SEARCH) and reads its links (ptrace read access:
 * CAP_SYS_PTRACE); with --owners off it keeps nothing. Its destroy feed is
 * subscribed before the drop and needs no capability on mainline kernels
 * (CAP_NET_ADMIN would only let a reopened dump socket exceed rmem_max).
 * attach: pidfd_getfd on every new connection (CAP_SYS_PTRACE) and the
 * target's /proc/PID/fd (CAP_DAC_READ_SEARCH when it is another user's);
 * SO_TIMESTAMPING on the duplicates needs nothing. trace: loading and attaching
 * need CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (before the drop); reading its maps
 * (counters, the connection scan) needs CAP_BPF while kernel.unprivileged_bpf_disabled
 * is set. top, diagnose: the owner lookup of watch (nothing with --from, which
 * reads another agent). proxy: nothing.
 */
export const KEEP: Readonly<Record<Mode, readonly Capability[]>> = {
  watch: ['dac_read_search', 'sys_ptrace'],
  attach: ['dac_read_search', 'sys_ptrace'],
  trace: ['bpf'],
  proxy: [],
  top: ['dac_read_search', 'sys_ptrace'],
  diagnose: ['dac_read_search', 'sys_ptrace'],
};

/**
 * The commands that work without any privilege, so that refusing root is a
 * choice a user can make for them (--refuse-root): as root they keep only
 * what KEEP says and drop the rest.
 */
const ROOT_OPTIONAL: ReadonlySet<string> = new Set(['proxy', 'top', 'diagnose']);

export function offersRootRefusal(command: string): boolean {
  return ROOT_OPTIONAL.has(command);
}

/** The sentence of --refuse-root as root. */
export function rootRefusal(command: string): string {
  return `${command} --refuse-root: refusing to run as root (euid 0); run it as an unprivileged user, or leave out --refuse-root (as root it keeps only what it needs: docs/privileges.md)`;
}

/** The capability sets and no_new_privs of one /proc/…/status. */
export interface CapStatus {
  eff: bigint;
  prm: bigint;
  bnd: bigint;
  inh: bigint;
  amb: bigint;
  noNewPrivs: number;
}

export function parseCapStatus(text: string): CapStatus {
  const hex = (k: string): bigint => {
    const m = new RegExp(`^${k}:\\s*([0-9a-f]+)$`, 'm').exec(text);
    return m === null ? 0n : BigInt(`0x${m[1]}`);
  };
  const nnp = /^NoNewPrivs:\s*(\d+)$/m.exec(text);
  return { eff: hex('CapEff'), prm: hex('CapPrm'), bnd: hex('CapBnd'), inh: hex('CapInh'), amb: hex('CapAmb'), noNewPrivs: nnp === null ? 0 : Number(nnp[1]) };
}

export function capMask(caps: readonly Capability[]): bigint {
  let m = 0n;
  for (const c of caps) m |= 1n << BigInt(CAPABILITIES.indexOf(c));
  return m;
}

export function capNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let bit = 0; bit < 64; bit++) if ((mask >> BigInt(bit)) & 1n) out.push(CAPABILITIES[bit] ?? `cap_${bit}`);
  return out;
}

// The capabilities that matter to some mode, for the start line.
const NOTABLE: readonly Capability[] = ['dac_override', 'dac_read_search', 'net_admin', 'net_raw', 'sys_ptrace', 'sys_admin'];

/**
 * Who the agent runs as, for the start line: uid and the capabilities that
 * matter to some mode (from /proc/self/status CapEff).
 */
export function privileges(procStatus = '/proc/self/status'): { uid: number; euid: number; root: boolean; capabilities: string[] } {
  const uid = process.getuid?.() ?? -1;
  const euid = process.geteuid?.() ?? -1;
  let capabilities: string[] = [];
  try {
    const eff = parseCapStatus(readFileSync(procStatus, 'utf8')).eff;
    capabilities = NOTABLE.filter((c) => (eff & capMask([c])) !== 0n);
  } catch {
    // not Linux /proc: say nothing
  }
  return { uid, euid, root: euid === 0, capabilities };
}

interface NativeThreadResult {
  tid: number;
  self: boolean;
  stage: 'ok' | 'capget' | 'ambient' | 'bounding' | 'capset' | 'no_new_privs';
  code?: string;
}

type LogFn = (level: Level, msg: string, fields?: Record<string, unknown>) => void;

export interface DropOptions {
  /** Where the line goes; without one (top: stdout is its screen) only a failure is said, on stderr. */
  log?: LogFn;
  /** false: no owner lookup (watch --owners off; top/diagnose --from), which is what those keep capabilities for. */
  owners?: boolean;
  /**
   * watch --netns: entering other network namespaces (setns, for new ones
   * every interval) needs CAP_SYS_ADMIN, and finding them in /proc/PID/ns/net
   * ptrace read access (CAP_SYS_PTRACE): both kept.
   */
  netns?: boolean;
}

export interface DropResult {
  /** False when there was nothing to drop (no capabilities) or the drop failed (logged). */
  dropped: boolean;
  kept: string[];
  threads: number;
}

/** Status of every thread of this process. */
function threadStatuses(): { tid: string; status: CapStatus }[] {
  const out: { tid: string; status: CapStatus }[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      out.push({ tid, status: parseCapStatus(readFileSync(`/proc/self/task/${tid}/status`, 'utf8')) });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

const hex = (m: bigint): string => m.toString(16).padStart(16, '0');

/** What `mode` keeps, given its options. */
export function wantedCapabilities(mode: Mode, opts: DropOptions = {}): readonly Capability[] {
  const base = opts.owners === false && mode !== 'attach' && mode !== 'trace' ? [] : KEEP[mode];
  return mode === 'watch' && opts.netns === true ? [...new Set<Capability>([...base, 'sys_admin', 'sys_ptrace'])] : base;
}

/**
 * For the start line, when the process has capabilities to drop (root, or
 * granted ones): what it keeps and that the rest goes. Undefined otherwise.
 */
export function describeDrop(mode: Mode, opts: DropOptions = {}, procStatus = '/proc/self/status'): string | undefined {
  let prm: bigint;
  try {
    prm = parseCapStatus(readFileSync(procStatus, 'utf8')).prm;
  } catch {
    return undefined;
  }
  if (prm === 0n) return undefined;
  const kept = capNames(capMask(wantedCapabilities(mode, opts)) & prm);
  return kept.length === 0
    ? `${mode} needs no privilege: every capability is dropped now`
    : `keeps ${kept.map((c) => `CAP_${c.toUpperCase()}`).join(' and ')}, drops every other capability now`;
}

/**
 * Drops every capability the mode does not keep (KEEP), in every thread;
 * clears the inheritable and ambient sets, drops the rest from the bounding
 * set and sets no_new_privs, so nothing is regained through execve. Call it
 * once started (listeners bound). Does nothing when the process has no
 * capability (an unprivileged user). Never throws: a failure is logged (the
 * agent keeps running with its capabilities, as before this existed).
 */
export function dropPrivileges(mode: Mode, opts: DropOptions = {}): DropResult {
  const say: LogFn =
    opts.log ??
    ((level, msg, fields) => {
      if (level === 'error' || level === 'warn') process.stderr.write(`tcp-chronograph: ${msg}${fields?.error !== undefined ? ` (${String(fields.error)})` : ''}\n`);
    });
  let before: CapStatus;
  try {
    before = parseCapStatus(readFileSync('/proc/self/status', 'utf8'));
  } catch {
    return { dropped: false, kept: [], threads: 0 }; // no /proc: not Linux
  }
  if (before.prm === 0n && before.eff === 0n && before.amb === 0n) return { dropped: false, kept: [], threads: 0 };

  const keep = capMask(wantedCapabilities(mode, opts)) & before.prm;
  const kept = capNames(keep);
  const setpcap = (before.eff & capMask(['setpcap'])) !== 0n;
  const fail = (error: string): DropResult => {
    say('error', 'could not drop the capabilities this mode does not use; it keeps running with them', { mode, error });
    return { dropped: false, kept: capNames(before.eff), threads: 0 };
  };

  let results: NativeThreadResult[];
  try {
    const drop = (native() as unknown as { dropCapabilities?: (keep: bigint) => { threads: NativeThreadResult[] } }).dropCapabilities;
    if (drop === undefined) return fail('the native addon predates dropCapabilities; rebuild it (npm rebuild)');
    results = drop(keep).threads;
  } catch (e) {
    return fail(e instanceof Error ? e.message : String(e));
  }
  // Without CAP_SETPCAP the bounding set cannot shrink: harmless under
  // no_new_privs (execve then grants nothing beyond the permitted set).
  const boundingKept = !setpcap && results.some((r) => r.stage === 'bounding' && r.code === 'EPERM');
  const bad = results.find((r) => r.stage !== 'ok' && !(boundingKept && r.stage === 'bounding' && r.code === 'EPERM'));
  if (bad !== undefined) return fail(`thread ${bad.tid}: ${bad.stage} failed (${bad.code ?? 'unknown'})`);

  const bnd = boundingKept ? before.bnd : before.bnd & keep;
  const threads = threadStatuses();
  for (const { tid, status: s } of threads) {
    if (s.eff !== keep || s.prm !== keep || s.inh !== 0n || s.amb !== 0n || s.bnd !== bnd || s.noNewPrivs !== 1) {
      return fail(
        `thread ${tid} still has CapEff ${hex(s.eff)} CapPrm ${hex(s.prm)} CapBnd ${hex(s.bnd)} NoNewPrivs ${s.noNewPrivs}, expected ${hex(keep)}/${hex(keep)}/${hex(bnd)}/1`,
      );
    }
  }
  say('info', 'capabilities dropped', {
    mode,
    kept: kept.length > 0 ? kept : 'none',
    threads: threads.length,
    noNewPrivs: true,
    uid: process.geteuid?.() ?? -1,
    ...(boundingKept && { bounding: `unchanged (${capNames(bnd).join(',') || 'empty'}): no CAP_SETPCAP to shrink it; no_new_privs keeps execve from using it` }),
  });
  return { dropped: true, kept, threads: threads.length };
}
