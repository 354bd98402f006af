// The package version, read once from package.json (two levels up from the
// source tree, three from dist/).
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function version(): string {
  if (cached !== undefined) return cached;
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'tcp-chronograph' && pkg.version !== undefined) return (cached = pkg.version);
    } catch {
      // not at this depth
    }
  }
  return (cached = 'unknown');
}
