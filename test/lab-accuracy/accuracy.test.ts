// The lab's accuracy report on the CI subset (lab/scenarios.ts, `quick`):
// real namespaces, real delay, the built CLI for watch, proxy, attach and trace
// (attach and trace on the built lab/segment-server.ts as its own process), instrument()
// in this process. Fails when a source classifies fewer than 95 % of the
// chunks or intervals right (an `unknown` verdict counts as not right), or a
// scenario run fails. The full set is `npm run lab:accuracy` (a benchmark).
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, ROOT, SEGMENT_SERVER, TARGET, formatReport, runAccuracy } from '../../lab/accuracy.js';

describe('lab accuracy, CI subset', () => {
  it(`every source classifies at least ${TARGET * 100} % of chunks and intervals right`, async () => {
    if (!existsSync(CLI) || statSync(CLI).mtimeMs < statSync(join(ROOT, 'agent/cli/main.ts')).mtimeMs) {
      execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
    }
    const stale = (built: string, ...sources: string[]): boolean =>
      !existsSync(built) || sources.some((s) => statSync(built).mtimeMs < statSync(join(ROOT, s)).mtimeMs);
    if (stale(SEGMENT_SERVER, 'lab/segment-server.ts', 'lab/server.ts')) {
      execFileSync('npx', ['tsc', '-p', 'lab/tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
    }
    const lines: string[] = [];
    const report = await runAccuracy({ quick: true, log: (l) => lines.push(l) });
    const text = formatReport(report);
    console.log(`${lines.join('\n')}\n${text}`);
    expect(report.runs.filter((r) => r.error !== undefined).map((r) => `${r.scenario}/${r.mode}: ${r.error}`)).toEqual([]);
    for (const s of report.gated) {
      expect(s.n, `${s.source}: nothing scored`).toBeGreaterThan(0);
      expect(s.strict, `${s.source}: ${s.correct}/${s.n} (${s.unknown} unknown)`).toBeGreaterThanOrEqual(TARGET);
    }
    expect(report.seconds).toBeLessThan(210);
  }, 270_000);
});
