// `npm run soak`: the full-size reliability figures for the README
// (Reliability and security). Churn: 100 000 short connections against a
// loopback server while `watch` runs; prints ground truth against the
// agent's aggregates, its RSS growth and fd count. Flags: --count N.
import { churn } from './churn.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const count = arg('count', 100_000);
const r = await churn({ count, parallel: 200, bytes: 2000 });
const ok = r.closed === count && r.acked === r.servedBytes + count && r.fdEnd <= r.fdStart;
console.log(`churn: ${count} connections in ${r.seconds.toFixed(1)} s (${Math.round(count / r.seconds)}/s)`);
console.log(`  closed (agent) ${r.closed} of ${count}; bytes acked (agent) ${r.acked} = ${r.servedBytes} + ${count} FINs: ${r.acked === r.servedBytes + count ? 'exact' : 'MISMATCH'}`);
console.log(`  agent RSS ${(r.rssStartKiB / 1024).toFixed(1)} -> ${(r.rssEndKiB / 1024).toFixed(1)} MiB (+${((r.rssEndKiB - r.rssStartKiB) / 1024).toFixed(1)} MiB); fds ${r.fdStart} -> ${r.fdEnd}`);
console.log(ok ? 'soak: OK' : 'soak: FAILED');
process.exit(ok ? 0 : 1);
