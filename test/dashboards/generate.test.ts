// The committed dashboards and rules are what dashboards/src/ generates, and
// they hold together: one data source variable, $__rate_interval in rates,
// only metrics the agent exports, PromQL that parses.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { renderAll } from '../../dashboards/src/build.js';
import { agentMetricNames, labelValuesQuery, loadDashboards, metricsIn, panelQueries, ROOT, rules, substitute, variables } from './artifacts.js';

const CONCRETE = { job: '(streamer|edge)', instance: '.*', port: '.*', rateInterval: '1m', interval: '15s', range: '1h' };

describe('generated files', () => {
  it.each(Object.entries(renderAll()))('%s is up to date (else run `npm run dashboards` and commit)', (path, content) => {
    let committed = '';
    try {
      committed = readFileSync(join(ROOT, path), 'utf8');
    } catch {
      // missing: fails below
    }
    expect(committed, `${path} is stale: run \`npm run dashboards\` and commit the result`).toBe(content);
  });
});

describe('dashboards', () => {
  const dashboards = loadDashboards();
  const queries = panelQueries();

  it('has the four dashboards, unique uids, panels inside the 24-column grid without overlap', () => {
    expect(dashboards.map((d) => d.dashboard.uid).sort()).toEqual(['tcp-chrono-agent', 'tcp-chrono-chunks', 'tcp-chrono-fleet', 'tcp-chrono-rwnd']);
    for (const { dashboard } of dashboards) {
      const cells = new Set<string>();
      for (const p of dashboard.panels) {
        const g = p.gridPos!;
        expect(g.x + g.w, `${dashboard.uid} / ${p.title}`).toBeLessThanOrEqual(24);
        for (let x = g.x; x < g.x + g.w; x++) {
          for (let y = g.y; y < g.y + g.h; y++) {
            const k = `${x},${y}`;
            expect(cells.has(k), `${dashboard.uid} / ${p.title} overlaps at ${k}`).toBe(false);
            cells.add(k);
          }
        }
      }
    }
  });

  it('every panel and query reads the ${datasource} variable (file provisioning does not resolve __inputs)', () => {
    for (const { dashboard } of dashboards) {
      for (const p of dashboard.panels.filter((p) => p.type !== 'row')) {
        expect(p.datasource, `${dashboard.uid} / ${p.title}`).toEqual({ type: 'prometheus', uid: '${datasource}' });
        expect(p.targets?.length, `${dashboard.uid} / ${p.title} has no query`).toBeGreaterThan(0);
        for (const t of p.targets ?? []) expect(t.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' });
      }
    }
  });

  it('has datasource, job and instance variables, and port wherever a query uses $port', () => {
    for (const { dashboard } of dashboards) {
      const names = dashboard.templating.list.map((v) => v.name);
      expect(names.slice(0, 3)).toEqual(['datasource', 'job', 'instance']);
      const usesPort = queries.some((q) => q.dashboard === dashboard.uid && q.expr.includes('$port'));
      expect(names.includes('port'), dashboard.uid).toBe(usesPort);
      // The network namespace (watch --netns) goes with the port, before it: the port variable's values depend on it.
      const usesNetns = queries.some((q) => q.dashboard === dashboard.uid && q.expr.includes('$netns'));
      expect(names.includes('netns'), dashboard.uid).toBe(usesNetns);
      if (usesNetns) expect(names.indexOf('netns'), dashboard.uid).toBe(names.indexOf('port') - 1);
    }
  });

  it('range functions use $__rate_interval (or $__range in over-the-range tables), never a fixed window', () => {
    for (const q of queries) {
      for (const m of q.expr.matchAll(/\[([^\]]+)\]/g)) expect(['$__rate_interval', '$__range'], `${q.panel}: ${q.expr}`).toContain(m[1]);
    }
  });

  it('uses only the template variables it defines', () => {
    for (const q of queries) {
      for (const m of q.expr.matchAll(/\$([a-zA-Z_]+)/g)) expect(['job', 'instance', 'netns', 'port', '__rate_interval', '__range'], q.panel).toContain(m[1]);
    }
  });

  it('reads only metrics the agent exports (or Prometheus adds per target)', () => {
    const known = agentMetricNames();
    for (const n of ['scrape_samples_scraped', 'scrape_duration_seconds']) known.add(n);
    const used = new Set<string>();
    for (const q of queries) for (const n of metricsIn(q.expr)) used.add(n);
    for (const v of variables()) if (v.query !== undefined && v.query.startsWith('label_values')) for (const n of metricsIn(labelValuesQuery(v.query).selector + '{')) used.add(n);
    for (const n of used) expect(known.has(n), `${n} is not exported by the agent (agent/export, agent/proxy, agent/attach)`).toBe(true);
  });

  it('table columns and legends name labels the query keeps', () => {
    for (const q of queries) {
      const legendLabels = [...(q.legend ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!);
      for (const l of legendLabels) {
        if (l === 'le') continue; // heatmap buckets
        // The label survives when the query groups by it or does not aggregate at all.
        const grouped = [...q.expr.matchAll(/(?:by|on) \(([^)]*)\)/g)].some((m) => m[1]!.split(', ').includes(l));
        const aggregated = /\b(sum|count|max|min|avg) (by )?\(/.test(q.expr) || /\bsum\(/.test(q.expr);
        expect(grouped || !aggregated, `${q.panel}: legend {{${l}}} but the query aggregates it away: ${q.expr}`).toBe(true);
      }
    }
  });
});

describe('dashboards/README.md', () => {
  const readme = readFileSync(join(ROOT, 'dashboards/README.md'), 'utf8');
  it('lists every dashboard, panel and alert', () => {
    for (const { dashboard } of loadDashboards()) {
      expect(readme, dashboard.uid).toContain(dashboard.uid);
      for (const p of dashboard.panels) expect(readme, `${dashboard.uid} / ${p.title}`).toContain(p.title.replace(/ \(p50.*$/, ''));
    }
    for (const r of rules()) if (r.alert !== undefined) expect(readme, r.alert).toContain(r.alert);
  });
});

describe('PromQL syntax (promtool, no server)', () => {
  it('every panel expression and variable selector parses once the variables are substituted', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tcpchrono-syntax-'));
    try {
      const exprs = [
        ...panelQueries().map((q) => substitute(q.expr, CONCRETE)),
        ...variables()
          .filter((v) => v.query?.startsWith('label_values') === true)
          .map((v) => substitute(labelValuesQuery(v.query!).selector, CONCRETE)),
      ];
      const file = join(dir, 'exprs.yml');
      writeFileSync(file, stringify({ groups: [{ name: 'syntax', rules: exprs.map((expr, i) => ({ record: `syntax_check_${i}`, expr })) }] }));
      const out = execFileSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
      expect(out).toContain(`SUCCESS: ${exprs.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rules read only metrics the agent exports or other rules record', () => {
    const known = agentMetricNames();
    const all = rules();
    for (const r of all) if (r.record !== undefined) known.add(r.record);
    for (const r of all) for (const n of metricsIn(r.expr)) expect(known.has(n), `${r.record ?? r.alert}: ${n}`).toBe(true);
  });
});
