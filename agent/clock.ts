import { native } from './native.js';

// CLOCK_REALTIME in seconds, the clock of the kernel's software timestamps.
// Read on every write of an instrumented socket, so it is performance.now()
// (no syscall, no BigInt) on a base taken from CLOCK_REALTIME and re-taken
// every second, which keeps drift and wall-clock steps to well under a jiffy.
const RECALIBRATE_MS = 1000;
let baseRealtime = 0;
let basePerf = -Infinity;

export function nowSeconds(): number {
  const perf = performance.now();
  if (perf - basePerf >= RECALIBRATE_MS) {
    baseRealtime = Number(native().realtimeNs()) / 1e9;
    basePerf = performance.now();
    return baseRealtime;
  }
  return baseRealtime + (perf - basePerf) / 1000;
}
