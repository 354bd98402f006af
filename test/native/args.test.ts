// The shim checks what JavaScript hands it: a wrong argument is a TypeError
// naming it, never a value read as 0 (which would be fd 0, level 0, …).
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native } from '../../agent/native.js';

describe('native argument checks', () => {
  const n = native() as unknown as Record<string, (...a: unknown[]) => unknown>;
  it.each([
    ['getSockoptInt', [0, 'SOL_SOCKET', 7], /argument 1 \(level\) must be a number/],
    ['getSockoptInt', [0, 1], /argument 2 \(option name\) must be a number/],
    ['setSockoptInt', [0, 1, 7], /argument 3 \(value\) must be a number/],
    ['setSockoptInt', [0, 1, 7, '4096'], /argument 3 \(value\) must be a number/],
    ['getSockoptInt', ['0', 1, 7], /must be a file descriptor/],
  ])('%s(%j) throws a TypeError', (fn, args, message) => {
    expect(() => n[fn]!(...args)).toThrow(TypeError);
    expect(() => n[fn]!(...args)).toThrow(message);
  });

  // traceOpen opens the cgroup before it reads the options: a bad one must not leave that fd behind.
  it('traceOpen with malformed ports throws a TypeError and keeps no file descriptor', () => {
    if (typeof n.traceOpen !== 'function') throw new Error('the addon was built without libbpf: install libbpf-dev and pkg-config (scripts/install-test-deps.sh), then npm rebuild');
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 20; i++) {
      expect(() => n.traceOpen!('/sys/fs/cgroup', { ports: [[1]] })).toThrow(/ports must be \[from, to\] pairs/);
      expect(() => n.traceOpen!('/sys/fs/cgroup', { ports: [['80', 90]] })).toThrow(/ports must be \[from, to\] pairs/);
    }
    expect(fds()).toBe(before);
  });
});
