// Runs a soak script in a private network namespace of its own (root, `ip
// netns`): tens of thousands of loopback sockets stay out of everyone
// else's socket tables (other agents, other tests), and theirs out of this
// run's dumps. The script prints progress on stderr and its figures as one
// stdout line `result {json}`. Bounded: after `timeoutMs` its whole process
// group (the script, the holder, the agent) is killed; the namespace is
// deleted in every case.
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Node with its flags, running `script args…` inside a fresh namespace; resolves with the parsed result line. */
export async function runInNetns(script, args, { timeoutMs, nodeFlags = [] } = {}) {
  const ns = `tcsoak-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
    // detached: its own process group, so one kill reaches everything it started.
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...nodeFlags, fileURLToPath(script), ...args.map(String)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    const killGroup = () => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    process.once('exit', killGroup);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(killGroup, timeoutMs ?? 600_000);
    const [code, signal] = await new Promise((resolve) => child.once('exit', (c, s) => resolve([c, s])));
    clearTimeout(timer);
    killGroup(); // anything the script left behind
    process.removeListener('exit', killGroup);
    const line = out.split('\n').find((l) => l.startsWith('result '));
    if (code !== 0 || line === undefined) {
      throw new Error(`${fileURLToPath(script)} ${signal !== null ? `killed (${signal}${signal === 'SIGKILL' ? ', time limit?' : ''})` : `exited ${code}`}; stdout:\n${out.slice(-2000)}`);
    }
    return JSON.parse(line.slice('result '.length));
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      /* best effort */
    }
  }
}
