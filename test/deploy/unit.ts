// deploy/tcp-chronograph.service, parsed: section → key → values (a key may
// be repeated, as systemd allows).
import { read } from './files.js';

export const UNIT = 'deploy/tcp-chronograph.service';

export type Unit = Record<string, Record<string, string[]>>;

export function parseUnit(text: string = read(UNIT)): Unit {
  const out: Unit = {};
  let section = '';
  // systemd joins lines ending in a backslash.
  for (const raw of text.replace(/\\\n/g, ' ').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s !== null) {
      section = s[1]!;
      out[section] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`not a key=value line: ${line}`);
    ((out[section] ??= {})[line.slice(0, eq).trim()] ??= []).push(line.slice(eq + 1).trim());
  }
  return out;
}

/** AmbientCapabilities= or CapabilityBoundingSet=, lower case, sorted. */
export function unitCapabilities(key: 'AmbientCapabilities' | 'CapabilityBoundingSet', unit: Unit = parseUnit()): string[] {
  return (unit.Service?.[key] ?? [])
    .flatMap((v) => v.split(/\s+/))
    .filter((c) => c !== '')
    .map((c) => c.toLowerCase())
    .sort();
}
