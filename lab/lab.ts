// A two-namespace network lab for real-kernel tests:
//
//   [server netns] vs<id> 10.199.0.1/24 ==veth== vc<id> 10.199.0.2/24 [client netns]
//
// Names carry a random id (and the creating pid, for the stale sweep), so two
// runs coexist. Optional shaping (tbf or htb) on either end's egress. Every
// process started through the lab is killed and both namespaces deleted by
// teardown(), which also runs on process exit as a last resort; call it from
// afterAll. Needs root (ip netns, tc).
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Shaping {
  kind: 'tbf' | 'htb';
  /** tc rate, e.g. "20mbit". */
  rate: string;
  /** Which end's egress is shaped: "server" shapes server→client data. */
  on: 'server' | 'client' | 'both';
}

export interface LabEnd {
  ns: string;
  ifname: string;
  address: string;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export class Lab {
  readonly id: string;
  readonly server: LabEnd;
  readonly client: LabEnd;
  private readonly children = new Set<ChildProcess>();
  private torn = false;
  private readonly onExit = (): void => this.teardownSync();

  private constructor(id: string) {
    this.id = id;
    this.server = { ns: `tcs-${process.pid}-${id}`, ifname: `vs${id}`, address: '10.199.0.1' };
    this.client = { ns: `tcc-${process.pid}-${id}`, ifname: `vc${id}`, address: '10.199.0.2' };
  }

  static async create(opts: { shaping?: Shaping } = {}): Promise<Lab> {
    sweepStale();
    const lab = new Lab(randomBytes(3).toString('hex'));
    process.once('exit', lab.onExit);
    try {
      const { server: s, client: c } = lab;
      await ip('netns', 'add', s.ns);
      await ip('netns', 'add', c.ns);
      await ip('link', 'add', s.ifname, 'netns', s.ns, 'type', 'veth', 'peer', 'name', c.ifname, 'netns', c.ns);
      for (const end of [s, c]) {
        await ip('-n', end.ns, 'addr', 'add', `${end.address}/24`, 'dev', end.ifname);
        await ip('-n', end.ns, 'link', 'set', 'dev', end.ifname, 'up');
        await ip('-n', end.ns, 'link', 'set', 'dev', 'lo', 'up');
      }
      const sh = opts.shaping;
      if (sh !== undefined) {
        if (sh.on !== 'client') await lab.shape(s, sh);
        if (sh.on !== 'server') await lab.shape(c, sh);
      }
      return lab;
    } catch (e) {
      await lab.teardown();
      throw e;
    }
  }

  private async shape(end: LabEnd, sh: Shaping): Promise<void> {
    const tc = (...args: string[]): Promise<ExecResult> => this.exec(end.ns, ['tc', ...args]);
    if (sh.kind === 'tbf') {
      await tc('qdisc', 'add', 'dev', end.ifname, 'root', 'tbf', 'rate', sh.rate, 'burst', '32kbit', 'latency', '100ms');
    } else {
      await tc('qdisc', 'add', 'dev', end.ifname, 'root', 'handle', '1:', 'htb', 'default', '10');
      await tc('class', 'add', 'dev', end.ifname, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', sh.rate);
    }
  }

  /** Runs a command to completion inside a namespace (bounded by timeoutMs). */
  async exec(ns: string, cmd: readonly string[], timeoutMs = 20_000, input?: string): Promise<ExecResult> {
    const p = run('ip', ['netns', 'exec', ns, ...cmd], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    if (input !== undefined) {
      p.child.stdin?.end(input);
    }
    const { stdout, stderr } = await p;
    return { stdout: String(stdout), stderr: String(stderr) };
  }

  /** Starts a long-running command inside a namespace; killed by teardown(). */
  spawn(ns: string, cmd: readonly string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** HTTP GET from inside a namespace (127.0.0.1 there is not ours). */
  async fetch(ns: string, url: string): Promise<{ status: number; body: string }> {
    const { stdout } = await this.exec(ns, ['curl', '-sS', '--max-time', '5', '-w', '\n%{http_code}', url], 10_000);
    const cut = stdout.lastIndexOf('\n');
    return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
  }

  /** Kills what the lab started, then deletes both namespaces (and with them the veth pair). */
  async teardown(): Promise<void> {
    if (this.torn) return;
    this.torn = true;
    process.off('exit', this.onExit);
    await Promise.all([...this.children].map((c) => stopChild(c, 3000)));
    for (const ns of [this.server.ns, this.client.ns]) {
      await ip('netns', 'del', ns).catch(() => undefined);
    }
  }

  private teardownSync(): void {
    if (this.torn) return;
    this.torn = true;
    for (const c of this.children) c.kill('SIGKILL');
    for (const ns of [this.server.ns, this.client.ns]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  }
}

function ip(...args: string[]): Promise<ExecResult> {
  return run('ip', args, { timeout: 10_000 }).then(({ stdout, stderr }) => ({ stdout: String(stdout), stderr: String(stderr) }));
}

/** SIGTERM, then SIGKILL after graceMs. Resolves with the exit code (or signal). */
export function stopChild(child: ChildProcess, graceMs = 3000): Promise<number | string | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', (code, signal) => {
      clearTimeout(kill);
      resolve(code ?? signal);
    });
    child.kill('SIGTERM');
  });
}

/** Deletes lab namespaces left by runs whose process is gone (a crash, a SIGKILL). */
export function sweepStale(): void {
  let names: string[];
  try {
    names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '');
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^tc[sc]-(\d+)-[0-9a-f]+$/.exec(name);
    if (m === null) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || alive(pid)) continue;
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      // raced with its owner
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Resolves with the first stdout line matching re (bounded by timeoutMs). */
export function waitForLine(child: ChildProcess, re: RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${re} (output so far: ${buf.slice(-500)})`));
    }, timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const lines = buf.split('\n');
      for (const l of lines) {
        if (re.test(l)) {
          cleanup();
          resolve(l);
          return;
        }
      }
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new Error(`process exited (${code}) before printing ${re}: ${buf.slice(-500)}`));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
  });
}

/** Polls fn until it returns a value (not undefined), every stepMs, at most timeoutMs. */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs: number, stepMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms${last !== undefined ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
