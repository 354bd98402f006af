// The live page: polls /api/overview (and /api/chunks where a per-chunk mode
// serves it) and redraws. Plain browser JavaScript, no build step, no
// dependency; every text goes in through textContent (remote names and
// process names are not trusted markup).
const LIMITS = ['rwnd', 'sndbuf', 'network', 'app'];
const KEEP = 300; // timeline points kept per page (5 minutes at 1 s)
const SVG = 'http://www.w3.org/2000/svg';

const state = { since: 0, points: [], failures: 0 };

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function rate(bytesPerSecond) {
  const b = bytesPerSecond * 8;
  if (b >= 1e9) return `${(b / 1e9).toFixed(1)} Gb/s`;
  if (b >= 1e6) return `${(b / 1e6).toFixed(1)} Mb/s`;
  if (b >= 1e3) return `${(b / 1e3).toFixed(0)} kb/s`;
  return `${Math.round(b)} b/s`;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

function secs(x) {
  if (x === undefined || x === null) return '–';
  if (x < 1) return `${Math.round(x * 1000)} ms`;
  return `${x.toFixed(x < 10 ? 2 : 1)} s`;
}

/** The verdict of a set of shares: the largest (ties to the more specific cause). */
function limitOf(sh) {
  if (!sh) return 'unknown';
  let best = 'rwnd';
  for (const k of LIMITS) if (sh[k] > sh[best]) best = k;
  return best;
}

function bar(sh) {
  const d = el('div', { class: 'bar', role: 'img' });
  if (!sh) {
    d.setAttribute('aria-label', 'no interval yet');
    return d;
  }
  d.setAttribute('aria-label', LIMITS.map((k) => `${k} ${Math.round(sh[k] * 100)}%`).join(', '));
  for (const k of LIMITS) {
    if (!(sh[k] > 0)) continue;
    const s = el('span', { class: `seg ${k}` });
    s.style.width = `${(sh[k] * 100).toFixed(2)}%`;
    d.append(s);
  }
  return d;
}

function renderWorst(rows) {
  const body = $('#worst tbody');
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el('tr');
    tr.append(el('td', { colspan: 9, class: 'empty' }, 'no connection yet'));
    body.append(tr);
    return;
  }
  for (const c of rows) {
    const limit = limitOf(c.lastShares);
    const tr = el('tr', { 'data-remote': c.remote, 'data-port': c.port, 'data-limit': limit });
    tr.append(
      el('td', { class: 'remote' }, c.remote),
      el('td', {}, c.port === 'ephemeral' ? 'out' : `:${c.port}`),
      el('td', { class: 'opt' }, c.comm ? `${c.comm}${c.pid ? ` ${c.pid}` : ''}` : '–'),
      el('td', { class: 'num' }, rate(c.deliveryRateBytesPerSecond)),
      el('td', { class: 'num opt' }, `${(c.rttSeconds * 1000).toFixed(1)} ms`),
      el('td', { class: 'num' }, bytes(c.peerRwndBytes)),
    );
    const cell = el('td');
    cell.append(bar(c.lastShares));
    tr.append(cell, el('td', { class: `limit ${limit}` }, c.lastShares ? limit : '…'), el('td', { class: 'num opt' }, secs(c.stallSeconds)));
    body.append(tr);
  }
}

