// What the scripts driving ab-server.mjs share: the server pinned to CPU 0,
// its control port's figures, and curl readers pinned to CPU 1.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { createInterface } from 'node:readline';

const SERVER = new URL('./ab-server.mjs', import.meta.url).pathname;

/**
 * Starts ab-server.mjs and resolves with { child, ports } once it printed its
 * ports. `nodeFlags` go to node, `prefix` runs before it (e.g. stdbuf);
 * `onLine` hears the server's other stdout lines.
 */
export async function startAbServer(variant, write, segment, { nodeFlags = [], prefix = [], onLine } = {}) {
  const child = spawn('taskset', ['-c', '0', ...prefix, process.execPath, ...nodeFlags, SERVER, variant, String(write), String(segment)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ports = await new Promise((resolve, reject) => {
    let found;
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (found === undefined && line.startsWith('{')) resolve((found = JSON.parse(line)));
      else onLine?.(line);
    });
    child.once('exit', (code) => reject(new Error(`ab-server.mjs exited ${code} before printing its ports`)));
  });
  return { child, ports };
}

/** The server's figures: { cpu (seconds, all threads), records }. */
export function serverStats(controlPort) {
  return new Promise((resolve, reject) =>
    http
      .get({ host: '127.0.0.1', port: controlPort, path: '/' }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(JSON.parse(body)));
      })
      .on('error', reject),
  );
}

/** `count` curl readers of `url` (a curl glob); resolves when all are done, rejects if one failed. */
export async function curlReaders(count, url) {
  const procs = Array.from({ length: count }, () => spawn('taskset', ['-c', '1', 'curl', '-s', '--fail', url], { stdio: ['ignore', 'ignore', 'inherit'] }));
  const codes = await Promise.all(procs.map((p) => once(p, 'exit').then(([c]) => c)));
  if (codes.some((c) => c !== 0)) throw new Error(`a reader failed: ${codes}`);
}

export async function stopAbServer(child) {
  child.kill('SIGTERM');
  await once(child, 'exit');
}
