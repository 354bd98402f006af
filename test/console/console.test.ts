// End to end, real kernel: top, diagnose and the live page against a
// namespace scenario with a known rwnd-stalled client (a slow reader with a
// 4 KiB receive buffer) and a fast reader over a 20 Mbit/s tbf-shaped path.
// top runs in tmux (keys sent, the pane read back); the page in headless
// Chromium started inside the server namespace.
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, eventually, waitForLine } from '../../lab/lab.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'dist/agent/cli/main.js');
const PEERS = fileURLToPath(new URL('../watch/peers.py', import.meta.url));
// The README's screenshot is refreshed only on request (UPDATE_SCREENSHOT=1): a
// test run must not dirty the tree.
const SCREENSHOT = process.env.UPDATE_SCREENSHOT === '1' ? join(ROOT, 'docs/live-page.png') : join(tmpdir(), `tcp-chronograph-live-page-${process.pid}.png`);

const SLOW_PORT = 5201; // slow reader, tiny receive buffer: rwnd-limited
const FAST_PORT = 5202; // fast reader over the shaped path: network-limited
const AGENT = '127.0.0.1:9481';
// The servers and the top/diagnose that must name them run as one unprivileged user, as a
// person would run them (docs/privileges.md); top in tmux runs as root, as an operator's would.
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'];

function ensureBuilt(): void {
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : e.name.endsWith('.ts') ? statSync(join(dir, e.name)).mtimeMs : 0)));
  let built = 0;
  try {
    built = statSync(CLI).mtimeMs;
  } catch {
    // not built
  }
  if (newest(join(ROOT, 'agent')) > built) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
}

interface PortJson {
  port: string;
  limit: string;
  limitShareOfSending: number;
  rwndLimitedSeconds: number;
  sentence: string;
  worst: { remote: string; limit: string }[];
}
interface ReportJson {
  window: { seconds: number; polls: number };
  ports: PortJson[];
  connections: { remote: string; port: string; limit: string; shares: Record<string, number>; comm: string | null }[];
}

