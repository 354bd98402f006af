// npm run demo: a receive-window stall diagnosed within a minute.
//
//   [host] 127.0.0.1:PORT ─relay─ tcdh<id> 10.202.N.1 ══veth══ 10.202.N.2 [server ns]
//                                                  segment server :8080, agent (watch) :9465
//   [server ns] ── 20 ms ── [middle ns: delay, 20 Mbit/s] ── 20 ms ── [client ns]
//                                                  healthy player, stalling player
//
// The agent runs inside the server namespace (watch sees that namespace's
// sockets) and listens on the namespace's end of a veth pair into the host's
// namespace, so the host reaches it at http://10.202.N.2:9465 directly, and at
// http://127.0.0.1:PORT through a small relay in this process. Nothing is
// routed between the host and the lab's other addresses. Everything is torn
// down on Ctrl-C, SIGTERM, the end of --seconds, and on exit.
//
//   npm run demo [-- --seconds 300]
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { DelayLab } from './delay.js';
import { waitForLine } from './lab.js';
import { CLI, PEERS, ROOT } from './accuracy.js';

const SEGMENT_SERVER = join(ROOT, 'dist/lab/segment-server.js');
const APP_PORT = 8080;
const AGENT_PORT = 9465;

interface ApiConnection {
  id: string;
  remote: string;
  local: string;
  rwndShare: number;
  peerRwndBytes: number | null;
  rttSeconds: number;
  bytesAcked: number;
  lastInterval: { seconds: number; busySeconds: number; rwndLimitedSeconds: number; sndbufLimitedSeconds: number; bytesAcked: number };
}

const say = (s: string): void => void process.stdout.write(s + '\n');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function verdictOf(li: ApiConnection['lastInterval']): string {
  if (li.seconds <= 0) return 'new';
  const span = li.seconds;
  const busy = Math.min(li.busySeconds, span);
  const shares = { rwnd: li.rwndLimitedSeconds / span, sndbuf: li.sndbufLimitedSeconds / span, network: (busy - li.rwndLimitedSeconds - li.sndbufLimitedSeconds) / span, app: (span - busy) / span };
  return (Object.entries(shares) as Array<[string, number]>).reduce((a, b) => (b[1] > a[1] ? b : a))[0];
}

