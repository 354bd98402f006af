// Churn with instrument() on the server, CI size: 500 warm-up and 4 000
// short connections to a loopback server (its own process) that
// instrument()s each accepted socket, writes one 2 000-byte chunk and ends
// (bench/soak/churn_instrument.mjs, shared with `npm run soak`). Asserted:
// every connection gave exactly one chunk event with its bytes, matched to
// the ACK record of its own last byte, none stalled, no record lost, nothing
// pending when the socket closed, no write bypassed the probe; the
// error-queue reader let go of every socket (none left, no orphaned record)
// and the server's fds are back to their baseline. RSS and heap are printed.
import { describe, expect, it } from 'vitest';
// @ts-expect-error -- plain ESM script shared with bench/soak (no types)
import { churnInstrument, describeChurnInstrument } from '../../bench/soak/churn_instrument.mjs';
import { ensureBuilt } from '../helpers/cli.js';

interface Result {
  total: number;
  received: number;
  expectedBytes: number;
  accepted: number;
  closed: number;
  instrumentErrors: number;
  chunkEvents: number;
  chunkBytes: number;
  inexactEvents: number;
  stallEvents: number;
  chunks: number;
  stalls: number;
  inexact: number;
  lostRecords: number;
  pending: number;
  unaccountedWrites: number;
  bytesWritten: number;
  watched: number;
  errqueue: { records: number; orphaned: number; malformed: number; handlerErrors: number };
  fdStart: number;
  fdEnd: number;
}

describe('churn with instrument() on the server', () => {
  it('4 000 short instrumented connections: one exact chunk each, no stall or lost record, fds back to baseline', async () => {
    ensureBuilt();
    const r = (await churnInstrument({ count: 4000, warmup: 500, rounds: 1, parallel: 100, bytes: 2000 })) as Result;
    console.log(describeChurnInstrument(r));
    const n = 4500;
    expect(r.total).toBe(n);
    expect(r.received).toBe(r.expectedBytes);
    expect(r.accepted).toBe(n);
    expect(r.closed).toBe(n);
    expect(r.instrumentErrors).toBe(0);
    // One write per connection: one chunk, keyed at its own last byte.
    expect(r.chunkEvents).toBe(n);
    expect(r.chunkBytes).toBe(r.expectedBytes);
    expect(r.inexactEvents).toBe(0);
    expect(r.stallEvents).toBe(0);
    expect(r.chunks).toBe(n);
    expect(r.stalls).toBe(0);
    expect(r.inexact).toBe(0);
    expect(r.lostRecords).toBe(0);
    expect(r.pending).toBe(0);
    expect(r.unaccountedWrites).toBe(0);
    expect(r.bytesWritten).toBe(r.expectedBytes);
    // At least a SCHED and an ACK record per chunk reached the reader, none for a socket it no longer knew.
    expect(r.errqueue.records).toBeGreaterThanOrEqual(2 * n);
    expect(r.errqueue.orphaned).toBe(0);
    expect(r.errqueue.malformed).toBe(0);
    expect(r.errqueue.handlerErrors).toBe(0);
    expect(r.watched).toBe(0);
    expect(r.fdEnd).toBe(r.fdStart);
  }, 120_000);
});
