// deploy/Containerfile, checked without building it. hadolint is not on npm
// and dockerfilelint (npm) has had no release since 2020 and pins old
// dependencies (yargs 13, chalk 2, js-yaml 3): unmaintained, and one more
// thing for `npm audit` to find. So this is a structural lint of our own: the
// usual rules (no ADD, pinned tags, apt lists removed in the same layer, no
// recommends, exec-form ENTRYPOINT/CMD, a non-root final USER, WORKDIR rather
// than cd) and what this image must hold to run: the files the agent loads,
// where it looks for them, and nothing of the build.
import { existsSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../helpers/cli.js';
import { DAEMONSET, ROOT, docsOf, read, withTrace, type Obj } from './files.js';

interface Instruction {
  op: string;
  args: string;
  line: number;
}

const KNOWN = new Set(['FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL']);

/** Instructions, continuation lines joined, comments dropped. */
function parse(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (buf === '' && (line === '' || line.startsWith('#'))) return;
    if (buf !== '' && line.startsWith('#')) return; // a comment inside a continued instruction
    if (buf === '') start = i + 1;
    if (line.endsWith('\\')) {
      buf += line.slice(0, -1) + ' ';
      return;
    }
    buf += line;
    const m = /^(\S+)\s*(.*)$/s.exec(buf)!;
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start });
    buf = '';
  });
  if (buf !== '') throw new Error('the file ends inside a continued instruction');
  return out;
}

/** --flag=value options and the rest of a COPY. */
function copyArgs(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const paths = words.filter((w) => !w.startsWith('--'));
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
  return { from, sources: paths.slice(0, -1), dest: paths[paths.length - 1]! };
}

