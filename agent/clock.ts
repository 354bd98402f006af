import { native } from './native.js';

/** CLOCK_REALTIME in seconds, the clock of the kernel's software timestamps. */
export function nowSeconds(): number {
  return Number(native().realtimeNs()) / 1e9;
}
