// The capabilities deploy/ grants `watch --netns all` are each needed, and
// enough: the agent runs with exactly the set of deploy/tcp-chronograph.service
// (a non-root user with ambient capabilities, as DynamicUser= gives it) and of
// deploy/daemonset.yaml (root with only those in its bounding set, as a
// container with `drop: [ALL]` and three added), and with each one missing.
// The target: a server and its client in a network namespace of their own
// (no /run/netns name: found through /proc/PID/ns/net only), running as
// another UID, with 1000 bytes acknowledged.
//
// Nothing here waits a fixed time: a check that something did not happen
// waits for the agent's own counters to say that it looked (polls done, an
// owner scan finished), and a start that fails is read once the child's
// output is closed ('close'), not at 'exit' (a child's last stderr bytes may
// be read after its 'exit' event). Bounds are long (a loaded machine) and
// cost nothing when things go well.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, stopChild, waitForLine } from '../../lab/lab.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { DAEMONSET, docsOf, read, type Obj } from './files.js';
import { unitCapabilities } from './unit.js';

const TARGET_UID = 4242;
const AGENT_UID = 65534;
/** Bound on the agent's start and on each awaited condition (a loaded CI machine). */
const WAIT_MS = 45_000;
const TEST_MS = 2 * WAIT_MS + 10_000;

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const root = process.geteuid?.() === 0;
// Debian's python3: the target runs as another user, who may not read a python under /root.
const PYTHON = '/usr/bin/python3';
const tools = ['setpriv', 'unshare', 'ip', PYTHON].every(have);

/** The DaemonSet agent's added capabilities, as setpriv names them. */
function daemonSetCapabilities(): string[] {
  const ds = docsOf(read(DAEMONSET), DAEMONSET).find((d) => d.kind === 'DaemonSet')!;
  const agent = (ds.spec.template.spec.containers as Obj[]).find((c) => c.name === 'tcp-chronograph')!;
  return (agent.securityContext.capabilities.add as string[]).map((c) => c.toLowerCase()).sort();
}

interface Run {
  child: ChildProcess;
  stderr: () => string;
  port?: number;
  /** The exit code once the child has exited and its stdout and stderr are closed. */
  closed: Promise<number | null>;
}

const runs = new Set<ChildProcess>();

