// The attach command's refusals and errors, each one sentence with the right
// exit code (1 runtime, 2 usage), and the Go-binary detector on crafted files.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectGo } from '../../agent/attach/golang.js';
import { CLI, ensureBuilt, runCli, type CliResult } from '../helpers/cli.js';
import { Lines, sleep, startTarget, stopAgent, type TargetProc } from './helpers.js';

/** The attach refusals are allowed 20 s each (twice runCli's default). */
const attachCli = (args: string[], prefix: string[] = []): CliResult => runCli(args, { prefix, timeoutMs: 20_000 });

// A C server that looks like a Go binary: it has a .go.buildinfo section.
const FAKE_GO = `
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
__attribute__((section(".go.buildinfo"), used)) static const char buildinfo[32] = "\\xff Go buildinf:\\x08\\x02";
int main(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(0x7f000001);
  bind(s, (struct sockaddr *)&a, sizeof a);
  listen(s, 8);
  socklen_t len = sizeof a;
  getsockname(s, (struct sockaddr *)&a, &len);
  printf("%d\\n", ntohs(a.sin_port));
  fflush(stdout);
  sleep(60);
  return 0;
}
`;

describe('tcp-chronograph attach: errors and refusals', () => {
  let dir: string;
  let target: TargetProc;
  let fakeGo: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'attach-err-'));
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'fakego.c'), FAKE_GO);
    fakeGo = join(dir, 'fakego');
    execFileSync('gcc', ['-O0', '-o', fakeGo, join(dir, 'fakego.c')]);
    target = await startTarget();
  });

  afterAll(() => {
    for (const c of [...children, target?.child]) if (c !== undefined && c.exitCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('usage errors exit 2', () => {
    const noPid = attachCli(['attach']);
    expect(noPid.code).toBe(2);
    expect(noPid.stderr).toMatch(/--pid is required/);
    expect(attachCli(['attach', '--pid', 'abc']).code).toBe(2);
    expect(attachCli(['attach', '--pid', '1', '--records', 'all']).code).toBe(2);
    expect(attachCli(['attach', '--pid', '1', '--bogus']).code).toBe(2);
  });

  it('--help states the risk', () => {
    const h = attachCli(['attach', '--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/RISK/);
    expect(h.stdout).toMatch(/EPOLLERR/);
    expect(h.stdout).toMatch(/CAP_SYS_PTRACE/);
    expect(h.stdout).toMatch(/--force/);
  });

  it('no such pid', () => {
    const r = attachCli(['attach', '--pid', '4194000']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^tcp-chronograph: no process with pid 4194000/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a target without TCP sockets', async () => {
    const sleeper = spawn('sleep', ['30']);
    children.push(sleeper);
    await sleep(50);
    const r = attachCli(['attach', '--pid', String(sleeper.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/has no TCP sockets/);
  });

  it('missing privilege names CAP_SYS_PTRACE (agent run as nobody against a root process)', () => {
    const r = attachCli(['attach', '--pid', String(target.child.pid)], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/permission denied/);
    expect(r.stderr).toMatch(/CAP_SYS_PTRACE/);
    expect(r.stderr).toMatch(/ptrace_scope/);
  });

  it('refuses a Go program unless --force', async () => {
    const go = spawn(fakeGo, [], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(go);
    await new Lines(go).next(/^\d+$/);
    const r = attachCli(['attach', '--pid', String(go.pid)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is a Go program \(ELF section \.go\.buildinfo\)/);
    expect(r.stderr).toMatch(/--force/);

    const forced = spawn('node', [CLI, 'attach', '--pid', String(go.pid), '--force', '--metrics-listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = new Lines(forced);
    const started = JSON.parse(await lines.next(/"msg":"attaching"/)) as { force: boolean; sockets: number };
    expect(started).toMatchObject({ force: true, sockets: 0 });
    expect((await stopAgent({ child: forced, lines, url: '', started })).code).toBe(0);
  });

  it('detects Go binaries by section, by build-info magic, and not Node', () => {
    expect(detectGo(fakeGo)).toEqual({ go: true, reason: 'ELF section .go.buildinfo' });
    expect(detectGo(process.execPath).go).toBe(false);
    const text = join(dir, 'script.sh');
    writeFileSync(text, '#!/bin/sh\necho hi\n');
    expect(detectGo(text)).toEqual({ go: false, reason: 'not an ELF file' });
    // An ELF header without section headers (as after sstrip), build info further in.
    const stripped = Buffer.alloc(8192);
    Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(stripped);
    Buffer.from('\xff Go buildinf:', 'latin1').copy(stripped, 5000);
    writeFileSync(join(dir, 'stripped'), stripped);
    expect(detectGo(join(dir, 'stripped'))).toEqual({ go: true, reason: 'Go build info header in the file' });
    stripped.fill(0, 5000);
    writeFileSync(join(dir, 'stripped2'), stripped);
    expect(detectGo(join(dir, 'stripped2')).go).toBe(false);
  });
});
