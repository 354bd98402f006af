// The destroy-feed source on a binding that refuses or misbehaves.
import { describe, expect, it } from 'vitest';
import { DestroyFeed } from '../../agent/sources/destroy.js';
import type { DiagBinding } from '../../agent/sources/diag.js';

function refusing(code: string): DiagBinding {
  return {
    diagDump: () => Buffer.alloc(0),
    diagDumpInto: () => 0,
    diagCopyLast: () => 0,
    DestroyFeed: class {
      constructor() {
        throw Object.assign(new Error(`bind(SKNLGRP_INET_TCP_DESTROY) failed: ${code}`), { code, errno: -1, syscall: 'bind(SKNLGRP_INET_TCP_DESTROY)' });
      }
      close(): void {}
      stats() {
        return { wakeups: 0, datagrams: 0, bytes: 0, overruns: 0, errors: 0 };
      }
    },
  };
}

describe('DestroyFeed.start', () => {
  it('turns EPERM into a reason the log can print, without throwing', () => {
    const r = DestroyFeed.start(() => undefined, undefined, refusing('EPERM'));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.code).toBe('EPERM');
      expect(r.reason).toMatch(/last poll/);
    }
  });

  it('reports other errors by code', () => {
    const r = DestroyFeed.start(() => undefined, undefined, refusing('EMFILE'));
    expect(r).toMatchObject({ ok: false, code: 'EMFILE' });
  });

  it('counts garbage batches as parse errors and never throws into the native callback', () => {
    let deliver: ((b: Buffer) => void) | undefined;
    const binding: DiagBinding = {
      diagDump: () => Buffer.alloc(0),
    diagDumpInto: () => 0,
    diagCopyLast: () => 0,
      DestroyFeed: class {
        constructor(cb: (b: Buffer) => void) {
          deliver = cb;
        }
        close(): void {}
        stats() {
          return { wakeups: 0, datagrams: 0, bytes: 0, overruns: 0, errors: 0 };
        }
      },
    };
    const r = DestroyFeed.start(() => {
      throw new Error('handler bug');
    }, undefined, binding);
    expect(r.ok).toBe(true);
    // A header claiming 200 bytes in a 20-byte buffer, then a valid-length junk message.
    const junk = Buffer.alloc(20);
    junk.writeUInt32LE(200, 0);
    expect(() => deliver!(junk)).not.toThrow();
    const short = Buffer.alloc(24);
    short.writeUInt32LE(24, 0);
    short.writeUInt16LE(20, 4); // SOCK_DIAG_BY_FAMILY with an 8-byte body
    expect(() => deliver!(short)).not.toThrow();
    if (r.ok) expect(r.feed.counters.parseErrors).toBe(2);
  });
});