/** A TCP relay on host loopback to the agent in the namespace; a free port if the preferred one is taken. */
async function relay(target: { host: string; port: number }, preferred: number): Promise<net.Server> {
  const server = net.createServer((c) => {
    const up = net.connect(target.port, target.host);
    c.pipe(up).pipe(c);
    const end = (): void => {
      c.destroy();
      up.destroy();
    };
    c.on('error', end);
    up.on('error', end);
  });
  for (const port of [preferred, 0]) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolve());
      });
      return server;
    } catch {
      // in use: take any free port
    }
  }
  throw new Error('cannot listen on host loopback');
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--seconds');
  const seconds = i >= 0 ? Number(process.argv[i + 1]) : 300;
  if (!(seconds > 10 && seconds <= 3600)) throw new Error('--seconds must be from 10 to 3600');
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');

  say('building the lab: server, middle (20 ms each way, 20 Mbit/s) and client namespaces …');
  const lab = await DelayLab.create({ delayMs: 20, rate: '20mbit', lifetimeSeconds: seconds + 30 });
  let relayServer: net.Server | undefined;
  let stopping = false;
  // Deleting a namespace does not always destroy a veth pair at once (the
  // kernel may keep the namespace alive a while, e.g. for TIME_WAIT sockets):
  // the host end is deleted explicitly, also on an abrupt exit.
  const hostIf = `tcdh${lab.id}`;
  const dropHostIf = (): void => {
    try {
      execFileSync('ip', ['link', 'del', hostIf], { stdio: 'ignore' });
    } catch {
      // not created, or already gone
    }
  };
  process.once('exit', dropHostIf);
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    say(`\n${why}: tearing the lab down …`);
    relayServer?.close();
    dropHostIf();
    await lab.teardown();
    say('done (namespaces, veth pairs and processes removed)');
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('Ctrl-C'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  const deadline = setTimeout(() => void stop(`${seconds} s elapsed`), seconds * 1000);
  deadline.unref();

  try {
    // A veth into the host's namespace for the agent's HTTP listener.
    const n = randomBytes(1)[0]! % 250;
    const nsIf = `tcdx${lab.id}`;
    const hostAddr = `10.202.${n}.1`;
    const agentAddr = `10.202.${n}.2`;
    await execIp(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', lab.server.ns]);
    await execIp(['addr', 'add', `${hostAddr}/30`, 'dev', hostIf]);
    await execIp(['link', 'set', 'dev', hostIf, 'up']);
    await lab.exec('server', ['ip', 'addr', 'add', `${agentAddr}/30`, 'dev', nsIf]);
    await lab.exec('server', ['ip', 'link', 'set', 'dev', nsIf, 'up']);

    const seg = lab.spawn('server', ['node', SEGMENT_SERVER, '0.0.0.0', String(APP_PORT), String(seconds + 10)]);
    await waitForLine(seg, /^listening/, 10_000);
    const agent = lab.spawn('server', ['node', CLI, 'watch', '--listen', `${agentAddr}:${AGENT_PORT}`, '--interval', '1s', '--port', String(APP_PORT)]);
    await waitForLine(agent, /"msg":"watching"/, 15_000);
    relayServer = await relay({ host: agentAddr, port: AGENT_PORT }, AGENT_PORT);
    const loopPort = (relayServer.address() as net.AddressInfo).port;

    // Two players: 4 s segments at 4 Mbit/s. The healthy one fetches and waits
    // like a player with a full buffer; the other one's decoder stalls 6 s in
    // every segment with a 256 KiB receive buffer: its window closes.
    const segBytes = 2_000_000;
    const healthy = Array.from({ length: 200 }, () => ({ bytes: segBytes, thinkSeconds: 3, truth: 'network' }));
    const stalling = Array.from({ length: 200 }, () => ({ bytes: segBytes, stallAfter: 131072, stallSeconds: 6, truth: 'rwnd' }));
    const client = (plan: object[], rcvbuf?: number) =>
      lab.spawn('client', [
        'python3', PEERS, 'client', '--host', lab.server.address, '--port', String(APP_PORT), '--plan', JSON.stringify(plan), '--limit', String(seconds),
        ...(rcvbuf !== undefined ? ['--rcvbuf', String(rcvbuf)] : []),
      ]);
    const remoteOf = async (c: ReturnType<typeof client>): Promise<string> => (JSON.parse(await waitForLine(c, /"connected"/, 10_000)) as { local: string }).local;
    const healthyRemote = await remoteOf(client(healthy));
    const stallingRemote = await remoteOf(client(stalling, 262144));
    const names = new Map([
      [healthyRemote, 'healthy player '],
      [stallingRemote, 'stalling player'],
    ]);
    say(`segment server ${lab.server.address}:${APP_PORT} (server namespace ${lab.server.ns})`);
    say(`clients: ${healthyRemote} healthy player, ${stallingRemote} player whose decoder stalls (256 KiB receive buffer)`);
    say(`agent (tcp-chronograph watch, 1 s interval) — from this host:`);
    say(`  http://127.0.0.1:${loopPort}/metrics   http://127.0.0.1:${loopPort}/api/connections?sort=rwnd_share   (relay on host loopback)`);
    say(`  http://${agentAddr}:${AGENT_PORT}/metrics   (veth ${hostIf} into the server namespace)`);
    say(`  or: ip netns exec ${lab.server.ns} curl -s http://${agentAddr}:${AGENT_PORT}/api/connections\n`);

    const t0 = Date.now();
    const streak = new Map<string, number>();
    let diagnosed = false;
    while (!stopping) {
      await sleep(1000);
      let body: { connections: ApiConnection[] };
      try {
        const r = await fetch(`http://${agentAddr}:${AGENT_PORT}/api/connections?sort=rwnd_share&limit=10`);
        body = (await r.json()) as { connections: ApiConnection[] };
      } catch {
        continue;
      }
      const row: string[] = [];
      for (const c of body.connections) {
        const v = verdictOf(c.lastInterval);
        row.push(`${names.get(c.remote) ?? c.remote}: ${v.padEnd(7)}`);
        streak.set(c.remote, v === 'rwnd' ? (streak.get(c.remote) ?? 0) + 1 : 0);
      }
      say(`+${String(Math.round((Date.now() - t0) / 1000)).padStart(3)} s  last second: ${row.join('   ')}`);
      const stalled = body.connections.find((c) => (streak.get(c.remote) ?? 0) >= 2);
      if (stalled !== undefined && !diagnosed) {
        diagnosed = true;
        const li = stalled.lastInterval;
        say(`\n>>> ${stalled.remote} → ${stalled.local} (${names.get(stalled.remote)?.trim() ?? 'client'}) is RECEIVE-WINDOW-STALLED`);
        say(`    in the last ${li.seconds.toFixed(1)} s the server had data to send for ${li.busySeconds.toFixed(2)} s and was blocked by the client's`);
        say(`    receive window for ${li.rwndLimitedSeconds.toFixed(2)} s (rwnd-limited ${(100 * stalled.rwndShare).toFixed(0)} % of busy time since it connected;`);
        say(`    the window it advertises now: ${stalled.peerRwndBytes ?? '?'} bytes). Why: the client is not reading — its player buffer is`);
        say(`    full or its decoder is stalled — so neither the server, its send buffer nor the network can help.`);
        const other = body.connections.find((c) => c.remote !== stalled.remote);
        if (other !== undefined) say(`    The other connection (${other.remote}) is ${verdictOf(other.lastInterval)}-limited over the last second: nothing wrong with the server or the path.`);
        say(`    See http://127.0.0.1:${loopPort}/api/connections?sort=rwnd_share and /metrics (tcp_chrono_connection_rwnd_limited_seconds_total).`);
        say(`    Ctrl-C to stop and clean up (or wait ${seconds} s).\n`);
      }
    }
  } catch (e) {
    say(`demo failed: ${e instanceof Error ? e.message : String(e)}`);
    await stop('error');
  }
}

function execIp(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => execFile('ip', args, { timeout: 10_000 }, (err) => (err ? reject(err) : resolve())));
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
