// deploy/tcp-chronograph.service: `systemd-analyze verify` (Debian package
// systemd, in scripts/install-test-deps.sh) accepts it without a word, its
// offline security exposure stays low, and it says what it means: watch
// --netns all as a dynamic non-root user with exactly the three capabilities
// (test/deploy/capabilities.test.ts runs the agent with them), and the
// hardening of deploy/README.md.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { read } from './files.js';
import { UNIT, parseUnit, unitCapabilities } from './unit.js';

const INSTALLED = '/usr/local/bin/tcp-chronograph';

describe('deploy/tcp-chronograph.service', () => {
  const text = read(UNIT);
  const unit = parseUnit(text);
  const svc = unit.Service!;
  const one = (key: string): string => {
    expect(svc[key], key).toHaveLength(1);
    return svc[key]![0]!;
  };
  let dir = '';
  let help = '';

  beforeAll(() => {
    ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'tcp-chronograph-unit-'));
    help = execFileSync('node', [CLI, 'watch', '--help'], { encoding: 'utf8' });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * systemd-analyze verify of `text` as a unit file of that name. verify
   * checks that ExecStart's program exists: the installed path is replaced
   * by this repository's build, run by this node.
   */
  function verify(name: string, body: string): { status: number | null; output: string } {
    const file = join(dir, name);
    writeFileSync(file, body.replaceAll(INSTALLED, `${process.execPath} ${CLI}`));
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8', cwd: dir });
    return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
  }

  it('systemd-analyze verify: no error, no warning', () => {
    expect(text).toContain(`ExecStart=${INSTALLED} watch`);
    expect(verify('tcp-chronograph.service', text)).toEqual({ status: 0, output: '' });
  });

  it('verify speaks up about a misspelt key or value (self-test)', () => {
    const bad = text.replace('ProtectHome=yes', 'ProtectHom=yes').replace('RestrictNamespaces=net', 'RestrictNamespaces=nett');
    const r = verify('tcp-chronograph-bad.service', bad);
    expect(r.output).toMatch(/Unknown key 'ProtectHom'/);
    expect(r.output).toMatch(/nett/);
  });

  it('systemd-analyze security --offline: exposure at most 3.0 of 10', () => {
    const file = join(dir, 'tcp-chronograph.service');
    writeFileSync(file, text.replaceAll(INSTALLED, `${process.execPath} ${CLI}`));
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', file], { encoding: 'utf8', cwd: dir });
    const m = /Overall exposure level for tcp-chronograph\.service: (\d+\.\d+)/.exec(`${r.stdout}${r.stderr}`);
    expect(m, `${r.stdout}${r.stderr}`.slice(-500)).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(3.0);
  });

  it('runs watch --netns all', () => {
    expect(one('ExecStart')).toBe(`${INSTALLED} watch`);
    const env = Object.fromEntries((svc.Environment ?? []).map((e) => e.split('=', 2) as [string, string]));
    expect(env.TCP_CHRONOGRAPH_NETNS).toBe('all');
    for (const name of Object.keys(env)) expect(help, name).toContain(`env ${name}`);
    expect(one('EnvironmentFile')).toBe('-/etc/default/tcp-chronograph');
  });

  it('as a dynamic non-root user with exactly SYS_ADMIN, SYS_PTRACE and DAC_READ_SEARCH', () => {
    expect(one('DynamicUser')).toBe('yes');
    expect(svc.User).toBeUndefined();
    const three = ['cap_dac_read_search', 'cap_sys_admin', 'cap_sys_ptrace'];
    expect(unitCapabilities('AmbientCapabilities', unit)).toEqual(three);
    expect(unitCapabilities('CapabilityBoundingSet', unit)).toEqual(three);
    expect(one('NoNewPrivileges')).toBe('yes');
  });

  it('hardened as deploy/README.md says', () => {
    const expected: Record<string, string> = {
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectKernelLogs: 'yes',
      ProtectControlGroups: 'yes',
      ProtectClock: 'yes',
      ProtectHostname: 'yes',
      RestrictAddressFamilies: 'AF_NETLINK AF_INET AF_INET6 AF_UNIX',
      RestrictNamespaces: 'net',
      RestrictRealtime: 'yes',
      RestrictSUIDSGID: 'yes',
      SystemCallArchitectures: 'native',
      SystemCallFilter: '@system-service',
      SystemCallErrorNumber: 'EPERM',
      LockPersonality: 'yes',
      // V8's JIT: see the unit's comment.
      MemoryDenyWriteExecute: 'no',
      UMask: '0077',
    };
    for (const [k, v] of Object.entries(expected)) expect(one(k), k).toBe(v);
    // What would hide the host from the agent must stay unset.
    for (const k of ['PrivateNetwork', 'PrivateUsers', 'ProtectProc', 'ProcSubset', 'PrivatePIDs']) expect(svc[k], k).toBeUndefined();
    // Five descriptors per namespace: well above the default soft limit.
    expect(Number(one('LimitNOFILE'))).toBeGreaterThanOrEqual(65536);
  });

  it('comments every non-obvious choice', () => {
    for (const k of ['DynamicUser', 'AmbientCapabilities', 'MemoryDenyWriteExecute', 'RestrictAddressFamilies', 'RestrictNamespaces', 'SystemCallFilter', 'LimitNOFILE']) {
      const at = text.indexOf(`\n${k}=`);
      expect(at, k).toBeGreaterThan(0);
      expect(text.slice(0, at).split('\n').at(-1), `${k}: a comment right above it`).toMatch(/^#/);
    }
  });
});