/** The agent under setpriv: `uid` with exactly `caps` (ambient for a non-root user; bounding for root). */
async function agent(uid: number, caps: string[]): Promise<Run> {
  const set = ['-all', ...caps.map((c) => `+${c}`)].join(',');
  const ids = uid === 0 ? [] : [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', `--inh-caps=${set}`, `--ambient-caps=${set}`];
  const child = spawn(
    'setpriv',
    [...ids, `--bounding-set=${set}`, '--no-new-privs', process.execPath, CLI, 'watch', '--netns', 'all', '--interval', '250ms', '--listen', '127.0.0.1:0', '--log-format', 'json'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  runs.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const run: Run = { child, stderr: () => err, closed };
  try {
    const line = await waitForLine(child, /"msg":"watching"/, WAIT_MS);
    run.port = Number(/"listen":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(line)![1]);
  } catch {
    // exited before listening: the caller looks at stderr
  }
  return run;
}

async function metrics(run: Run): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${run.port!}/metrics`);
  return res.text();
}

/** The value of an unlabelled series in a scrape (undefined: not there). */
function valueOf(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m === null ? undefined : Number(m[1]);
}

/** The first scrape in which the agent's counter `name` has reached `atLeast`. */
function scrapeOnce(run: Run, name: string, atLeast: number): Promise<string> {
  return eventually(async () => {
    const text = await metrics(run);
    return (valueOf(text, name) ?? 0) >= atLeast ? text : undefined;
  }, WAIT_MS);
}

describe.skipIf(!root || !tools)('watch --netns all with the capabilities of deploy/ (root; setpriv, unshare)', () => {
  let target: ChildProcess;
  let netns = '';
  const caps = daemonSetCapabilities();

  beforeAll(async () => {
    ensureBuilt();
    // A namespace of its own, lo up, then the server and client as TARGET_UID.
    const py = [
      'import socket, sys, time',
      's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      "s.bind(('127.0.0.1', 5998)); s.listen()",
      "c = socket.create_connection(('127.0.0.1', 5998)); a, _ = s.accept()",
      "c.sendall(b'x' * 1000); print('ready', flush=True); time.sleep(600)",
    ].join('\n');
    target = spawn('unshare', ['-n', 'sh', '-c', `ip link set lo up && exec setpriv --reuid=${TARGET_UID} --regid=${TARGET_UID} --clear-groups ${PYTHON} -c "$0"`, py], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await waitForLine(target, /^ready$/, WAIT_MS);
    netns = `inode:${/\[(\d+)\]/.exec(readlinkSync(`/proc/${target.pid!}/ns/net`))![1]!}`;
  }, TEST_MS);

  afterAll(async () => {
    await Promise.all([...runs].map((c) => stopChild(c)));
    if (target !== undefined) await stopChild(target);
  });

  it('the unit and the DaemonSet grant the same three', () => {
    expect(caps).toEqual(['dac_read_search', 'sys_admin', 'sys_ptrace']);
    for (const line of ['AmbientCapabilities', 'CapabilityBoundingSet'] as const) {
      expect(unitCapabilities(line).map((c) => c.replace(/^cap_/, '')), line).toEqual(caps);
    }
  });

  // The per-connection series of the target's connection, with its owner labels.
  const ownedBy = (text: string): string[] =>
    text.split('\n').filter((l) => l.startsWith('tcp_chrono_connection_bytes_acked_total{') && l.includes(`netns="${netns}"`) && l.includes('remote="127.0.0.1:5998"'));

  for (const [who, uid] of [
    ['the unit: a non-root user with ambient capabilities', AGENT_UID],
    ['the DaemonSet: root with a bounding set of three', 0],
  ] as const) {
    describe(who, () => {
      it('all three: the namespace is found, its connection counted and owned', async () => {
        const run = await agent(uid, caps);
        expect(run.port, run.stderr()).toBeDefined();
        // Owners are looked up in the background: the series may come first without them.
        const line = await eventually(async () => ownedBy(await metrics(run)).find((l) => l.endsWith(' 1001') && l.includes('comm="python3"')), WAIT_MS);
        expect(line).toMatch(/pid="\d+"/);
        await stopChild(run.child);
      }, TEST_MS);

      it('without SYS_ADMIN it does not start (setns)', async () => {
        const run = await agent(
          uid,
          caps.filter((c) => c !== 'sys_admin'),
        );
        // 'close', not 'exit': the sentence is read to its end.
        const code = await run.closed;
        expect(code).not.toBe(0);
        expect(run.stderr()).toMatch(/setns needs CAP_SYS_ADMIN/);
      }, TEST_MS);

      it('without SYS_PTRACE the namespace of another user\'s process is not found', async () => {
        const run = await agent(
          uid,
          caps.filter((c) => c !== 'sys_ptrace'),
        );
        expect(run.port, run.stderr()).toBeDefined();
        // Namespaces are found again before every poll, and the target's
        // existed before the agent started: two polls have looked twice.
        const text = await scrapeOnce(run, 'tcp_chrono_agent_polls_total', 2);
        expect(text).toMatch(/^tcp_chrono_agent_namespaces [1-9]/m);
        expect(text).not.toContain(`netns="${netns}"`);
        await stopChild(run.child);
      }, TEST_MS);

      it('without DAC_READ_SEARCH the connection is counted but has no owner', async () => {
        const run = await agent(
          uid,
          caps.filter((c) => c !== 'dac_read_search'),
        );
        expect(run.port, run.stderr()).toBeDefined();
        await eventually(async () => ownedBy(await metrics(run)).find((l) => l.endsWith(' 1001')), WAIT_MS);
        // The connection existed at the first poll, so the first owner scan
        // (started right after it) looked for it: once a scan has finished,
        // an owner it could find is on the series of the next scrape.
        await scrapeOnce(run, 'tcp_chrono_agent_owner_scans_total', 1);
        const lines = ownedBy(await metrics(run));
        expect(lines.length).toBeGreaterThan(0);
        for (const l of lines) expect(l).toContain('pid="",comm=""');
        await stopChild(run.child);
      }, TEST_MS);
    });
  }
});