describe('deploy/Containerfile', () => {
  const text = read('deploy/Containerfile');
  const all = parse(text);
  const froms = all.map((ins, i) => ({ ins, i })).filter((x) => x.ins.op === 'FROM');
  const stage = (n: number): Instruction[] => all.slice(froms[n]!.i, froms[n + 1]?.i ?? all.length);
  const build = stage(0);
  const runtime = stage(1);
  const runs = (s: Instruction[]): string => s.filter((x) => x.op === 'RUN').map((x) => x.args).join('\n');
  const workdir = (s: Instruction[]): string => s.filter((x) => x.op === 'WORKDIR').at(-1)!.args;

  beforeAll(() => ensureBuilt());

  it('parses: known instructions only', () => {
    expect(all.length).toBeGreaterThan(10);
    for (const x of all) expect(KNOWN.has(x.op), `line ${x.line}: ${x.op}`).toBe(true);
  });

  it('two stages on one Node 20 Debian 12 base; a tag, never latest', () => {
    const arg = all.find((x) => x.op === 'ARG' && x.args.startsWith('NODE_IMAGE='))!;
    expect(arg.args).toBe('NODE_IMAGE=node:20-bookworm-slim');
    expect(all.indexOf(arg)).toBeLessThan(froms[0]!.i);
    expect(froms.map((f) => f.ins.args)).toEqual(['${NODE_IMAGE} AS build', '${NODE_IMAGE}']);
    expect(text).not.toMatch(/:latest\b/);
  });

  it('the usual rules: COPY not ADD, WORKDIR not cd, no pipes, no downloads, apt tidy in the same layer', () => {
    expect(all.filter((x) => x.op === 'ADD')).toEqual([]);
    for (const x of all.filter((y) => y.op === 'RUN')) {
      expect(x.args, `line ${x.line}`).not.toMatch(/(^|&&|;)\s*cd\s/);
      expect(x.args.replace(/\|\|/g, ''), `line ${x.line}: a pipe hides the first command's failure`).not.toMatch(/\|/);
      expect(x.args, `line ${x.line}`).not.toMatch(/\b(curl|wget|sudo)\b/);
      if (x.args.includes('apt-get install')) {
        expect(x.args, `line ${x.line}`).toMatch(/^apt-get update\s*&&/);
        expect(x.args, `line ${x.line}`).toContain('apt-get install -y --no-install-recommends');
        expect(x.args, `line ${x.line}`).toContain('rm -rf /var/lib/apt/lists/*');
      }
    }
  });

  it('the build stage: the addon toolchain (and libbpf for trace), npm ci, then no devDependencies', () => {
    const install = /apt-get install -y --no-install-recommends ([^&]+)/.exec(runs(build))![1]!.trim().split(/\s+/);
    expect(install.sort()).toEqual(['g++', 'libbpf-dev', 'make', 'pkg-config', 'python3']);
    expect(runs(build)).toMatch(/npm ci\b[^&]*&&\s*npm prune --omit=dev/);
    // node-gyp uses the base's own headers: no download.
    expect(build.find((x) => x.op === 'ENV')?.args).toBe('npm_config_nodedir=/usr/local');
  });

  it('the build stage copies what npm ci needs to build the addon and dist/, and those exist', () => {
    const copied = build.filter((x) => x.op === 'COPY').flatMap((x) => copyArgs(x.args).sources);
    for (const s of copied) expect(existsSync(join(ROOT, s)), s).toBe(true);
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'binding.gyp', 'tsconfig.json', 'native/', 'agent/']));
    const gyp = JSON.parse(read('binding.gyp')) as { targets: { sources: string[]; conditions: [string, { sources: string[] }][] }[] };
    const sources = gyp.targets.flatMap((t) => [...t.sources, ...t.conditions.flatMap((c) => c[1].sources ?? [])]);
    for (const s of sources) expect(copied.some((c) => s.startsWith(c)), s).toBe(true);
    const tsconfig = JSON.parse(read('tsconfig.json')) as { include: string[] };
    for (const inc of tsconfig.include) expect(copied.some((c) => inc.startsWith(c)), inc).toBe(true);
  });

  it('the runtime stage holds dist/agent, production node_modules, the addon and the page: nothing else of the build', () => {
    const copies = runtime.filter((x) => x.op === 'COPY').map((x) => copyArgs(x.args));
    const fromBuild = copies.filter((c) => c.from === 'build').flatMap((c) => c.sources);
    expect(fromBuild.sort()).toEqual(['/src/build/Release/tcp_chronograph.node', '/src/dist/agent/', '/src/node_modules/', '/src/package.json']);
    const fromContext = copies.filter((c) => c.from === undefined).flatMap((c) => c.sources);
    expect(fromContext).toEqual(['agent/export/page/']);
    for (const s of fromContext) expect(existsSync(join(ROOT, s, 'index.html')), s).toBe(true);
    // The addon's run-time library, nothing to compile with.
    expect(/apt-get install -y --no-install-recommends ([^&]+)/.exec(runs(runtime))![1]!.trim()).toBe('libbpf1');
    expect(runs(runtime)).not.toMatch(/(^|&&)\s*(npm|npx|make|g\+\+)\s/m);
    // Nor the package managers the base brings: not needed to run the agent.
    expect(runs(runtime)).toMatch(/rm -rf \/usr\/local\/lib\/node_modules \/usr\/local\/bin\/npm \/usr\/local\/bin\/npx/);
  });

  it('the files land where the agent looks for them', () => {
    const wd = workdir(runtime);
    expect(wd).toBe('/opt/tcp-chronograph');
    const dest = (src: string): string => {
      const c = runtime.filter((x) => x.op === 'COPY').map((x) => copyArgs(x.args)).find((y) => y.sources.includes(src))!;
      return posix.resolve(wd, c.dest);
    };
    // agent/native.ts: build/Release/tcp_chronograph.node in dist/agent/ or up to three directories above.
    const distAgent = dest('/src/dist/agent/');
    expect(dest('/src/build/Release/tcp_chronograph.node')).toBe(posix.resolve(distAgent, '../../build/Release'));
    // agent/export/live.ts: ../../../agent/export/page/ from dist/agent/export/.
    expect(dest('agent/export/page/')).toBe(posix.resolve(distAgent, 'export', '../../../agent/export/page'));
    // package.json beside dist/ ("type": "module" for dist/'s .js files).
    expect(dest('/src/package.json')).toBe(wd);
    expect((JSON.parse(read('package.json')) as Obj).type).toBe('module');
    // The entry point, built from the same sources here.
    const entry = JSON.parse(runtime.find((x) => x.op === 'ENTRYPOINT')!.args) as string[];
    expect(entry).toEqual(['node', posix.join(distAgent, 'cli/main.js')]);
    expect(existsSync(join(ROOT, 'dist/agent/cli/main.js'))).toBe(true);
    expect(readFileSync(join(ROOT, 'dist/agent/cli/main.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
    // `tcp-chronograph` on PATH for deploy/kubernetes/sidecar-attach.yaml's script.
    expect(runs(runtime)).toContain(`ln -s ${posix.join(distAgent, 'cli/main.js')} /usr/local/bin/tcp-chronograph`);
    expect(runs(build)).toContain('chmod 0755 dist/agent/cli/main.js');
    expect(read('deploy/kubernetes/sidecar-attach.yaml')).toContain('exec tcp-chronograph attach');
  });

  it('runs as nobody by default, watch by default, exec form; the ports the manifests use', () => {
    const users = all.filter((x) => x.op === 'USER');
    expect(users.at(-1)!.args).toBe('65534:65534');
    expect(all.indexOf(users.at(-1)!)).toBeGreaterThan(froms[1]!.i);
    // The sidecars of the modes that need no privilege run as that same user.
    for (const f of ['deploy/kubernetes/sidecar-watch.yaml', 'deploy/kubernetes/sidecar-proxy.yaml']) {
      const d = docsOf(read(f), f).find((x) => x.kind === 'Deployment')!;
      const agent = (d.spec.template.spec.containers as Obj[]).find((c) => c.name === 'tcp-chronograph')!;
      expect(agent.securityContext.runAsUser, f).toBe(65534);
    }
    expect(JSON.parse(runtime.find((x) => x.op === 'CMD')!.args)).toEqual(['watch']);
    const exposed = runtime.filter((x) => x.op === 'EXPOSE').flatMap((x) => x.args.split(/\s+/).map(Number));
    const ds = docsOf(withTrace(read(DAEMONSET)), DAEMONSET).find((d) => d.kind === 'DaemonSet')!;
    const ports = (ds.spec.template.spec.containers as Obj[]).flatMap((c) => (c.ports as Obj[]).map((p) => p.containerPort as number));
    expect(exposed.sort()).toEqual(ports.sort());
  });

  it('its ignore file keeps the context to what the build copies', () => {
    const ignore = read('deploy/Containerfile.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1));
    const copied = all.filter((x) => x.op === 'COPY' && copyArgs(x.args).from === undefined).flatMap((x) => copyArgs(x.args).sources);
    for (const s of copied) expect(allowed.some((a) => s === a || s.startsWith(a)), s).toBe(true);
    for (const a of allowed) expect(['node_modules', 'dist', 'build'].some((d) => a.startsWith(d)), a).toBe(false);
  });
});
