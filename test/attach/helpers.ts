// Plumbing for the attach tests: a target server process, the agent attached
// to it, and a look at the target's sockets from outside (pidfd_getfd, as the
// agent does). The built CLI itself: test/helpers/cli.ts.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { attachBinding, native } from '../../agent/native.js';
import { parseTcpInfo } from '../../agent/parse/tcp_info.js';
import { CLI } from '../helpers/cli.js';

export const TARGET = fileURLToPath(new URL('./target.mjs', import.meta.url));

/** Lines of a child's stdout, as they come; `next(re)` resolves with the first (later) line matching. */
export class Lines {
  readonly all: string[] = [];
  private waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  constructor(child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      this.all.push(l);
      this.waiters = this.waiters.filter((w) => {
        if (!w.re.test(l)) return true;
        w.resolve(l);
        return false;
      });
    });
  }
  next(re: RegExp, ms = 10_000): Promise<string> {
    const seen = this.all.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}; last lines: ${this.all.slice(-5).join('\n')}`)), ms);
      this.waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  }
}

export interface TargetProc {
  child: ChildProcess;
  lines: Lines;
  ports: { bulk: number; paced: number; idle: number };
}

export async function startTarget(env: NodeJS.ProcessEnv = {}, opts: SpawnOptions = {}): Promise<TargetProc> {
  const child = spawn(process.execPath, [TARGET], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env }, ...opts });
  const lines = new Lines(child);
  const ports = JSON.parse(await lines.next(/"bulk"/)) as TargetProc['ports'];
  return { child, lines, ports };
}

export interface AgentProc {
  child: ChildProcess;
  lines: Lines;
  url: string;
  started: Record<string, unknown>;
}

export async function startAgent(pid: number, args: string[] = []): Promise<AgentProc> {
  const child = spawn('node', [CLI, 'attach', '--pid', String(pid), '--metrics-listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = new Lines(child);
  const started = JSON.parse(await lines.next(/"msg":"attaching"/)) as Record<string, unknown>;
  return { child, lines, url: String(started.metrics), started };
}

export async function stopAgent(a: AgentProc, signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; detached?: Record<string, unknown> }> {
  const exited = new Promise<number | null>((r) => a.child.once('exit', (code) => r(code)));
  a.child.kill(signal);
  const code = await exited;
  const line = a.lines.all.find((l) => l.includes('"msg":"detached"'));
  return { code, ...(line !== undefined && { detached: JSON.parse(line) as Record<string, unknown> }) };
}

/** A metric's value from a Prometheus text exposition (the first series matching the labels). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const l of text.split('\n')) {
    if (!l.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(l);
    if (m === null || m[1] !== name) continue;
    const ls = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
}

export interface TargetSocket {
  fd: number;
  inode: number;
  state: number;
  localPort: number;
  timestamping: number;
  /** Records that were waiting in the error queue (read, so now gone). */
  queued: number;
}

/** Every TCP connection of `pid`, seen through fresh pidfd_getfd duplicates. Drains their error queues. */
export function targetSockets(pid: number): TargetSocket[] {
  const b = attachBinding();
  const n = native();
  const pidfd = b.pidfdOpen(pid);
  const out: TargetSocket[] = [];
  try {
    for (const name of readdirSync(`/proc/${pid}/fd`)) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${pid}/fd/${name}`);
      } catch {
        continue;
      }
      if (!link.startsWith('socket:[')) continue;
      let fd: number;
      try {
        fd = b.pidfdGetfd(pidfd, Number(name));
      } catch {
        continue;
      }
      try {
        const info = parseTcpInfo(n.tcpInfo(fd));
        if (info.state === 10) continue; // listener
        const frames = n.drainErrqueue(fd);
        let queued = 0;
        for (let off = 0; frames !== null && off < frames.length; queued++) off += 16 + Math.ceil(frames.readUInt32LE(off + 4) / 8) * 8;
        const local = execLocalPort(fd);
        out.push({ fd: Number(name), inode: Number(link.slice(8, -1)), state: info.state, localPort: local, timestamping: n.getTimestamping(fd), queued });
      } catch {
        // not TCP
      } finally {
        closeSync(fd);
      }
    }
  } finally {
    closeSync(pidfd);
  }
  return out;
}

/** Local port of a socket fd in this process, from /proc/net/tcp{,6} by inode. */
function execLocalPort(fd: number): number {
  const inode = Number(readlinkSync(`/proc/self/fd/${fd}`).slice(8, -1));
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(f, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (Number(cols[9]) === inode) return parseInt(cols[1]!.split(':')[1]!, 16);
    }
  }
  return 0;
}

/** Sets SO_TIMESTAMPING on one of the target's sockets from outside (as its application, or a killed agent, would have). */
export function setTargetTimestamping(pid: number, targetFd: number, flags: number): void {
  const b = attachBinding();
  const pidfd = b.pidfdOpen(pid);
  try {
    const fd = b.pidfdGetfd(pidfd, targetFd);
    try {
      native().setTimestamping(fd, flags);
    } finally {
      closeSync(fd);
    }
  } finally {
    closeSync(pidfd);
  }
}

/** CPU seconds (user + system) the process has used. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ ticks
}

export async function cpuOver(pid: number, ms: number): Promise<number> {
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return (cpuSeconds(pid) - c0) / ((performance.now() - t0) / 1000);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
