// Churn at CI size (5 000 short connections on loopback while watch runs):
// the per-port aggregates equal the ground truth (connections closed, bytes
// acknowledged), the agent's fds return to their baseline; RSS and heap are
// printed (right after the round: closed connections are still remembered
// for 120 s). Full size, with a warm-up round and the memory after the table
// settles: `npm run soak` (bench/soak/run.mjs).
import { describe, expect, it } from 'vitest';
import { ensureBuilt } from '../helpers/cli.js';
// @ts-expect-error -- plain ESM script shared with bench/soak (no types)
import { churn, describeMemory } from '../../bench/soak/churn.mjs';

interface ChurnResult {
  count: number;
  served: number;
  servedBytes: number;
  received: number;
  closed: number;
  acked: number;
  rssStartKiB: number;
  rssEndKiB: number;
  fdStart: number;
  fdEnd: number;
  seconds: number;
}

describe('churn', () => {
  it('5 000 short connections: closed count and acked bytes exact, fds back to baseline', async () => {
    ensureBuilt();
    const r = (await churn({ count: 5000, parallel: 100, bytes: 2000 })) as ChurnResult;
    console.log(
      `churn: ${r.count} connections in ${r.seconds.toFixed(1)} s; closed ${r.closed}, acked ${r.acked} B (truth ${r.servedBytes} B + ${r.count} FINs); ` +
        `agent RSS ${r.rssStartKiB} -> ${r.rssEndKiB} KiB; fds ${r.fdStart} -> ${r.fdEnd}\n${describeMemory(r)}`,
    );
    expect(r.served).toBe(5000);
    expect(r.received).toBe(r.servedBytes);
    expect(r.closed).toBe(5000);
    // tcpi_bytes_acked counts the FIN's sequence number too: one per connection the server closed.
    expect(r.acked).toBe(r.servedBytes + r.count);
    expect(r.fdEnd).toBeLessThanOrEqual(r.fdStart);
  }, 120_000);
});
