// The rules pass promtool, every alert is unit-tested firing and not firing,
// and the Kubernetes PrometheusRule carries exactly the same groups.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { PROMETHEUS_RULE_FILE, RULES_FILE, RULES_TEST_FILE } from '../../dashboards/src/build.js';
import { loadRuleGroups, ROOT, rules } from './artifacts.js';

const promtool = (...args: string[]): string => execFileSync('promtool', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

interface UnitTests {
  rule_files: string[];
  tests: { name: string; alert_rule_test?: { eval_time: string; alertname: string; exp_alerts: unknown[] }[] }[];
}

describe('Prometheus rules', () => {
  const all = rules();
  const alerts = all.filter((r) => r.alert !== undefined);

  it('promtool check rules passes', () => {
    expect(promtool('check', 'rules', RULES_FILE)).toMatch(new RegExp(`SUCCESS: ${all.length} rules found`));
  });

  it('promtool test rules passes', () => {
    expect(promtool('test', 'rules', RULES_TEST_FILE)).toContain('SUCCESS');
  });

  it('every alert is tested both firing and not firing', () => {
    const doc = parse(readFileSync(join(ROOT, RULES_TEST_FILE), 'utf8')) as UnitTests;
    expect(doc.rule_files).toEqual(['tcp-chronograph.rules.yml']);
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? []);
    expect(alerts.length).toBeGreaterThanOrEqual(6);
    for (const a of alerts) {
      const mine = cases.filter((c) => c.alertname === a.alert);
      expect(mine.some((c) => c.exp_alerts.length > 0), `${a.alert} never tested firing`).toBe(true);
      expect(mine.some((c) => c.exp_alerts.length === 0), `${a.alert} never tested not firing`).toBe(true);
    }
    for (const c of cases) expect(alerts.map((a) => a.alert)).toContain(c.alertname);
  });

  it('every alert has a severity, a templated summary and a plain description that says what to try', () => {
    for (const a of alerts) {
      expect(['info', 'warning', 'critical']).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toMatch(/\{\{/);
      const d = a.annotations?.description ?? '';
      expect(d.length, a.alert).toBeGreaterThan(150);
      expect(d, `${a.alert}: descriptions are copied into the unit tests verbatim, keep them template-free`).not.toMatch(/\{\{/);
    }
  });

  it('recording rules follow level:metric:operation and aggregate away instances and connections', () => {
    for (const r of all.filter((r) => r.record !== undefined)) {
      expect(r.record).toMatch(/^namespace_job_port(_limit)?(_le)?:tcp_chrono_[a-z0-9_]+:[a-z0-9_]+$/);
      // Every aggregation keeps only service-level labels (bounded cardinality); netns and
      // pod_uid name a pod's namespace on a watch --netns agent's series, and are absent otherwise.
      for (const m of r.expr.matchAll(/\bby \(([^)]*)\)/g)) {
        for (const l of m[1]!.split(', ')) expect(['namespace', 'job', 'netns', 'pod_uid', 'port', 'limit', 'le'], `${r.record}: by (${m[1]})`).toContain(l);
      }
      expect(r.expr, r.record).not.toMatch(/\b(instance|pod|remote|pid|comm)\b/);
    }
  });

  it('deploy/kubernetes/prometheusrule.yaml carries the same groups', () => {
    const docs = parseAllDocuments(readFileSync(join(ROOT, PROMETHEUS_RULE_FILE), 'utf8'));
    expect(docs).toHaveLength(1);
    const pr = docs[0]!.toJS() as { kind: string; spec: { groups: unknown } };
    expect(pr.kind).toBe('PrometheusRule');
    expect(pr.spec.groups).toEqual(loadRuleGroups());
  });

  it('the example Prometheus configurations pass promtool check config', () => {
    // deploy/prometheus/prometheus.yml uses kubernetes_sd_configs, which Debian's promtool
    // is built without: it is parse-checked in deploy.test.ts instead.
    for (const f of ['dashboards/provisioning/prometheus/prometheus.yml', 'deploy/prometheus/federation.yml']) {
      expect(promtool('check', 'config', f)).toContain('is valid prometheus config file syntax');
    }
  });
});