function renderTimeline() {
  const root = $('#timeline');
  const ports = new Map();
  for (const p of state.points) for (const [port, s] of Object.entries(p.ports)) ports.set(port, Math.max(ports.get(port) ?? 0, s.connections));
  root.replaceChildren();
  if (ports.size === 0) {
    root.append(el('p', { class: 'empty' }, 'waiting for two polls…'));
    return;
  }
  const n = Math.max(60, state.points.length);
  const W = 600;
  const H = 80;
  const w = W / n;
  const first = n - state.points.length;
  for (const port of [...ports.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }))) {
    const box = el('div', { class: 'port-timeline', 'data-port': port });
    const title = el('h3', {}, port === 'ephemeral' ? 'outbound' : `:${port} `);
    const last = [...state.points].reverse().find((p) => p.ports[port]);
    if (last) title.append(el('small', {}, `${last.ports[port].connections} conn · now ${LIMITS.map((k) => `${k} ${Math.round(last.ports[port][k] * 100)}%`).join(' · ')}`));
    box.append(title);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'timeline');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', `time shares on ${port}`);
    state.points.forEach((p, i) => {
      const s = p.ports[port];
      if (!s) return;
      let y = H;
      for (const k of LIMITS) {
        const h = s[k] * H;
        if (!(h > 0)) continue;
        y -= h;
        const r = document.createElementNS(SVG, 'rect');
        r.setAttribute('class', k);
        r.setAttribute('x', ((first + i) * w).toFixed(2));
        r.setAttribute('y', y.toFixed(2));
        r.setAttribute('width', (w + 0.5).toFixed(2));
        r.setAttribute('height', h.toFixed(2));
        svg.append(r);
      }
    });
    box.append(svg);
    root.append(box);
  }
}

async function refresh() {
  try {
    const r = await fetch(`api/overview?limit=20&since=${state.since}`, { cache: 'no-store' });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const o = await r.json();
    for (const p of o.timeline) {
      state.points.push(p);
      state.since = Math.max(state.since, p.t);
    }
    if (state.points.length > KEEP) state.points.splice(0, state.points.length - KEEP);
    renderWorst(o.worst);
    renderTimeline();
    const s = $('#status');
    s.classList.remove('error');
    s.textContent = `${o.connections} connection${o.connections === 1 ? '' : 's'} · updated ${new Date(o.now).toLocaleTimeString()}`;
    state.failures = 0;
  } catch (e) {
    state.failures++;
    const s = $('#status');
    s.classList.add('error');
    s.textContent = `agent unreachable (${e.message}); retrying…`;
  }
}

async function refreshChunks() {
  const note = $('#chunks-note');
  const body = $('#chunks tbody');
  try {
    const r = await fetch('api/chunks?limit=20', { cache: 'no-store' });
    if (r.status === 404) {
      note.textContent = 'No per-chunk mode on this listener: run `tcp-chronograph proxy` (or attach) for per-chunk records.';
      body.replaceChildren();
      $('#chunks').hidden = true;
      return false;
    }
    $('#chunks').hidden = false;
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const lines = (await r.text()).split('\n').filter((l) => l.trim() !== '');
    const records = lines.map((l) => JSON.parse(l)).reverse();
    note.textContent = records.length === 0 ? 'No chunk records yet.' : 'Newest first; the limit is the verdict over the chunk\'s own span.';
    body.replaceChildren();
    for (const c of records) {
      const limit = c.stalled ? `${c.limit} (stalled)` : c.limit;
      const tr = el('tr', { 'data-limit': c.limit });
      const t = c.ackTime ?? c.writeTime;
      tr.append(
        el('td', {}, t ? new Date(t * 1000).toLocaleTimeString() : '–'),
        el('td', { class: 'remote' }, c.remote ?? c.peer ?? '–'),
        el('td', { class: 'opt' }, c.route ?? c.label ?? '–'),
        el('td', { class: 'num' }, bytes(c.bytes)),
        el('td', { class: 'num' }, secs(c.queueDelay)),
        el('td', { class: 'num' }, secs(c.deliveryTime)),
        el('td', { class: `limit ${c.limit}` }, limit),
      );
      body.append(tr);
    }
    return true;
  } catch (e) {
    note.textContent = `chunk records unavailable (${e.message})`;
    return true;
  }
}

function loop(fn, ms) {
  const run = async () => {
    const again = await fn();
    if (again !== false) setTimeout(run, ms);
  };
  void run();
}

loop(refresh, 1000);
loop(refreshChunks, 2000);