describe('console: top, diagnose and the live page', () => {
  let lab: Lab;
  let slowRemote = '';
  let fastRemote = '';
  const tmux = `tcpchrono-${process.pid}`;
  let tmp = '';

  beforeAll(async () => {
    ensureBuilt();
    tmp = mkdtempSync(join(tmpdir(), 'tcpchrono-console-'));
    lab = await Lab.create({ shaping: { kind: 'tbf', rate: '20mbit', on: 'server' } });
    const s = lab.server;
    const servers = [SLOW_PORT, FAST_PORT].map((port) => lab.spawn(s.ns, [...NOBODY, '/usr/bin/python3', PEERS, 'server', '--port', String(port), '--lifetime', '80']));
    await Promise.all(servers.map((p) => waitForLine(p, /^listening/)));
    const agent = lab.spawn(s.ns, ['node', CLI, 'watch', '--listen', AGENT, '--interval', '500ms', '--port', `${SLOW_PORT}-${FAST_PORT}`]);
    await waitForLine(agent, /"msg":"watching"/);
    const slow = lab.spawn(lab.client.ns, ['python3', PEERS, 'client', '--host', s.address, '--port', String(SLOW_PORT), '--seconds', '75', '--rcvbuf', '4096', '--rate', '20000']);
    const fast = lab.spawn(lab.client.ns, ['python3', PEERS, 'client', '--host', s.address, '--port', String(FAST_PORT), '--seconds', '75']);
    slowRemote = (await waitForLine(slow, /^connected/)).split(' ')[1]!;
    fastRemote = (await waitForLine(fast, /^connected/)).split(' ')[1]!;
  }, 60_000);

  afterAll(async () => {
    await run('tmux', ['-L', tmux, 'kill-server']).catch(() => undefined);
    await lab?.teardown();
    if (tmp !== '') rmSync(tmp, { recursive: true, force: true });
  });

  it('top --once prints one table, the stalled client first with verdict rwnd', async () => {
    const { stdout } = await lab.exec(lab.server.ns, ['env', 'COLUMNS=140', ...NOBODY, 'node', CLI, 'top', '--once', '--interval', '2s', '--port', `${SLOW_PORT}-${FAST_PORT}`]);
    const lines = stdout.trimEnd().split('\n');
    expect(lines[2]).toMatch(/PORT\s+REMOTE\s+PROCESS\s+STATE\s+RATE\s+RTT\s+WINDOW\s+LAST\s+TOTAL\s+LIMIT/);
    const rows = lines.slice(3);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toContain(slowRemote);
    expect(rows[0]).toMatch(/python3\/\d+/);
    expect(rows[0]).toMatch(/ r{5,}.* rwnd$/); // mostly rwnd in the bar, and the verdict
    expect(rows[1]).toContain(fastRemote);
    expect(rows[1]).toMatch(/network$/);
    expect(stdout).not.toContain('\x1b'); // no escapes when stdout is not a terminal
  });

  it('diagnose --for 5s --json names the stalled client and its cause; the text form says it in a sentence', async () => {
    const json = lab.exec(lab.server.ns, [...NOBODY, 'node', CLI, 'diagnose', '--for', '5s', '--json']);
    const text = lab.exec(lab.server.ns, [...NOBODY, 'node', CLI, 'diagnose', '--for', '5s', '--port', String(SLOW_PORT)]);
    const r = JSON.parse((await json).stdout) as ReportJson;
    expect(r.window.seconds).toBeGreaterThanOrEqual(4.5);
    expect(r.window.polls).toBeGreaterThanOrEqual(5);
    const slow = r.ports.find((p) => p.port === String(SLOW_PORT))!;
    expect(slow.limit).toBe('rwnd');
    expect(slow.limitShareOfSending).toBeGreaterThan(0.6);
    expect(slow.worst[0]).toMatchObject({ remote: slowRemote, limit: 'rwnd' });
    const fast = r.ports.find((p) => p.port === String(FAST_PORT))!;
    expect(fast.limit).toBe('network');
    // The worst connection overall is the stalled one, named with its owner.
    expect(r.connections[0]).toMatchObject({ remote: slowRemote, limit: 'rwnd', comm: 'python3' });
    const t = await text;
    expect(t.stdout).toMatch(new RegExp(`^\\d+ % of sending time on :${SLOW_PORT} was limited by the client's receive window; worst: ${slowRemote.replace(/\./g, '\\.')} \\(`, 'm'));
    expect(t.stdout).toContain('the client is not reading');
    expect(t.stdout).not.toContain(fastRemote);
    // Not a terminal: no progress bar, one JSON start line on stderr.
    expect(t.stderr).not.toContain('\r');
    expect(JSON.parse(t.stderr.trim().split('\n')[0]!)).toMatchObject({ msg: 'diagnosing', privileges: { root: false, capabilities: [] } });
  });

  it('top in tmux: stalled first, b sorts by bytes, f filters by port, q quits and restores the terminal', async () => {
    const t = (...args: string[]): Promise<string> => run('tmux', ['-L', tmux, ...args]).then((r) => String(r.stdout));
    // top's exit status goes to a file: tmux 3.3 sometimes leaves an exited
    // pane process unreaped (a zombie) and then never reports its status.
    const statusFile = join(tmp, 'top-status');
    await t('new-session', '-d', '-s', 'top', '-x', '110', '-y', '20', `ip netns exec ${lab.server.ns} sh -c 'node ${CLI} top --interval 500ms --port ${SLOW_PORT}-${FAST_PORT}; echo "exit=$?" > ${statusFile}'`, ';', 'set-option', '-t', 'top', 'remain-on-exit', 'on');
    const pane = (): Promise<string> => t('capture-pane', '-p', '-t', 'top');
    const order = async (): Promise<number[]> => {
      const text = await pane();
      return [text.indexOf(slowRemote), text.indexOf(fastRemote)];
    };
    // Default order: stalled first (bars need two polls).
    const first = await eventually(async () => {
      const text = await pane();
      return /LAST +TOTAL/.test(text) && / rwnd\s*$/m.test(text) && text.includes(fastRemote) ? text : undefined;
    }, 10_000);
    expect(first.indexOf(slowRemote)).toBeLessThan(first.indexOf(fastRemote));
    expect(first).toMatch(/sort stall/);
    expect(await t('display-message', '-p', '-t', 'top', '#{alternate_on}')).toBe('1\n');

    await t('send-keys', '-t', 'top', 'b');
    await eventually(async () => {
      const [s, f] = await order();
      return f >= 0 && f < s && (await pane()).includes('sort bytes') ? true : undefined;
    }, 5_000, 100);

    await t('send-keys', '-t', 'top', 'f', String(FAST_PORT), 'Enter');
    await eventually(async () => {
      const text = await pane();
      return text.includes(`port ${FAST_PORT}`) && text.includes(fastRemote) && !text.includes(slowRemote) ? true : undefined;
    }, 5_000, 100);

    await t('send-keys', '-t', 'top', 'q');
    const status = await eventually(async () => readFileSync(statusFile, 'utf8').trim() || undefined, 5_000, 100);
    // Exited 0, back on the normal screen, which does not hold the table.
    expect(status).toBe('exit=0');
    expect(await t('display-message', '-p', '-t', 'top', '#{alternate_on}')).toBe('0\n');
    expect(await pane()).not.toContain(fastRemote);
  });

  it('the live page shows the stalled connection first and renders the timeline (headless Chromium in the namespace)', async () => {
    // Chromium must run where 127.0.0.1 is the agent's: a wrapper enters the namespace.
    const wrapper = join(tmp, 'chromium-in-netns');
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${lab.server.ns} /usr/bin/chromium "$@"\n`);
    chmodSync(wrapper, 0o755);
    let ctx: BrowserContext | undefined;
    try {
      ctx = await chromium.launchPersistentContext(join(tmp, 'profile'), {
        executablePath: wrapper,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        viewport: { width: 1100, height: 900 },
      });
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        // /api/chunks is 404 in watch mode, on purpose (the page then says so).
        if (m.type() === 'error' && !/status of 404/.test(m.text())) errors.push(m.text());
      });
      const notFound: string[] = [];
      page.on('response', (r) => {
        if (r.status() === 404) notFound.push(new URL(r.url()).pathname);
      });
      await page.goto(`http://${AGENT}/`);
      await page.waitForFunction((remote) => document.querySelector('#worst tbody tr')?.getAttribute('data-remote') === remote, slowRemote, { timeout: 10_000 });
      expect(await page.getAttribute('#worst tbody tr:first-child', 'data-limit')).toBe('rwnd');
      // The timeline has stacked shares for both ports, the slow one mostly rwnd.
      await page.waitForFunction((port) => document.querySelectorAll(`.port-timeline[data-port="${port}"] rect`).length >= 8, String(SLOW_PORT), { timeout: 10_000 });
      const rwndRects = await page.locator(`.port-timeline[data-port="${SLOW_PORT}"] rect.rwnd`).count();
      expect(rwndRects).toBeGreaterThan(2);
      expect(await page.locator(`.port-timeline[data-port="${FAST_PORT}"] rect.network`).count()).toBeGreaterThan(2);
      // watch mode has no chunk records: the page says where to get them.
      await expect.poll(() => page.textContent('#chunks-note')).toMatch(/No per-chunk mode/);
      expect(await page.isVisible('#chunks')).toBe(false);
      // A few seconds of timeline for the picture in the README.
      await page.waitForFunction((port) => document.querySelectorAll(`.port-timeline[data-port="${port}"] rect`).length >= 20, String(SLOW_PORT), { timeout: 15_000 });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
      if (!SCREENSHOT.startsWith(ROOT)) rmSync(SCREENSHOT, { force: true });
      // Readable on a phone: nothing wider than the screen.
      await page.setViewportSize({ width: 390, height: 844 });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      expect(overflow).toBeLessThanOrEqual(0);
      expect(await page.isVisible('#worst tbody tr:first-child td.remote')).toBe(true);
      expect(errors).toEqual([]);
      expect([...new Set(notFound)]).toEqual(['/api/chunks']);
    } finally {
      await ctx?.close();
    }
  });
});
