// Least privilege, end to end with the built CLI (tests run as root):
// watch and attach drop, in every thread, the capabilities they do not use
// and keep working; proxy, top and diagnose run as root too (proxy drops
// every capability, top and diagnose keep owner lookup's two) unless asked to
// refuse it (--refuse-root); an unprivileged run attempts nothing.
// Every thread is read from /proc/<agent>/task/*/status (capabilities are per
// thread: one thread left with the old set would defeat the drop).
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { capMask, KEEP, parseCapStatus, wantedCapabilities, type CapStatus } from '../../agent/cli/privileges.js';
import { CLI, ensureBuilt, runCli } from '../helpers/cli.js';
import { freePort } from '../helpers/loopback.js';
import { TARGET } from '../attach/helpers.js';

const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A child with its stdout and stderr lines (JSON logs: TCP_CHRONOGRAPH_LOG_FORMAT=json). */
class Proc {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  constructor(cmd: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TCP_CHRONOGRAPH_LOG_FORMAT: 'json', ...env } });
    for (const s of [this.child.stdout!, this.child.stderr!]) createInterface({ input: s }).on('line', (l) => this.lines.push(l));
  }
  get pid(): number {
    return this.child.pid!;
  }
  /** The first JSON log line with this msg (waits up to ms). */
  async msg(msg: string, ms = 15_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + ms;
    for (;;) {
      for (const l of this.lines) {
        if (!l.startsWith('{')) continue;
        const o = JSON.parse(l) as Record<string, unknown>;
        if (o.msg === msg) return o;
      }
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`no "${msg}" line; got:\n${this.lines.join('\n')}`);
      await sleep(50);
    }
  }
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

interface ThreadCaps extends CapStatus {
  tid: string;
  comm: string;
}

