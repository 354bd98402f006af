// docs/reference.md cannot drift (issue #13): it is regenerated in memory by
// scripts/reference.mjs (from dist/, built before the tests) and compared with
// the checked-in file; the hand-kept parts of the script (path meanings, the
// paths modes write literally) are checked against the sources; and a real
// `watch` is scraped: every metric it exposes, and every path its 404 answer
// names, must be in the reference.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script without declarations
import * as reference from '../../scripts/reference.mjs';
import { CLI, ensureBuilt, ROOT } from '../helpers/cli.js';
import { stopChild, waitForLine } from '../../lab/lab.js';

interface Mode {
  name: string;
  paths: string[];
  extraPaths: string[];
}
const ref = reference as {
  generateReference(): Promise<string>;
  modes(): Promise<Mode[]>;
  metricList(): Promise<{ name: string; modes: { mode: string; variant?: string }[] }[]>;
  ENDPOINTS: Record<string, string>;
  OWN_PATHS: Record<string, string[]>;
  RUNTIME_PATHS: string[];
};

const checkedIn = (): string => readFileSync(join(ROOT, 'docs/reference.md'), 'utf8');

beforeAll(() => ensureBuilt());

describe('docs/reference.md', () => {
  it('is what scripts/reference.mjs generates from the code', async () => {
    const generated = await ref.generateReference();
    expect(generated === checkedIn(), 'docs/reference.md is stale: run npm run reference').toBe(true);
  });

  it('gives a meaning to every path a mode serves', async () => {
    for (const m of await ref.modes()) {
      for (const p of m.extraPaths) expect(Object.hasOwn(ref.ENDPOINTS, p), `${m.name} serves ${p}: add its meaning to ENDPOINTS in scripts/reference.mjs`).toBe(true);
    }
  });

  it('has the paths each mode writes in its ModeSpec, and the runtime its own', () => {
    for (const [mode, own] of Object.entries(ref.OWN_PATHS)) {
      const src = readFileSync(join(ROOT, `agent/cli/${mode}.ts`), 'utf8');
      const spec = /^\s*paths: (.*),$/m.exec(src);
      expect(spec, `agent/cli/${mode}.ts: no "paths:" line in its ModeSpec`).not.toBeNull();
      const literal = [...spec![1]!.matchAll(/'(\/[^']*)'/g)].map((m) => m[1]);
      expect(literal, `agent/cli/${mode}.ts lists other paths than OWN_PATHS.${mode} in scripts/reference.mjs`).toEqual(own);
    }
    const runtime = readFileSync(join(ROOT, 'agent/cli/runtime.ts'), 'utf8');
    const list = /const paths = \[(.*), \.\.\.spec\.paths\]/.exec(runtime);
    expect(list, 'agent/cli/runtime.ts: the 404 path list moved').not.toBeNull();
    expect([...list![1]!.matchAll(/'(\/[^']*)'/g)].map((m) => m[1])).toEqual(ref.RUNTIME_PATHS);
  });
});

describe('a running watch', () => {
  let child: ChildProcess | undefined;
  let base = '';

  beforeAll(async () => {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    base = `http://127.0.0.1:${port}`;
    child = spawn('node', [CLI, 'watch', '--listen', `127.0.0.1:${port}`, '--log-format', 'json', '--owners', 'off'], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitForLine(child, /"msg":"watching"/, 15_000);
  });

  afterAll(async () => {
    if (child !== undefined) await stopChild(child);
  });

  it('exposes only metrics the reference lists for watch', async () => {
    const body = await (await fetch(`${base}/metrics`)).text();
    const exposed = [...body.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
    expect(exposed.length).toBeGreaterThan(10);
    const doc = checkedIn();
    const listed = new Map((await ref.metricList()).map((m) => [m.name, m]));
    for (const name of exposed) {
      expect(doc.includes(`| \`${name}\` |`), `${name} is exposed by watch but not in docs/reference.md`).toBe(true);
      expect(listed.get(name)?.modes.some((u) => u.mode === 'watch'), `${name} is exposed by watch but the reference does not say so`).toBe(true);
    }
  });

  it('serves the paths the reference gives watch', async () => {
    const res = await fetch(`${base}/no-such-path`);
    expect(res.status).toBe(404);
    const { error } = (await res.json()) as { error: string };
    const named = error.replace(/^not found: try /, '').split(/, | or /);
    const watch = (await ref.modes()).find((m) => m.name === 'watch')!;
    expect([...named].sort()).toEqual([...watch.paths].sort());
  });
});
