// A three-namespace lab with real propagation delay (no netem on our machines):
//
//   [server] dsv<id> 10.201.1.1 ── dma<id> [middle] dmb<id> ── dcl<id> 10.201.2.1 [client]
//                                10.201.1.2        10.201.2.2
//
// Each end routes the other end's subnet via the middle, with a permanent
// neighbour entry (no ARP). The middle does not route in the kernel
// (ip_forward=0): lab/forwarder.py holds every frame for delayMs and
// sends it out of the other interface, so the RTT is 2 × delayMs. Checksum
// and segmentation offloads are off on every interface (a raw socket would
// otherwise carry frames with unfinished checksums, or larger than the MTU).
// IPv6 is off everywhere, so nothing but the tests' own traffic crosses.
//
// An optional rate (tbf or htb) shapes the middle's egress in both directions,
// after the delay: a bottleneck router with a queue, away from the sender.
//
// Names carry a random id and the creating pid, so two runs coexist and the
// stale sweep can tell a dead run's namespaces. Everything started through the
// lab is killed and the namespaces deleted by teardown(), which also runs on
// process exit as a last resort; call it from afterAll. Needs root, ip, tc,
// ethtool, python3.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stopChild, waitForLine, type ExecResult } from './lab.js';

const run = promisify(execFile);

export type Role = 'server' | 'middle' | 'client';

export interface DelayLabOptions {
  /** One-way delay added by the middle, ms (the RTT is twice this). */
  delayMs: number;
  /** Optional bottleneck rate on the middle's egress, both directions, tc syntax ("20mbit"). */
  rate?: string;
  /** Shaper for `rate`. Default tbf. */
  shaper?: 'tbf' | 'htb';
  /** The forwarder exits after this long whatever happens (s). Default 600. */
  lifetimeSeconds?: number;
}

export interface DelayEnd {
  ns: string;
  ifname: string;
  address: string;
}

export interface ForwarderCounters {
  forwarded: number;
  sendErrors: number;
  skippedArp: number;
  /** Latest a frame was sent after its due time, µs. */
  maxLateUs: number;
  /** Longest a frame waited in the raw socket before the forwarder read it, µs (the delay counts from arrival). */
  maxReadLagUs: number;
  /** Whether the forwarder got SCHED_FIFO. */
  realtime: boolean;
}

// Beside this file in the source tree; from dist/lab/ (npm run lab:accuracy), in the package's lab/.
const FORWARDER = [new URL('./forwarder.py', import.meta.url), new URL('../../lab/forwarder.py', import.meta.url)].map((u) => fileURLToPath(u)).find((f) => existsSync(f))!;
const NS_RE = /^tcd[smc]-(\d+)-[0-9a-f]+$/;

export class DelayLab {
  readonly id: string;
  readonly delayMs: number;
  readonly server: DelayEnd;
  readonly client: DelayEnd;
  readonly middle: { ns: string; toServer: DelayEnd; toClient: DelayEnd };
  /** Counters the forwarder printed when it was stopped (after teardown()). */
  forwarderCounters: ForwarderCounters | undefined;
  private forwarder: ChildProcess | undefined;
  private readonly children = new Set<ChildProcess>();
  private torn = false;
  private readonly onExit = (): void => this.teardownSync();

  private constructor(id: string, delayMs: number) {
    this.id = id;
    this.delayMs = delayMs;
    const name = (role: string): string => `tcd${role}-${process.pid}-${id}`;
    this.server = { ns: name('s'), ifname: `dsv${id}`, address: '10.201.1.1' };
    this.client = { ns: name('c'), ifname: `dcl${id}`, address: '10.201.2.1' };
    this.middle = {
      ns: name('m'),
      toServer: { ns: name('m'), ifname: `dma${id}`, address: '10.201.1.2' },
      toClient: { ns: name('m'), ifname: `dmb${id}`, address: '10.201.2.2' },
    };
  }

  get namespaces(): string[] {
    return [this.server.ns, this.middle.ns, this.client.ns];
  }

  static async create(opts: DelayLabOptions): Promise<DelayLab> {
    if (!(opts.delayMs >= 0)) throw new RangeError(`delayMs must be >= 0; got ${opts.delayMs}`);
    sweepStaleDelayLabs();
    const lab = new DelayLab(randomBytes(3).toString('hex'), opts.delayMs);
    process.once('exit', lab.onExit);
    try {
      await lab.build(opts);
      return lab;
    } catch (e) {
      await lab.teardown();
      throw e;
    }
  }

