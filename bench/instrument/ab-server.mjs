// The A/B benchmark's server: one process, two segment listeners (plain and
// instrumented) and a control port reporting the process's CPU time.
// Usage: node ab-server.mjs VARIANT WRITE SEGMENT (VARIANT: response | response16 | write | write16 | control)
// control: the second listener stays plain too (an A/A run: the bench's own noise).
import http from 'node:http';
import { instrument, instrumentHttp } from '../../dist/agent/index.js';
import { errqueue } from '../../dist/agent/sources/errqueue.js';

const [variant, writeSize, segment] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const payload = Buffer.alloc(writeSize, 0x5a);

function segmentServer() {
  return http.createServer({ keepAlive: true }, (req, res) => {
    res.setHeader('content-length', segment);
    let left = segment;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, writeSize);
        left -= n;
        const data = n === writeSize ? payload : payload.subarray(0, n);
        if (left === 0) return void res.end(data);
        if (!res.write(data)) return void res.once('drain', pump);
      }
    };
    pump();
  });
}

const plain = segmentServer();
const instrumented = segmentServer();
const sample = variant.endsWith('16') ? 16 : 1;
if (variant.startsWith('response')) instrumentHttp(instrumented, { sample });
else if (variant.startsWith('write')) instrumented.on('connection', (s) => instrument(s, { sample }));
else if (variant !== 'control') throw new Error(`unknown variant ${variant}`);
const control = http.createServer((req, res) => {
  const cpu = process.cpuUsage();
  res.end(JSON.stringify({ cpu: (cpu.user + cpu.system) / 1e6, records: errqueue.counters.records }));
});
const listen = (s) => new Promise((r) => s.listen(0, '127.0.0.1', () => r(s.address().port)));
const ports = { plain: await listen(plain), instrumented: await listen(instrumented), control: await listen(control) };
process.stdout.write(JSON.stringify(ports) + '\n');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
