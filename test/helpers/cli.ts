// The built CLI (dist/agent/cli/main.js) for the end-to-end tests: rebuilt
// when an agent source is newer, and run to completion for usage checks.
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = join(ROOT, 'dist/agent/cli/main.js');

/** Rebuilds dist/ if any agent source is newer than the built CLI. */
export function ensureBuilt(): void {
  const newest = (dir: string): number =>
    Math.max(
      0,
      ...readdirSync(dir, { withFileTypes: true }).map((e) =>
        e.isDirectory() ? newest(join(dir, e.name)) : e.name.endsWith('.ts') ? statSync(join(dir, e.name)).mtimeMs : 0,
      ),
    );
  let built = 0;
  try {
    built = statSync(CLI).mtimeMs;
  } catch {
    // not built
  }
  if (newest(join(ROOT, 'agent')) > built) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
}

export interface CliResult {
  /** Exit code. */
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** A command that runs node, e.g. ['setpriv', '--reuid=65534', …]. */
  prefix?: string[];
  /** Kills the CLI after this long (default 10 s). */
  timeoutMs?: number;
}

/** Runs `tcp-chronograph <args>` to completion (stdin closed). */
export function runCli(args: string[], opts: RunOptions = {}): CliResult {
  const [cmd, ...rest] = [...(opts.prefix ?? []), 'node', CLI, ...args];
  try {
    const stdout = execFileSync(cmd!, rest, {
      encoding: 'utf8',
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 10_000,
    });
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    const err = e as { status: number; stdout: string; stderr: string };
    return { code: err.status, stdout: err.stdout, stderr: err.stderr };
  }
}
