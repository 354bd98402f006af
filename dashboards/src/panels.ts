// Thin helpers over @grafana/grafana-foundation-sdk: every panel and query
// reads the `datasource` variable (file provisioning does not resolve
// `__inputs`), rates use $__rate_interval, and the layout is a simple grid
// flow (24 columns) so a dashboard file reads top to bottom like the screen.
import type * as cog from '@grafana/grafana-foundation-sdk/cog';
import * as common from '@grafana/grafana-foundation-sdk/common';
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as heatmap from '@grafana/grafana-foundation-sdk/heatmap';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import * as stat from '@grafana/grafana-foundation-sdk/stat';
import * as table from '@grafana/grafana-foundation-sdk/table';
import * as timeseries from '@grafana/grafana-foundation-sdk/timeseries';

export const DS: dashboard.DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

/**
 * Selector fragments built from the template variables. `netns` matches the
 * series of a single-namespace agent (no netns label) while it is All (.*).
 */
export const V = {
  job: 'job=~"$job"',
  instance: 'instance=~"$instance"',
  netns: 'netns=~"$netns"',
  port: 'port=~"$port"',
};
export const TARGET = `${V.job}, ${V.instance}`;
export const TARGET_PORT = `${V.job}, ${V.instance}, ${V.netns}, ${V.port}`;
/** The legend of a per-(job, netns, port) series: the namespace last, so a single-namespace agent's reads as before. */
export const PORT_LEGEND = '{{job}} :{{port}} {{netns}}';
export const RATE = '$__rate_interval';

export interface Query {
  expr: string;
  legend?: string;
  /** Instant query (tables, stats); range otherwise. */
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
}

function target(q: Query, refId: string): prometheus.DataqueryBuilder {
  const b = new prometheus.DataqueryBuilder().datasource(DS).refId(refId).expr(q.expr);
  if (q.legend !== undefined) b.legendFormat(q.legend);
  if (q.instant === true) b.instant();
  else b.range();
  if (q.format !== undefined) b.format(q.format as prometheus.PromQueryFormat);
  return b;
}

const refId = (i: number): string => String.fromCharCode(65 + i);

export interface Size {
  w: number;
  h: number;
}

export interface TimeseriesOpts extends Size {
  title: string;
  description: string;
  unit: string;
  queries: Query[];
  stack?: boolean;
  min?: number;
  max?: number;
  /** Draw a dashed red threshold line at this value. */
  threshold?: number;
  fill?: number;
}

export function timeseriesPanel(o: TimeseriesOpts): timeseries.PanelBuilder {
  const p = new timeseries.PanelBuilder()
    .title(o.title)
    .description(o.description)
    .datasource(DS)
    .unit(o.unit)
    .span(o.w)
    .height(o.h)
    .lineWidth(1)
    .fillOpacity(o.fill ?? (o.stack === true ? 60 : 10))
    .legend(new common.VizLegendOptionsBuilder().showLegend(true).displayMode(common.LegendDisplayMode.List).placement(common.LegendPlacement.Bottom))
    .tooltip(new common.VizTooltipOptionsBuilder().mode(common.TooltipDisplayMode.Multi).sort(common.SortOrder.Descending));
  if (o.stack === true) p.stacking(new common.StackingConfigBuilder().mode(common.StackingMode.Normal));
  if (o.min !== undefined) p.min(o.min);
  if (o.max !== undefined) p.max(o.max);
  if (o.threshold !== undefined) {
    p.thresholds(
      new dashboard.ThresholdsConfigBuilder().mode(dashboard.ThresholdsMode.Absolute).steps([
        { value: null, color: 'transparent' },
        { value: o.threshold, color: 'red' },
      ]),
    ).thresholdsStyle(new common.GraphThresholdsStyleConfigBuilder().mode(common.GraphThresholdsStyleMode.Dashed));
  }
  o.queries.forEach((q, i) => p.withTarget(target(q, refId(i))));
  return p;
}

