// Reads the committed artifacts (dashboard JSON, rule files) the way Grafana
// and Prometheus will, and extracts every PromQL expression from them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { DASHBOARD_FILES, RULES_FILE } from '../../dashboards/src/build.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface PanelQuery {
  dashboard: string;
  panel: string;
  panelType: string;
  refId: string;
  expr: string;
  legend: string | undefined;
  instant: boolean;
  format: string | undefined;
  unit: string | undefined;
}

export interface Variable {
  dashboard: string;
  name: string;
  type: string;
  query: string | undefined;
}

interface Target {
  refId: string;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  format?: string;
  datasource?: { type: string; uid: string };
}

export interface Panel {
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
  fieldConfig?: { defaults?: { unit?: string } };
  gridPos?: { x: number; y: number; w: number; h: number };
}

export interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: string | { query: string } }[] };
}

export function loadDashboards(): { file: string; dashboard: Dashboard }[] {
  return Object.keys(DASHBOARD_FILES).map((file) => ({ file, dashboard: JSON.parse(readFileSync(join(ROOT, file), 'utf8')) as Dashboard }));
}

export function panelQueries(): PanelQuery[] {
  const out: PanelQuery[] = [];
  for (const { dashboard } of loadDashboards()) {
    for (const p of dashboard.panels) {
      for (const t of p.targets ?? []) {
        out.push({
          dashboard: dashboard.uid,
          panel: p.title,
          panelType: p.type,
          refId: t.refId,
          expr: t.expr,
          legend: t.legendFormat,
          instant: t.instant === true,
          format: t.format,
          unit: p.fieldConfig?.defaults?.unit,
        });
      }
    }
  }
  return out;
}

export function variables(): Variable[] {
  const out: Variable[] = [];
  for (const { dashboard } of loadDashboards()) {
    for (const v of dashboard.templating.list) {
      out.push({ dashboard: dashboard.uid, name: v.name, type: v.type, query: typeof v.query === 'string' ? v.query : v.query?.query });
    }
  }
  return out;
}

export interface Rule {
  group: string;
  record?: string;
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export function loadRuleGroups(file = RULES_FILE): { name: string; rules: Rule[] }[] {
  return (parse(readFileSync(join(ROOT, file), 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups;
}

export function rules(): Rule[] {
  return loadRuleGroups().flatMap((g) => g.rules.map((r) => ({ ...r, group: g.name })));
}

/**
 * Replaces Grafana's template variables with concrete values, as Grafana
 * would before sending a query: multi-value variables become a regex
 * alternation (`(a|b)`), All becomes the variable's allValue.
 */
export function substitute(
  expr: string,
  values: { job: string; instance: string; netns?: string; port: string; rateInterval: string; interval: string; range: string },
): string {
  return expr
    .replaceAll('$__rate_interval', values.rateInterval)
    .replaceAll('$__interval', values.interval)
    .replaceAll('$__range', values.range)
    .replaceAll('$job', values.job)
    .replaceAll('$instance', values.instance)
    .replaceAll('$netns', values.netns ?? '.*') // All (its default): also the series without a netns label
    .replaceAll('$port', values.port);
}

/** `label_values(selector, label)` → [selector, label]. */
export function labelValuesQuery(q: string): { selector: string; label: string } {
  const m = /^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$/.exec(q);
  if (m === null) throw new Error(`not a label_values() query: ${q}`);
  return { selector: m[1]!, label: m[2]! };
}

/** Labels a legend format refers to ({{label}}). */
export function legendLabels(legend: string | undefined): string[] {
  return [...(legend ?? '').matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)].map((m) => m[1]!);
}

/** Metric names the agent's code defines (string literals starting tcp_chrono_), with histogram series. */
export function agentMetricNames(): Set<string> {
  const files = ['agent/export/metrics.ts', 'agent/export/chunk_metrics.ts', 'agent/export/self_metrics.ts', 'agent/proxy/metrics.ts', 'agent/attach/metrics.ts'];
  const names = new Set<string>();
  for (const f of files) {
    const src = readFileSync(join(ROOT, f), 'utf8');
    for (const m of src.matchAll(/['"](tcp_chrono_[a-z0-9_]+)['"]/g)) names.add(m[1]!);
    // Histograms expose _bucket, _sum and _count.
    for (const m of src.matchAll(/new Histogram\(\{\s*name:\s*['"](tcp_chrono_[a-z0-9_]+)['"]/g)) {
      for (const s of ['_bucket', '_sum', '_count']) names.add(m[1]! + s);
    }
  }
  return names;
}

/** Metric names an expression reads (identifiers followed by a selector or a range, excluding functions and keywords). */
export function metricsIn(expr: string): string[] {
  const out = new Set<string>();
  for (const m of expr.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{|\[)/g)) out.add(m[1]!);
  // Bare names (recorded series), e.g. "a:b:c / (d:e:f > 0)".
  for (const m of expr.matchAll(/\b([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b/g)) out.add(m[1]!);
  // label_values({__name__=~"a|b"}, ...) and selectors by name.
  for (const m of expr.matchAll(/__name__=~"([^"]+)"/g)) for (const n of m[1]!.split('|')) out.add(n);
  return [...out].filter((n) => n !== 'by' && n !== 'without' && n !== 'on' && n !== 'ignoring');
}