function threads(pid: number): ThreadCaps[] {
  const out: ThreadCaps[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = parseCapStatus(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      out.push({ tid, comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), ...status });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Every thread: effective = permitted = bounding = keep, nothing inheritable or ambient, no_new_privs. */
function expectEveryThread(pid: number, keep: bigint): void {
  const ts = threads(pid);
  // V8 platform workers, the libuv threadpool, Node's SIGUSR1 watcher: never just the main thread.
  expect(ts.length).toBeGreaterThan(4);
  const want = { eff: keep, prm: keep, bnd: keep, inh: 0n, amb: 0n, noNewPrivs: 1 };
  for (const t of ts) expect({ tid: t.tid, comm: t.comm, eff: t.eff, prm: t.prm, bnd: t.bnd, inh: t.inh, amb: t.amb, noNewPrivs: t.noNewPrivs }).toEqual({ tid: t.tid, comm: t.comm, ...want });
}

/** A python process of uid 65534 holding a loopback connection to itself on `port`. */
function nobodyConnection(port: number): Proc {
  const py = `
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", ${port})); s.listen()
c = socket.create_connection(("127.0.0.1", ${port})); a, _ = s.accept()
print("ready", flush=True)
time.sleep(120)
`;
  return new Proc([...NOBODY, '/usr/bin/python3', '-c', py]);
}

async function untilLine(p: Proc, re: RegExp, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!p.lines.some((l) => re.test(l))) {
    if (Date.now() > deadline) throw new Error(`no line matching ${re}; got:\n${p.lines.join('\n')}`);
    await sleep(50);
  }
}

const procs: Proc[] = [];
const start = (cmd: string[], env?: NodeJS.ProcessEnv): Proc => {
  const p = new Proc(cmd, env);
  procs.push(p);
  return p;
};

beforeAll(() => {
  ensureBuilt();
});

afterEach(() => {
  for (const p of procs.splice(0)) p.kill();
});

afterAll(() => {
  for (const p of procs.splice(0)) p.kill();
});

const KEEP_WATCH = capMask(KEEP.watch);

describe('watch and attach as root: keep only what they use, in every thread', () => {
  it('watch keeps CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, and still names the owner of another user’s connection', async () => {
    expect(KEEP_WATCH).toBe((1n << 19n) | (1n << 2n));
    const port = await freePort();
    const agent = start(['node', CLI, 'watch', '--listen', '127.0.0.1:0', '--interval', '200ms', '--port', String(port)]);
    const dropped = await agent.msg('capabilities dropped');
    expect(dropped).toMatchObject({ mode: 'watch', kept: ['dac_read_search', 'sys_ptrace'], noNewPrivs: true, uid: 0 });
    const watching = await agent.msg('watching');
    expect(watching).toMatchObject({ destroyFeed: 'on', privileges: { root: true } });
    expectEveryThread(agent.pid, KEEP_WATCH);

    // After the drop: a process of uid 65534 opens a connection; its owner is found through /proc.
    const py = nobodyConnection(port);
    procs.push(py);
    await untilLine(py, /^ready$/);
    const url = `${String(watching.listen)}/api/connections`;
    const deadline = Date.now() + 20_000;
    let owners: unknown[] = [];
    while (Date.now() < deadline) {
      const body = (await (await fetch(url)).json()) as { connections: { pid: number | null; comm: string | null }[] };
      owners = body.connections.map((c) => [c.pid, c.comm]);
      if (body.connections.length > 0 && body.connections.every((c) => c.pid === py.pid)) break;
      await sleep(250);
    }
    // --port: the accepted side (local port `port`); the client side's local port is ephemeral.
    expect(owners).toEqual([[py.pid, 'python3']]);
    expect(agent.lines.filter((l) => /"level":"error"/.test(l))).toEqual([]);
    // Threads the agent started since (the threadpool grows with the owner scan) inherit the dropped set.
    expectEveryThread(agent.pid, KEEP_WATCH);
  }, 40_000);

  it('watch --owners off keeps nothing', async () => {
    const agent = start(['node', CLI, 'watch', '--listen', '127.0.0.1:0', '--owners', 'off']);
    expect(await agent.msg('capabilities dropped')).toMatchObject({ mode: 'watch', kept: 'none' });
    expectEveryThread(agent.pid, 0n);
  });

  it('attach keeps CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, and still adopts a new connection of another user’s server', async () => {
    const target = start([...NOBODY, process.execPath, TARGET]);
    await untilLine(target, /"bulk"/);
    const ports = JSON.parse(target.lines.find((l) => l.includes('"bulk"'))!) as { paced: number; idle: number };
    const first = net.connect({ host: '127.0.0.1', port: ports.idle });
    first.on('error', () => {});
    await new Promise((r) => first.once('connect', r));
    const agent = start(['node', CLI, 'attach', '--pid', String(target.pid), '--metrics-listen', '127.0.0.1:0', '--interval', '200ms', '--detach-timeout', '0']);
    const attaching = await agent.msg('attaching');
    expect(attaching.sockets).toBe(1);
    expect(await agent.msg('capabilities dropped')).toMatchObject({ mode: 'attach', kept: ['dac_read_search', 'sys_ptrace'], noNewPrivs: true });
    // The drainer thread too (started with the first attached socket).
    expectEveryThread(agent.pid, KEEP_WATCH);

    const late = net.connect({ host: '127.0.0.1', port: ports.paced });
    late.on('data', () => {});
    late.on('error', () => {});
    await new Promise((r) => late.once('connect', r));
    const peer = `127.0.0.1:${late.localPort}`;
    const deadline = Date.now() + 10_000;
    let sockets: { port: number; peer: string; records: number }[] = [];
    while (Date.now() < deadline) {
      sockets = (await (await fetch(`${String(attaching.metrics)}/api/sockets`)).json()) as typeof sockets;
      if (sockets.some((s) => s.peer === peer && s.records > 0)) break;
      await sleep(200);
    }
    expect(sockets.find((s) => s.peer === peer)).toMatchObject({ port: ports.paced, peer });
    expect(sockets.find((s) => s.peer === peer)!.records).toBeGreaterThan(0);
    expect(agent.lines.filter((l) => /"level":"error"/.test(l))).toEqual([]);
    const exited = new Promise((r) => agent.child.once('exit', r));
    agent.child.kill('SIGTERM');
    await exited;
    expect(agent.child.exitCode).toBe(0);
    first.destroy();
    late.destroy();
  }, 40_000);
});

describe('proxy, top and diagnose run as root, keeping only what they need, unless --refuse-root', () => {
  const REFUSED = /^tcp-chronograph: (proxy|top|diagnose) --refuse-root: refusing to run as root \(euid 0\); run it as an unprivileged user, or leave out --refuse-root/;
  it.each([
    ['proxy', ['proxy', '--refuse-root', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1']],
    ['top', ['top', '--refuse-root', '--once']],
    ['diagnose', ['diagnose', '--refuse-root', '--for', '1s']],
    ['diagnose --from', ['diagnose', '--refuse-root', '--from', 'http://127.0.0.1:1']],
  ])('%s --refuse-root as root: exit 2 and one sentence naming the fix', (_name, args) => {
    const r = runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(REFUSED);
  });

  it('usage errors come first, --help still works, an unprivileged user with --refuse-root runs, --allow-root is still accepted', () => {
    expect(runCli(['top', '--sort', 'nope'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/expected one of stall/) });
    const help = runCli(['proxy', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--refuse-root\n.*Refuse to start as root[\s\S]*env TCP_CHRONOGRAPH_PROXY_REFUSE_ROOT/);
    expect(help.stdout).toMatch(/--allow-root\n.*Deprecated, has no effect/);
    expect(runCli(['watch', '--help']).stdout).not.toContain('--refuse-root');
    expect(runCli(['proxy', '--refuse-root', '--listen', '127.0.0.1:0'], { prefix: NOBODY })).toMatchObject({ code: 2, stderr: expect.stringMatching(/--upstream is required/) });
    expect(runCli(['top', '--refuse-root', '--once', '--interval', '100ms'], { prefix: NOBODY })).toMatchObject({ code: 0, stdout: expect.stringMatching(/^tcp-chronograph top/) });
    expect(runCli(['top', '--allow-root', '--once', '--interval', '100ms'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^tcp-chronograph top/) });
  });

  it('proxy as root binds a port below 1024, then drops every capability in every thread, says so in its start line, and relays', async () => {
    const upstream = net.createServer((s) => s.end('hello\n')).listen(0, '127.0.0.1');
    await new Promise((r) => upstream.once('listening', r));
    try {
      let low = 0;
      for (let p = 1000; p > 900 && low === 0; p--) {
        const probe = net.createServer();
        const ok = await new Promise<boolean>((r) => probe.once('error', () => r(false)).listen(p, '127.0.0.1', () => r(true)));
        if (ok) {
          low = p;
          await new Promise((r) => probe.close(r));
        }
      }
      const up = (upstream.address() as net.AddressInfo).port;
      const agent = start(['node', CLI, 'proxy', '--listen', `127.0.0.1:${low}`, '--upstream', `127.0.0.1:${up}`, '--metrics-listen', '127.0.0.1:0']);
      expect(await agent.msg('proxying')).toMatchObject({ capabilities: 'proxy needs no privilege: every capability is dropped now' });
      expect(await agent.msg('capabilities dropped')).toMatchObject({ mode: 'proxy', kept: 'none', noNewPrivs: true });
      expectEveryThread(agent.pid, 0n);
      const got = await new Promise<string>((resolve, reject) => {
        let text = '';
        net.connect({ host: '127.0.0.1', port: low }).on('data', (d) => (text += String(d))).on('end', () => resolve(text)).on('error', reject);
      });
      expect(got).toBe('hello\n');
    } finally {
      upstream.close();
    }
  }, 20_000);

  it('top as root (batch) keeps only what owner lookup needs, in every thread', async () => {
    const top = start(['node', CLI, 'top', '--interval', '300ms']);
    await untilLine(top, /^tcp-chronograph top/);
    expectEveryThread(top.pid, capMask(KEEP.top));
    // top writes no log line (stdout is its table)
    expect(top.lines.filter((l) => l.startsWith('{'))).toEqual([]);
  });

  it('without owner lookup (top/diagnose --from, watch --owners off) nothing is kept; attach and trace keep theirs', () => {
    for (const mode of ['top', 'diagnose', 'watch', 'proxy'] as const) expect(wantedCapabilities(mode, { owners: false })).toEqual([]);
    expect(wantedCapabilities('attach', { owners: false })).toEqual(KEEP.attach);
    expect(wantedCapabilities('trace', { owners: false })).toEqual(['bpf']);
    expect(wantedCapabilities('watch', { netns: true })).toEqual(['dac_read_search', 'sys_ptrace', 'sys_admin']);
  });

  it('diagnose as root keeps only what owner lookup needs, in every thread, and says so in its first line', async () => {
    const d = start(['node', CLI, 'diagnose', '--for', '5s', '--json']);
    expect(await d.msg('diagnosing')).toMatchObject({ capabilities: 'keeps CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, drops every other capability now' });
    expect(await d.msg('capabilities dropped')).toMatchObject({ mode: 'diagnose', kept: ['dac_read_search', 'sys_ptrace'] });
    expectEveryThread(d.pid, capMask(KEEP.diagnose));
  });
});

describe('unprivileged', () => {
  it('watch as nobody attempts no drop and says nothing about it', async () => {
    const agent = start([...NOBODY, 'node', CLI, 'watch', '--listen', '127.0.0.1:0', '--interval', '200ms']);
    await agent.msg('watching');
    await sleep(800);
    expect(agent.lines.filter((l) => /capabilities|"level":"error"/.test(l) && !l.includes('"msg":"watching"'))).toEqual([]);
    const main = parseCapStatus(readFileSync(`/proc/${agent.pid}/status`, 'utf8'));
    expect(main).toMatchObject({ eff: 0n, prm: 0n, noNewPrivs: 0 });
    expect(agent.child.exitCode).toBe(null);
  });
});
