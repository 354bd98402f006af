// Bad input from people: command lines and environment values that must fail
// with exit 2 (usage) or 1 (runtime) and one sentence on stderr that names
// the problem and the fix, never a stack trace. Runs the built CLI; the
// privilege cases run it as nobody with no capabilities (setpriv), since the
// tests run as root (proxy, top and diagnose run as root; they refuse it only
// when asked with --refuse-root, which has cases of its own).
// An old kernel: attach runs under a seccomp filter that makes pidfd_open and
// pidfd_getfd answer ENOSYS, as Linux < 5.6 does (test/helpers/nosys.c). A
// kernel too old for the chronographs themselves (4.10: a shorter tcp_info)
// cannot be imitated that way; that sentence is tested where it is built.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from '../helpers/cli.js';

const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'];

let dir = '';
let busyPort = 0;
let closedPort = 0;
let busy: net.Server;
let sleeper: ChildProcess;
let nosys = '';

interface Case {
  name: string;
  args: (() => string[]) | string[];
  env?: Record<string, string>;
  nobody?: boolean;
  /** Under test/helpers/nosys.c: pidfd_open/pidfd_getfd fail with ENOSYS, as on Linux < 5.6. */
  oldKernel?: boolean;
  code: 1 | 2;
  /** What the sentence must say (the problem, and where there is one, the fix). */
  says: RegExp;
}

const f = (name: string): string => join(dir, name);

