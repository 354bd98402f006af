// Syscall failures reach the user as Node-shaped errors (code, errno, syscall)
// with a sentence that says what to do.
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { instrument } from '../../agent/index.js';
import { native } from '../../agent/native.js';
import { enableTimestamping } from '../../agent/sources/timestamping.js';

const fdOf = (h: unknown): number => (h as { _handle: { fd: number } })._handle.fd;

describe('errors', () => {
  it('EINVAL on a listening socket says to enable after connect/accept', async () => {
    const server = net.createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      let err: unknown;
      try {
        enableTimestamping(fdOf(server));
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'EINVAL', errno: -22, syscall: 'setsockopt(SO_TIMESTAMPING)' });
      expect((err as Error).message).toMatch(/after connect\(\)\/accept\(\)/);
    } finally {
      server.close();
    }
  });

  it('EBADF and ENOTSOCK name the problem', () => {
    expect(() => native().tcpInfo(987654)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const fd = openSync('/dev/null', 'r');
    try {
      expect(() => enableTimestamping(fd)).toThrow(/not a socket/);
    } finally {
      closeSync(fd);
    }
  });

  it('a socket whose owner set SO_TIMESTAMPING is left alone', async () => {
    const server = net.createServer((s) => s.resume()).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(sock, 'connect');
    try {
      native().setTimestamping(fdOf(sock), 1 << 4); // the "application" uses timestamps itself
      expect(() => instrument(sock)).toThrow(/already has SO_TIMESTAMPING/);
      expect(native().getTimestamping(fdOf(sock))).toBe(1 << 4);
    } finally {
      sock.destroy();
      server.close();
    }
  });

  it('bad options are RangeErrors that name the option', async () => {
    const server = net.createServer((s) => s.resume()).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(sock, 'connect');
    try {
      expect(() => instrument(sock, { sample: 2.5 })).toThrow(/sample must be/);
      expect(() => instrument(sock, { sample: 0 })).toThrow(RangeError);
      expect(() => instrument(sock, { stallAfterMs: -1 })).toThrow(/stallAfterMs/);
      // Nothing was switched on by the refused calls.
      expect(native().getTimestamping(fdOf(sock))).toBe(0);
    } finally {
      sock.destroy();
      server.close();
    }
  });
});