  private async build(opts: DelayLabOptions): Promise<void> {
    const { server: s, client: c, middle: m } = this;
    for (const ns of this.namespaces) await ip('netns', 'add', ns);
    await ip('link', 'add', s.ifname, 'netns', s.ns, 'type', 'veth', 'peer', 'name', m.toServer.ifname, 'netns', m.ns);
    await ip('link', 'add', c.ifname, 'netns', c.ns, 'type', 'veth', 'peer', 'name', m.toClient.ifname, 'netns', m.ns);
    for (const ns of this.namespaces) {
      await this.exec(ns, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
      await ip('-n', ns, 'link', 'set', 'dev', 'lo', 'up');
    }
    // The middle must not forward in the kernel too (the frames would cross twice, undelayed first).
    await this.exec(m.ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
    for (const end of [s, c, m.toServer, m.toClient]) {
      await ip('-n', end.ns, 'addr', 'add', `${end.address}/24`, 'dev', end.ifname);
      await this.exec(end.ns, ['ethtool', '-K', end.ifname, 'tx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off']);
      await ip('-n', end.ns, 'link', 'set', 'dev', end.ifname, 'up');
    }
    const mac = async (end: DelayEnd): Promise<string> => {
      const { stdout } = await ip('-n', end.ns, '-j', 'link', 'show', 'dev', end.ifname);
      const a = (JSON.parse(stdout) as Array<{ address?: string }>)[0]?.address;
      if (a === undefined) throw new Error(`no MAC address for ${end.ifname} in ${end.ns}`);
      return a;
    };
    const [macS, macC, macMS, macMC] = await Promise.all([mac(s), mac(c), mac(m.toServer), mac(m.toClient)]);
    for (const [end, gw, gwMac, far] of [
      [s, m.toServer.address, macMS, '10.201.2.0/24'],
      [c, m.toClient.address, macMC, '10.201.1.0/24'],
    ] as const) {
      await ip('-n', end.ns, 'neigh', 'replace', gw, 'lladdr', gwMac, 'dev', end.ifname, 'nud', 'permanent');
      await ip('-n', end.ns, 'route', 'add', far, 'via', gw, 'dev', end.ifname);
    }
    if (opts.rate !== undefined) {
      for (const end of [m.toServer, m.toClient]) await this.shape(end, opts.rate, opts.shaper ?? 'tbf');
    }
    const fwd = this.spawn(m.ns, [
      'python3',
      FORWARDER,
      m.toServer.ifname,
      m.toClient.ifname,
      String(opts.delayMs),
      macMS,
      macMC,
      macS,
      macC,
      String(opts.lifetimeSeconds ?? 600),
    ]);
    this.forwarder = fwd;
    let stderr = '';
    fwd.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    await waitForLine(fwd, /^ready$/, 10_000).catch((e: unknown) => {
      throw new Error(`forwarder did not start: ${String(e)} ${stderr}`);
    });
  }

  private async shape(end: DelayEnd, rate: string, shaper: 'tbf' | 'htb'): Promise<void> {
    const tc = (...args: string[]): Promise<ExecResult> => this.exec(end.ns, ['tc', ...args]);
    if (shaper === 'tbf') {
      await tc('qdisc', 'add', 'dev', end.ifname, 'root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '100ms');
    } else {
      await tc('qdisc', 'add', 'dev', end.ifname, 'root', 'handle', '1:', 'htb', 'default', '10');
      await tc('class', 'add', 'dev', end.ifname, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', rate);
    }
  }

  /** A role's namespace name; a namespace name is passed through. */
  nsOf(ns: Role | string): string {
    if (ns === 'server') return this.server.ns;
    if (ns === 'client') return this.client.ns;
    if (ns === 'middle') return this.middle.ns;
    return ns;
  }

  /** Runs a command to completion inside a namespace (bounded by timeoutMs). */
  async exec(ns: Role | string, argv: readonly string[], timeoutMs = 20_000): Promise<ExecResult> {
    const { stdout, stderr } = await run('ip', ['netns', 'exec', this.nsOf(ns), ...argv], {
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { stdout: String(stdout), stderr: String(stderr) };
  }

  /** Starts a long-running command inside a namespace; killed by teardown(). */
  spawn(ns: Role | string, argv: readonly string[], extraStdio: Array<'ipc'> = []): ChildProcess {
    if (this.torn) throw new Error('DelayLab is torn down');
    const child = spawn('ip', ['netns', 'exec', this.nsOf(ns), ...argv], { stdio: ['ignore', 'pipe', 'pipe', ...extraStdio] });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /**
   * A listening net.Server in THIS process whose socket lives in the given
   * namespace: a short-lived Node child inside the namespace binds it and hands
   * the listening fd over its IPC channel. Sockets it accepts are ordinary
   * net.Sockets of this process (instrument() works on them), with the
   * namespace's addresses and routes.
   */
  async listen(ns: Role | string, port = 0, timeoutMs = 10_000): Promise<net.Server> {
    const address = ns === 'client' ? this.client.address : this.server.address;
    const script = `
      const net = require('node:net');
      const s = net.createServer({ pauseOnConnect: true });
      s.listen(${port}, ${JSON.stringify(address)}, () => process.send('listening', s, () => { s.close(); process.disconnect(); }));
    `;
    const child = this.spawn(ns, [process.execPath, '-e', script], ['ipc']);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`no listening socket from ${this.nsOf(ns)} within ${timeoutMs} ms`));
      }, timeoutMs);
      child.once('message', (_m, handle) => {
        clearTimeout(timer);
        resolve(handle as net.Server);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`listener child exited (${code}) before handing over its socket`));
      });
    });
  }

  /**
   * Round-trip times (ms) of `count` ICMP echoes from the server to the client
   * address, one every `intervalMs` (there is no ping binary on our machines).
   * The client's kernel answers (no process to schedule there) and the reply's
   * arrival is the kernel's receive timestamp, so the figures are the path's.
   */
  async pingRtt(count = 20, intervalMs = 50): Promise<number[]> {
    const budget = count * (intervalMs + 2000) + 5000;
    const { stdout } = await this.exec('server', ['python3', '-c', ICMP_PING, this.client.address, String(count), String(intervalMs / 1000)], budget);
    return JSON.parse(stdout) as number[];
  }

  /**
   * A reader in the client namespace that connects to the server and reads as
   * fast as it can (default receive buffer, autotuned), until EOF or
   * limitSeconds. Prints one JSON line {bytes, seconds} at the end.
   */
  greedyReader(port: number, limitSeconds = 20): ChildProcess {
    return this.spawn('client', ['python3', '-c', GREEDY_READER, this.server.address, String(port), String(limitSeconds)]);
  }

  /** Kills what the lab started (the forwarder last), then deletes the namespaces. */
  async teardown(): Promise<void> {
    if (this.torn) return;
    this.torn = true;
    process.off('exit', this.onExit);
    const fwd = this.forwarder;
    await Promise.all([...this.children].filter((c) => c !== fwd).map((c) => stopChild(c, 2000)));
    if (fwd !== undefined) {
      let out = '';
      fwd.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      await stopChild(fwd, 2000);
      const line = out.trim().split('\n').pop();
      try {
        if (line !== undefined && line !== '') this.forwarderCounters = JSON.parse(line) as ForwarderCounters;
      } catch {
        // killed before it could print
      }
    }
    for (const ns of this.namespaces) await ip('netns', 'del', ns).catch(() => undefined);
  }

  private teardownSync(): void {
    if (this.torn) return;
    this.torn = true;
    for (const c of this.children) c.kill('SIGKILL');
    for (const ns of this.namespaces) {
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

/**
 * Deletes DelayLab namespaces left by runs whose process is gone (a crash, a
 * SIGKILL). Their forwarders died with their parent (PR_SET_PDEATHSIG).
 */
export function sweepStaleDelayLabs(): string[] {
  let names: string[];
  try {
    names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '');
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const name of names) {
    const m = NS_RE.exec(name);
    if (m === null) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || alive(pid)) continue;
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      swept.push(name);
    } catch {
      // raced with its owner
    }
  }
  return swept;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const ICMP_PING = `
import json, os, socket, struct, sys, time
host, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
SO_TIMESTAMPNS = 35
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
ident = os.getpid() & 0xffff

def checksum(b):
    if len(b) % 2:
        b += b'\\0'
    c = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    c = (c >> 16) + (c & 0xffff)
    c += c >> 16
    return ~c & 0xffff

rtts = []
for seq in range(count):
    body = b'delaylab'
    pkt = struct.pack('!BBHHH', 8, 0, 0, ident, seq) + body
    pkt = struct.pack('!BBHHH', 8, 0, checksum(pkt), ident, seq) + body
    t0 = time.time()
    s.sendto(pkt, (host, 0))
    deadline = t0 + 2.0
    while time.time() < deadline:
        s.settimeout(max(0.001, deadline - time.time()))
        try:
            data, anc, _flags, _addr = s.recvmsg(2048, 64)
        except socket.timeout:
            break
        ihl = (data[0] & 0x0f) * 4
        typ, _code, _sum, rid, rseq = struct.unpack('!BBHHH', data[ihl:ihl + 8])
        if typ != 0 or rid != ident or rseq != seq:
            continue
        arrived = time.time()
        for level, kind, d in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(d) >= 16:
                sec, nsec = struct.unpack('qq', d[:16])
                arrived = sec + nsec * 1e-9
        rtts.append((arrived - t0) * 1000.0)
        break
    time.sleep(interval)
print(json.dumps(rtts), flush=True)
`;

const GREEDY_READER = `
import json, socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=limit)
t0, got, deadline = time.monotonic(), 0, time.monotonic() + limit
while time.monotonic() < deadline:
    b = s.recv(1 << 20)
    if not b:
        break
    got += len(b)
print(json.dumps({'bytes': got, 'seconds': time.monotonic() - t0}), flush=True)
s.close()
`;
