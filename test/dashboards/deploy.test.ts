// The Kubernetes and provisioning examples parse, and say what they mean:
// exactly the capabilities each mode needs, a metrics port that the
// PodMonitor and the annotations both find, flags the agent knows.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { CLI } from '../helpers/cli.js';
import { rules, ROOT } from './artifacts.js';

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(e) ? [p] : [];
  });
}

// Parsed manifests are checked field by field: loosely typed on purpose.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

function docs(file: string): Obj[] {
  const all = parseAllDocuments(readFileSync(join(ROOT, file), 'utf8'));
  for (const d of all) expect(d.errors, file).toEqual([]);
  return all.map((d) => d.toJS() as Obj).filter((d) => d !== null);
}

describe('deploy/ and dashboards/provisioning/ manifests', () => {
  const files = [...yamlFiles(join(ROOT, 'deploy')), ...yamlFiles(join(ROOT, 'dashboards/provisioning'))].map((f) => relative(ROOT, f));
  const k8s = files.filter((f) => f.startsWith('deploy/kubernetes/')).flatMap((f) => docs(f).map((d) => ({ file: f, doc: d })));
  const deployments = k8s.filter((x) => x.doc.kind === 'Deployment');
  let help: Record<string, string> = {};

  beforeAll(() => {
    for (const cmd of ['watch', 'proxy', 'attach']) help[cmd] = execFileSync('node', [CLI, cmd, '--help'], { encoding: 'utf8' });
  });

  it('every YAML file parses', () => {
    expect(files.length).toBeGreaterThanOrEqual(9);
    for (const f of files) expect(docs(f).length, f).toBeGreaterThan(0);
  });

  it('Kubernetes objects have apiVersion, kind and metadata.name', () => {
    for (const { file, doc } of k8s) {
      expect(doc.apiVersion, file).toBeTruthy();
      expect(doc.kind, file).toBeTruthy();
      expect(doc.metadata?.name, file).toMatch(/^[a-z0-9-]+$/);
    }
  });

  const agentOf = (d: Obj): Obj => (d.spec.template.spec.containers as Obj[]).find((c) => c.name === 'tcp-chronograph')!;
  /** The agent's command: its first argument, or the one a wrapper script execs. */
  const modeOf = (d: Obj): string => {
    const args = (agentOf(d).args as string[]).join(' ');
    return /tcp-chronograph (\w+)/.exec(args)?.[1] ?? args.split(' ')[0]!;
  };

  it('has a sidecar per mode, each with exactly the capabilities its mode needs', () => {
    const byMode = new Map(deployments.map((x) => [modeOf(x.doc), x.doc]));
    expect([...byMode.keys()].sort()).toEqual(['attach', 'proxy', 'watch']);
    // attach: pidfd_getfd (SYS_PTRACE) and listing another UID's /proc/PID/fd (DAC_READ_SEARCH), as root:
    // Kubernetes gives non-root containers no effective added capability.
    const expected: Record<string, string[]> = { watch: [], proxy: [], attach: ['SYS_PTRACE', 'DAC_READ_SEARCH'] };
    for (const [mode, d] of byMode) {
      const sc = agentOf(d).securityContext as Obj;
      expect(sc.capabilities.drop, mode).toEqual(['ALL']);
      expect(sc.capabilities.add ?? [], mode).toEqual(expected[mode]);
      expect(sc.allowPrivilegeEscalation, mode).toBe(false);
      expect(sc.privileged ?? false, mode).toBe(false);
      expect(sc.readOnlyRootFilesystem, mode).toBe(true);
      // Pod network namespace is shared by all containers; never the host's.
      expect(d.spec.template.spec.hostNetwork ?? false, mode).toBe(false);
      // Only attach needs to see the server's processes.
      expect(d.spec.template.spec.shareProcessNamespace ?? false, mode).toBe(mode === 'attach');
      expect(sc.runAsNonRoot, mode).toBe(mode !== 'attach');
      if (mode === 'attach') expect(d.spec.template.spec.terminationGracePeriodSeconds, 'time to detach').toBeGreaterThan(10);
    }
  });

  it('the agent listens on the port the annotations and the PodMonitor scrape', () => {
    const pm = k8s.find((x) => x.doc.kind === 'PodMonitor')!.doc;
    const endpointPort: string = pm.spec.podMetricsEndpoints[0].port;
    for (const { file, doc } of deployments) {
      const tpl = doc.spec.template;
      const agent = agentOf(doc);
      const port = (agent.ports as Obj[]).find((p) => p.name === endpointPort)!;
      expect(port as Obj | undefined, `${file}: no container port named ${endpointPort}`).toBeDefined();
      expect(tpl.metadata.annotations['prometheus.io/scrape']).toBe('true');
      expect(Number(tpl.metadata.annotations['prometheus.io/port']), file).toBe(port.containerPort);
      // The PodMonitor selects this pod, and takes job from a label the pod has.
      for (const [k, v] of Object.entries(pm.spec.selector.matchLabels as Record<string, string>)) expect(tpl.metadata.labels[k], file).toBe(v);
      expect(tpl.metadata.labels[pm.spec.jobLabel], file).toBeTruthy();
      // The metrics listen address (env) is the same port, on all interfaces.
      const env = Object.fromEntries((agent.env as Obj[]).map((e) => [e.name, e.value]));
      const listenVar: Record<string, string> = {
        watch: 'TCP_CHRONOGRAPH_LISTEN',
        proxy: 'TCP_CHRONOGRAPH_PROXY_METRICS_LISTEN',
        attach: 'TCP_CHRONOGRAPH_ATTACH_METRICS_LISTEN',
      };
      const listen = env[listenVar[modeOf(doc)]!];
      expect(listen, file).toBe(`0.0.0.0:${port.containerPort}`);
    }
  });

  it('every TCP_CHRONOGRAPH_* variable is one the mode documents in --help', () => {
    for (const { file, doc } of deployments) {
      const mode = modeOf(doc);
      for (const e of agentOf(doc).env as Obj[]) {
        if (!(e.name as string).startsWith('TCP_CHRONOGRAPH_')) continue; // the wrapper script's own
        expect(help[mode], `${file}: ${e.name}`).toContain(`env ${e.name}`);
      }
    }
  });

  it('the annotation scrape config keeps only the agent port and sets job to the service label', () => {
    const cfg = docs('deploy/prometheus/prometheus.yml')[0]!;
    const sc = cfg.scrape_configs[0] as Obj;
    expect(sc.kubernetes_sd_configs[0].role).toBe('pod');
    const rl = sc.relabel_configs as Obj[];
    expect(rl).toContainEqual({ source_labels: ['__meta_kubernetes_pod_container_port_name'], action: 'keep', regex: 'chrono-metrics' });
    expect(rl.find((r) => r.target_label === 'job')?.source_labels).toEqual(['__meta_kubernetes_pod_label_app_kubernetes_io_name']);
    expect(rl.find((r) => r.target_label === 'namespace')?.source_labels).toEqual(['__meta_kubernetes_namespace']);
    // The __address__ rewrite: pod IP with the annotated port.
    const addr = rl.find((r) => r.target_label === '__address__')!;
    const re = new RegExp(`^(?:${addr.regex as string})$`);
    expect('10.1.2.3:8080;9465'.replace(re, addr.replacement as string)).toBe('10.1.2.3:9465');
    expect('10.1.2.3;9465'.replace(re, addr.replacement as string)).toBe('10.1.2.3:9465');
  });

  it('remote-write and federation carry the rolled-up series, and only those', () => {
    const recorded = rules()
      .map((r) => r.record)
      .filter((r): r is string => r !== undefined);
    const cfg = docs('deploy/prometheus/prometheus.yml')[0]!;
    const drop = (cfg.remote_write[0].write_relabel_configs as Obj[]).find((r) => r.action === 'drop')!;
    const dropRe = new RegExp(`^(?:${drop.regex as string})$`);
    for (const r of recorded) expect(dropRe.test(r), r).toBe(false);
    expect(dropRe.test('tcp_chrono_connection_busy_seconds_total')).toBe(true);

    const fed = docs('deploy/prometheus/federation.yml')[0]!;
    const match: string = fed.scrape_configs[0].params['match[]'][0];
    const nameRe = new RegExp(`^(?:${/__name__=~"([^"]+)"/.exec(match)![1]!})$`);
    for (const r of recorded) expect(nameRe.test(r), r).toBe(true);
    expect(nameRe.test('tcp_chrono_connection_busy_seconds_total')).toBe(false);
  });

  it('Grafana provisioning: a Prometheus data source and a file provider', () => {
    const ds = parse(readFileSync(join(ROOT, 'dashboards/provisioning/grafana/datasources.yaml'), 'utf8')) as Obj;
    expect(ds.apiVersion).toBe(1);
    expect(ds.datasources[0]).toMatchObject({ type: 'prometheus', access: 'proxy' });
    const dp = parse(readFileSync(join(ROOT, 'dashboards/provisioning/grafana/dashboards.yaml'), 'utf8')) as Obj;
    expect(dp.providers[0]).toMatchObject({ type: 'file', options: { path: expect.any(String) } });
  });
});