const CASES: Case[] = [
  // usage: flags and commands
  { name: 'unknown command', args: ['nosuch'], code: 2, says: /unknown command "nosuch"; commands: watch, trace, proxy/ },
  { name: 'unknown flag', args: ['--bogus'], code: 2, says: /unknown flag --bogus \(see `tcp-chronograph watch --help`\)/ },
  { name: 'unknown flag of a command', args: ['top', '--upstream', 'x'], code: 2, says: /unknown flag --upstream.*top --help/ },
  { name: 'stray argument', args: ['watch', 'extra'], code: 2, says: /unexpected argument "extra"/ },
  { name: 'flag without its value', args: ['watch', '--interval'], code: 2, says: /--interval needs a value, e\.g\. --interval 1s/ },
  { name: 'flag given twice', args: ['watch', '--interval', '1s', '--interval', '2s'], code: 2, says: /--interval given twice; give it once/ },
  { name: 'negative interval', args: ['watch', '--interval', '-1s'], code: 2, says: /--interval "-1s": expected a duration like 1s/ },
  { name: 'zero interval', args: ['watch', '--interval', '0'], code: 2, says: /must be from 50ms to 1h/ },
  { name: 'port out of range', args: ['watch', '--port', '70000'], code: 2, says: /--port "70000": expected a port \(1-65535\)/ },
  { name: 'port not a number', args: ['diagnose', '--port', 'http'], code: 2, says: /--port "http": expected a port/ },
  { name: 'reversed port range', args: ['top', '--port', '9000-8000', '--once'], code: 2, says: /range like 8000-8100/ },
  { name: 'bad CIDR', args: ['watch', '--remote-cidr', '10.0.0.0/33'], code: 2, says: /not an address prefix like 10\.0\.0\.0\/8/ },
  { name: 'CIDR not an address', args: ['watch', '--remote-cidr', 'banana'], code: 2, says: /not an address prefix/ },
  { name: 'listen without port', args: ['watch', '--listen', '127.0.0.1'], code: 2, says: /expected host:port, e\.g\. 127\.0\.0\.1:9465/ },
  { name: 'unknown state', args: ['watch', '--state', 'listen'], code: 2, says: /--state "listen": expected one of established/ },
  { name: 'negative count', args: ['watch', '--max-connections', '-5'], code: 2, says: /expected a whole number from 0 to 100000/ },
  { name: 'bad choice', args: ['watch', '--owners', 'maybe'], code: 2, says: /expected one of on, off/ },
  { name: 'proxy without --listen', args: ['proxy'], code: 2, says: /--listen is required, e\.g\. --listen :8080/ },
  { name: 'proxy without --upstream', args: ['proxy', '--listen', '127.0.0.1:0'], code: 2, says: /--upstream is required, e\.g\. --upstream 127\.0\.0\.1:8081/ },
  { name: 'upstream without port', args: ['proxy', '--listen', '127.0.0.1:0', '--upstream', 'backend'], code: 2, says: /expected host:port/ },
  { name: 'buffer too small', args: ['proxy', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1', '--buffer-size', '1'], code: 2, says: /must be from 4k to 64m/ },
  { name: 'bad route', args: ['proxy', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1', '--route', 'bad'], code: 2, says: /expected NAME=PATH_PREFIX/ },
  { name: 'attach without --pid', args: ['attach'], code: 2, says: /--pid is required/ },
  { name: 'pid not a number', args: ['attach', '--pid', 'nginx'], code: 2, says: /--pid "nginx": expected a whole number/ },
  { name: 'bad sort', args: ['top', '--sort', 'nope', '--once'], code: 2, says: /expected one of stall, rate/ },
  { name: '--from not a URL', args: ['top', '--from', 'localhost', '--once'], code: 2, says: /expected a URL like http:\/\/127\.0\.0\.1:9465/ },
  { name: '--from not http', args: ['diagnose', '--from', 'ftp://x'], code: 2, says: /expected an http:\/\/ or https:\/\/ URL/ },
  { name: 'diagnose for zero', args: ['diagnose', '--for', '0s'], code: 2, says: /must be from 1s to 24h/ },
  { name: 'bad redact policy', args: ['watch', '--redact', 'everything'], code: 2, says: /expected remote, remote=prefix\/24/ },
  { name: 'redact prefix too long', args: ['watch', '--redact', 'remote=prefix/40'], code: 2, says: /IPv4 prefix length must be from 0 to 32/ },
  { name: 'key file without hashing', args: () => ['watch', '--redact', 'remote', '--redact-key-file', f('key')], code: 2, says: /only used with --redact remote=hash/ },
  { name: 'missing token file', args: () => ['watch', '--auth-token-file', f('nope')], code: 2, says: /cannot read the token file: no such file; give a readable file/ },
  { name: 'short token', args: () => ['watch', '--auth-token-file', f('short-token')], code: 2, says: /at least 16 characters/ },
  { name: 'certificate is a directory', args: () => ['watch', '--tls-cert', dir, '--tls-key', f('key')], code: 2, says: /cannot read the certificate: it is a directory/ },
  { name: 'certificate without key', args: () => ['watch', '--tls-cert', f('key')], code: 2, says: /--tls-cert and --tls-key go together/ },
  { name: 'certificate not PEM', args: () => ['watch', '--tls-cert', f('key'), '--tls-key', f('key')], code: 2, says: /not a PEM certificate and private key/ },
  // environment values
  { name: 'env: watch interval', args: ['watch'], env: { TCP_CHRONOGRAPH_INTERVAL: 'abc' }, code: 2, says: /TCP_CHRONOGRAPH_INTERVAL "abc": expected a duration/ },
  { name: 'env: default command port', args: [], env: { TCP_CHRONOGRAPH_PORT: '99999' }, code: 2, says: /TCP_CHRONOGRAPH_PORT "99999"/ },
  { name: 'env: log format', args: ['diagnose'], env: { TCP_CHRONOGRAPH_LOG_FORMAT: 'xml' }, code: 2, says: /TCP_CHRONOGRAPH_LOG_FORMAT "xml": expected one of human, json, auto/ },
  { name: 'env: proxy sample', args: ['proxy', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1'], env: { TCP_CHRONOGRAPH_PROXY_SAMPLE: '-1' }, code: 2, says: /TCP_CHRONOGRAPH_PROXY_SAMPLE "-1"/ },
  { name: 'env: attach records', args: ['attach', '--pid', '1'], env: { TCP_CHRONOGRAPH_ATTACH_RECORDS: 'all' }, code: 2, says: /TCP_CHRONOGRAPH_ATTACH_RECORDS "all": expected one of sched\+ack, ack/ },
  { name: 'env: top redact', args: ['top', '--once'], env: { TCP_CHRONOGRAPH_TOP_REDACT: 'yes' }, code: 2, says: /TCP_CHRONOGRAPH_TOP_REDACT "yes"/ },
  { name: 'env: diagnose duration', args: ['diagnose'], env: { TCP_CHRONOGRAPH_DIAGNOSE_FOR: 'forever' }, code: 2, says: /TCP_CHRONOGRAPH_DIAGNOSE_FOR "forever"/ },
  { name: 'env: refuse-root not a boolean', args: ['top', '--once'], env: { TCP_CHRONOGRAPH_TOP_REFUSE_ROOT: 'maybe' }, code: 2, says: /TCP_CHRONOGRAPH_TOP_REFUSE_ROOT "maybe": expected true or false/ },
  // root where the user asked for the refusal: refused, with the fix
  { name: 'root: proxy --refuse-root', args: ['proxy', '--refuse-root', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1'], code: 2, says: /proxy --refuse-root: refusing to run as root \(euid 0\); run it as an unprivileged user, or leave out --refuse-root/ },
  { name: 'root: top --refuse-root', args: ['top', '--refuse-root', '--once'], code: 2, says: /top --refuse-root: refusing to run as root \(euid 0\)/ },
  { name: 'root: diagnose, TCP_CHRONOGRAPH_DIAGNOSE_REFUSE_ROOT=1', args: ['diagnose', '--from', 'http://127.0.0.1:1'], env: { TCP_CHRONOGRAPH_DIAGNOSE_REFUSE_ROOT: '1' }, code: 2, says: /diagnose --refuse-root: refusing to run as root/ },
  // runtime: the world refuses
  { name: 'watch port in use', args: () => ['watch', '--listen', `127.0.0.1:${busyPort}`], code: 1, says: /cannot listen on 127\.0\.0\.1:\d+: the address is in use; choose another with --listen/ },
  { name: 'proxy port in use', args: () => ['proxy', '--listen', `127.0.0.1:${busyPort}`, '--upstream', '127.0.0.1:1'], code: 1, says: /the address is in use; choose another with --listen/ },
  { name: 'no such local address', args: ['watch', '--listen', '192.0.2.1:9465'], code: 1, says: /no such local address; choose another with --listen/ },
  { name: 'events file in a missing directory', args: ['proxy', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1', '--metrics-listen', '127.0.0.1:0', '--events', '/nonexistent/dir/x.jsonl'], code: 1, says: /cannot open --events \/nonexistent\/dir\/x\.jsonl: no such directory/ },
  { name: 'events file is a directory', args: ['proxy', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1', '--metrics-listen', '127.0.0.1:0', '--events', '/tmp'], code: 1, says: /cannot open --events \/tmp: it is a directory/ },
  { name: 'no such process', args: ['attach', '--pid', '4000000'], code: 1, says: /no process with pid 4000000/ },
  { name: '--from refused', args: () => ['top', '--from', `http://127.0.0.1:${closedPort}`, '--once'], code: 1, says: /connection refused; is the agent running there\? check --from/ },
  // runtime: missing privileges for the chosen mode
  { name: 'nobody: unreadable token file', nobody: true, args: () => ['watch', '--auth-token-file', f('secret-token')], code: 2, says: /cannot read the token file: permission denied/ },
  { name: 'nobody: privileged port', nobody: true, args: ['watch', '--listen', '127.0.0.1:80'], code: 1, says: /permission denied \(ports below 1024 need CAP_NET_BIND_SERVICE\)/ },
  { name: 'nobody: trace without CAP_BPF', nobody: true, args: ['trace', '--listen', '127.0.0.1:0'], code: 1, says: /needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON/ },
  { name: 'trace: chunks', args: ['trace', '--chunks', 'sometimes'], code: 2, says: /--chunks "sometimes": expected response, write or idle=DURATION/ },
  { name: 'trace: too many ports', args: ['trace', '--port', '1,2,3,4,5,6,7,8,9'], code: 2, says: /--port: at most 8 ports or ranges/ },
  { name: 'trace: no such cgroup', args: ['trace', '--cgroup', '/nonexistent/cgroup'], code: 1, says: /--cgroup \/nonexistent\/cgroup does not exist; give a directory of the cgroup-v2 hierarchy/ },
  { name: 'nobody: attach without CAP_SYS_PTRACE', nobody: true, args: () => ['attach', '--pid', String(sleeper.pid)], code: 1, says: /attach needs CAP_SYS_PTRACE over the target/ },
  // runtime: a kernel too old for the mode (the syscall answers ENOSYS, as it does there)
  { name: 'old kernel: attach without pidfd_getfd', oldKernel: true, args: () => ['attach', '--pid', String(sleeper.pid)], code: 1, says: /this kernel has no pidfd_getfd\(\): attach needs Linux 5\.6 or later \(use `tcp-chronograph proxy` or `watch` instead\)$/ },
  { name: 'nobody: events file not writable', nobody: true, args: () => ['proxy', '--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:1', '--metrics-listen', '127.0.0.1:0', '--events', f('ro/x.jsonl')], code: 1, says: /permission denied/ },
];

beforeAll(async () => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'tcpchrono-bad-'));
  writeFileSync(f('key'), 'not a pem key, but long enough to be one\n');
  writeFileSync(f('short-token'), 'short\n');
  writeFileSync(f('secret-token'), 'a-token-nobody-may-read-0123456789\n');
  chmodSync(f('secret-token'), 0o600);
  mkdirSync(f('ro'), { mode: 0o755 });
  chmodSync(dir, 0o755);
  busy = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => busy.once('listening', r));
  busyPort = (busy.address() as net.AddressInfo).port;
  const probe = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => probe.once('listening', r));
  closedPort = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));
  sleeper = spawn('sleep', ['120'], { stdio: 'ignore' });
  nosys = f('nosys');
  execFileSync('cc', ['-O2', '-o', nosys, fileURLToPath(new URL('../helpers/nosys.c', import.meta.url))]);
});

afterAll(() => {
  busy?.close();
  sleeper?.kill();
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

describe('bad input from people: exit 2 (usage) or 1 (runtime), one sentence, no stack trace', () => {
  it('has at least 30 cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(30);
  });

  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const args = typeof c.args === 'function' ? c.args() : c.args;
    // Only the case's own variables: none inherited from the test's environment.
    const env: Record<string, string> = { TCP_CHRONOGRAPH_LOG_FORMAT: 'json', ...c.env };
    const prefix = c.nobody === true ? NOBODY : c.oldKernel === true ? [nosys] : undefined;
    const r = runCli(args, { env, ...(prefix !== undefined && { prefix }), timeoutMs: 15_000 });
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: c.code });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^tcp-chronograph: \S/);
    expect(lines[0]).toMatch(c.says);
    expect(r.stderr).not.toMatch(/\n\s+at |Error:|node:internal/);
  });
});