export interface TableColumn {
  /** The column header of this query's value. */
  name: string;
  query: Query;
  unit: string;
}

export interface TableOpts extends Size {
  title: string;
  description: string;
  /** Label columns to show, in order; other labels are hidden. */
  labels: string[];
  columns: TableColumn[];
  /** Sort by this column (header name), descending. */
  sortBy: string;
}

/**
 * A table of instant queries joined on their labels (Grafana's "merge"
 * transformation), one value column per query, renamed and ordered.
 */
export function tablePanel(o: TableOpts): table.PanelBuilder {
  const p = new table.PanelBuilder()
    .title(o.title)
    .description(o.description)
    .datasource(DS)
    .span(o.w)
    .height(o.h)
    .sortBy([new common.TableSortByFieldStateBuilder().displayName(o.sortBy).desc(true)]);
  const rename: Record<string, string> = {};
  const index: Record<string, number> = {};
  o.labels.forEach((l, i) => (index[l] = i));
  o.columns.forEach((c, i) => {
    p.withTarget(target({ ...c.query, instant: true, format: 'table' }, refId(i)));
    rename[`Value #${refId(i)}`] = c.name;
    index[`Value #${refId(i)}`] = o.labels.length + i;
    p.overrideByName(c.name, [{ id: 'unit', value: c.unit }]);
  });
  p.withTransformation({ id: 'merge', options: {} });
  p.withTransformation({
    id: 'organize',
    options: { excludeByName: { Time: true }, includeByName: Object.fromEntries(Object.keys(index).map((k) => [k, true])), indexByName: index, renameByName: rename },
  });
  return p;
}

export interface HeatmapOpts extends Size {
  title: string;
  description: string;
  /** Sum of a histogram's bucket rates by le. */
  expr: string;
  unit: string;
}

export function heatmapPanel(o: HeatmapOpts): heatmap.PanelBuilder {
  return new heatmap.PanelBuilder()
    .title(o.title)
    .description(o.description)
    .datasource(DS)
    .span(o.w)
    .height(o.h)
    .calculate(false)
    .yAxis(new heatmap.YAxisConfigBuilder().unit(o.unit))
    .rowsFrame(new heatmap.RowsHeatmapOptionsBuilder().layout(common.HeatmapCellLayout.Le))
    .color(new heatmap.HeatmapColorOptionsBuilder().mode(heatmap.HeatmapColorMode.Scheme).scheme('Oranges').scale(heatmap.HeatmapColorScale.Exponential).exponent(0.5))
    .cellValues(new heatmap.CellValuesBuilder().unit('short'))
    .withTarget(target({ expr: o.expr, legend: '{{le}}', format: 'heatmap' }, 'A'));
}

export interface StatOpts extends Size {
  title: string;
  description: string;
  unit: string;
  query: Query;
  mappings?: dashboard.ValueMapping[];
  /** Value at or below which the stat turns red (e.g. 0 for a feed that is down). */
  redAtOrBelow?: number;
}

export function statPanel(o: StatOpts): stat.PanelBuilder {
  const p = new stat.PanelBuilder()
    .title(o.title)
    .description(o.description)
    .datasource(DS)
    .span(o.w)
    .height(o.h)
    .unit(o.unit)
    .graphMode(common.BigValueGraphMode.None)
    .colorMode(common.BigValueColorMode.Background)
    .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false))
    .withTarget(target({ ...o.query, instant: true }, 'A'));
  if (o.mappings !== undefined) p.mappings(o.mappings);
  if (o.redAtOrBelow !== undefined) {
    p.thresholds(
      new dashboard.ThresholdsConfigBuilder().mode(dashboard.ThresholdsMode.Absolute).steps([
        { value: null, color: 'red' },
        { value: o.redAtOrBelow + 0.5, color: 'green' },
      ]),
    );
  }
  return p;
}

