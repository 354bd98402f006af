// The kernel fixtures recorded by test/fixtures/capture.test.ts.
import { readFileSync } from 'node:fs';
import { fromHex } from '../fixtures/timestamped_loopback.js';

const read = (name: string): string => readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8');

export const meta = JSON.parse(read('capture.json')) as {
  kernel: string;
  chunks: number[];
  ipv4: { startedAt: number; endedAt: number };
  ipv6: { startedAt: number; endedAt: number };
};
export const errqueueV4 = fromHex(read('errqueue_ipv4.hex'));
export const errqueueV6 = fromHex(read('errqueue_ipv6.hex'));
export const tcpInfo = fromHex(read('tcp_info.hex'));
