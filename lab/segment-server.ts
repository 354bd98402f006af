// The lab's segment server as a process of its own (lab/server.ts, not
// instrumented): what `attach` attaches to and what the demo serves from.
//
//   node dist/lab/segment-server.js HOST PORT [LIFETIME_S]
//
// Prints "listening PORT" once bound; exits after LIFETIME_S (default 600)
// or on SIGTERM/SIGINT.
import net from 'node:net';
import { serveSegments } from './server.js';

const [host = '0.0.0.0', portText = '0', lifetimeText = '600'] = process.argv.slice(2);
const server = net.createServer({ pauseOnConnect: true });
server.listen(Number(portText), host, () => {
  const seg = serveSegments(server, { instrument: false });
  process.stdout.write(`listening ${seg.port}\n`);
  const stop = (): void => {
    void seg.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  setTimeout(stop, Number(lifetimeText) * 1000).unref();
});
