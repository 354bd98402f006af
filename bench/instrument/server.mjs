// Segment server for the instrumentation benchmark: streams SEGMENT bytes per
// request in WRITE-byte writes. MODE: none | response (instrumentHttp, one
// chunk per response) | write (instrument(), one chunk per write); SAMPLE: every Nth chunk.
// Usage: node server.mjs MODE WRITE SEGMENT [SAMPLE]
// Prints one JSON line with its CPU time and record counts on SIGTERM.
import http from 'node:http';
import { instrument, instrumentHttp } from '../../dist/agent/index.js';
import { errqueue } from '../../dist/agent/sources/errqueue.js';

const [mode, writeSize, segment, sample] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5] ?? 1)];
const payload = Buffer.alloc(writeSize, 0x5a);
let chunks = 0;

const server = http.createServer({ keepAlive: true }, (req, res) => {
  res.setHeader('content-length', segment);
  let left = segment;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, writeSize);
      left -= n;
      const ok = left === 0 ? (res.end(n === writeSize ? payload : payload.subarray(0, n)), true) : res.write(n === writeSize ? payload : payload.subarray(0, n));
      if (!ok) return void res.once('drain', pump);
    }
  };
  pump();
});
if (mode === 'response') instrumentHttp(server, { sample }).on('chunk', () => chunks++);
if (mode === 'write') server.on('connection', (s) => instrument(s, { sample }).on('chunk', () => chunks++));


server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
const cpu0 = process.cpuUsage();
process.on('SIGTERM', () => {
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(JSON.stringify({ cpu: (cpu.user + cpu.system) / 1e6, chunks, records: errqueue.counters.records }) + '\n');
  process.exit(0);
});