export function row(title: string): dashboard.RowBuilder {
  return new dashboard.RowBuilder(title);
}

/**
 * The datasource variable and query variables for job, instance and
 * (optionally) netns and port. netns lists the namespaces of watch --netns
 * agents; with none (single-namespace agents) it offers only All.
 */
export function variables(opts: { port: boolean; agentMetrics: string }): dashboard.VariableModel[] {
  const ds = new dashboard.DatasourceVariableBuilder('datasource').label('Data source').type('prometheus');
  const q = (name: string, label: string, query: string): dashboard.QueryVariableBuilder =>
    new dashboard.QueryVariableBuilder(name)
      .label(label)
      .datasource(DS)
      .query({ query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 })
      .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
      .sort(dashboard.VariableSort.AlphabeticalAsc)
      .multi(true)
      .includeAll(true)
      .allValue('.*')
      .current({ selected: true, text: ['All'], value: ['$__all'] });
  const vars = [
    ds.build(),
    q('job', 'Job', `label_values({__name__=~"${opts.agentMetrics}"}, job)`).build(),
    q('instance', 'Instance', `label_values({__name__=~"${opts.agentMetrics}", job=~"$job"}, instance)`).build(),
  ];
  if (opts.port) {
    vars.push(q('netns', 'Network namespace', 'label_values(tcp_chrono_busy_seconds_total{job=~"$job", instance=~"$instance"}, netns)').build());
    vars.push(q('port', 'Port', 'label_values({__name__=~"tcp_chrono_busy_seconds_total|tcp_chrono_chunks_total", job=~"$job", instance=~"$instance", netns=~"$netns"}, port)').build());
  }
  return vars;
}

export interface DashboardOpts {
  uid: string;
  title: string;
  description: string;
  tags?: string[];
  port: boolean;
  /** Rows, each a title and its panels laid out left to right. */
  rows: { title: string; panels: cog.Builder<dashboard.Panel>[] }[];
}

/** Lays panels out left to right, wrapping at 24 columns, each row under a collapsible row header. */
export function buildDashboard(o: DashboardOpts): dashboard.Dashboard {
  const d = new dashboard.DashboardBuilder(o.title)
    .uid(o.uid)
    .description(o.description)
    .tags(['tcp-chronograph', ...(o.tags ?? [])])
    .editable()
    .tooltip(dashboard.DashboardCursorSync.Crosshair)
    .refresh('30s')
    .time({ from: 'now-1h', to: 'now' })
    .timezone('browser')
    .link(
      new dashboard.DashboardLinkBuilder('tcp-chronograph')
        .type(dashboard.DashboardLinkType.Dashboards)
        .tags(['tcp-chronograph'])
        .asDropdown(true)
        .includeVars(true)
        .keepTime(true),
    );
  // Every mode exports an info series: tcp_chrono_agent_info (watch, proxy with
  // --diag), tcp_chrono_proxy_info (proxy), tcp_chrono_attach_info (attach).
  for (const v of variables({ port: o.port, agentMetrics: 'tcp_chrono_agent_info|tcp_chrono_proxy_info|tcp_chrono_attach_info' })) {
    d.withVariable({ build: () => v });
  }
  let y = 0;
  for (const r of o.rows) {
    d.withRow(row(r.title).gridPos({ x: 0, y, w: 24, h: 1 }));
    y += 1;
    let x = 0;
    let rowH = 0;
    for (const p of r.panels) {
      const built = p.build();
      const w = built.gridPos?.w ?? 12;
      const h = built.gridPos?.h ?? 8;
      if (x + w > 24) {
        y += rowH;
        x = 0;
        rowH = 0;
      }
      d.withPanel({ build: () => ({ ...built, gridPos: { x, y, w, h } }) });
      x += w;
      rowH = Math.max(rowH, h);
    }
    y += rowH;
  }
  return d.build();
}
