// What the diag benches share: a socket holder (hold.py, hold_netns.py) is
// ready once it prints "ready"; it fails when it exits or takes too long.
export function holderReady(holder, seconds, what = 'holder') {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} not ready after ${seconds} s`)), seconds * 1000);
    holder.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    holder.once('exit', (code) => reject(new Error(`${what} exited ${code}`)));
  });
}
