// Every Kubernetes object under deploy/ (the sidecars, the per-node DaemonSet
// with and without its opt-in trace container, the PodMonitors, the
// PrometheusRule), checked offline against the Kubernetes API:
//   - the OpenAPI schemas of Kubernetes 1.30+ and of the Prometheus Operator's
//     CRDs, compiled into kubernetes-models' classes (types, required fields,
//     enums, formats): Model.validate();
//   - unknown fields, which those validators let through and the API server
//     rejects (kubectl's strict field validation) or, worse, ignores: each
//     object is type-checked by TypeScript against the package's interfaces,
//     whose excess-property check names any misspelt key.
// Then what deploy/daemonset.yaml means: exactly the capabilities `watch
// --netns all` needs (test/deploy/capabilities.test.ts shows each is needed),
// the node's /run/netns, the port the PodMonitor scrapes, flags the agent knows.
// (The sidecars' meaning is checked in test/dashboards/deploy.test.ts.)
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import ts from 'typescript';
import { beforeAll, describe, expect, it } from 'vitest';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { Service } from 'kubernetes-models/v1/Service';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { CLI } from '../helpers/cli.js';
import { parseFlags } from '../../agent/cli/flags.js';
import { FLAGS as WATCH_FLAGS } from '../../agent/cli/watch.js';
import {
  DAEMONSET,
  DAEMONSET_PODMONITOR,
  ROOT,
  bytes,
  cores,
  docsOf,
  manifests,
  read,
  traceLines,
  withTrace,
  yamlFiles,
  type Manifest,
  type Obj,
} from './files.js';

interface Kind {
  validate: (doc: Obj) => void;
  /** module and interface for the TypeScript check */
  module: string;
  iface: string;
}

const KINDS: Record<string, Kind> = {
  'apps/v1 Deployment': { validate: (d) => new Deployment(d as never).validate(), module: 'kubernetes-models/apps/v1/Deployment', iface: 'IDeployment' },
  'apps/v1 DaemonSet': { validate: (d) => new DaemonSet(d as never).validate(), module: 'kubernetes-models/apps/v1/DaemonSet', iface: 'IDaemonSet' },
  'v1 Service': { validate: (d) => new Service(d as never).validate(), module: 'kubernetes-models/v1/Service', iface: 'IService' },
  'monitoring.coreos.com/v1 PodMonitor': {
    validate: (d) => new PodMonitor(d as never).validate(),
    module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor',
    iface: 'IPodMonitor',
  },
  'monitoring.coreos.com/v1 PrometheusRule': {
    validate: (d) => new PrometheusRule(d as never).validate(),
    module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule',
    iface: 'IPrometheusRule',
  },
};

const kindOf = (m: Manifest): string => `${m.doc.apiVersion as string} ${m.doc.kind as string}`;
const label = (m: Manifest): string => `${m.name}#${m.index} (${kindOf(m)} ${m.doc.metadata?.name as string})`;

/**
 * TypeScript diagnostics of `const x: IKind = <manifest>` for each manifest,
 * in a file that exists only in memory (beside this one, so that the
 * packages resolve as they do for the tests).
 */
function typeCheck(list: Manifest[]): string[] {
  const file = join(ROOT, 'test/deploy/__manifests_type_check__.ts');
  const imports = new Set<string>();
  const body: string[] = [];
  const starts: { pos: number; name: string }[] = [];
  list.forEach((m, i) => {
    const k = KINDS[kindOf(m)]!;
    imports.add(`import type { ${k.iface} } from '${k.module}';`);
    starts.push({ pos: body.join('\n').length, name: label(m) });
    body.push(`export const m${i}: ${k.iface} = ${JSON.stringify(m.doc, null, 1)};`);
  });
  const head = [...imports].join('\n') + '\n';
  const source = head + body.join('\n') + '\n';
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, lang, ...rest) => (name === file ? ts.createSourceFile(name, source, lang) : getSourceFile.call(host, name, lang, ...rest));
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const at = (d.start ?? 0) - head.length;
    const where = [...starts].reverse().find((s) => s.pos <= at)?.name ?? '(imports)';
    return `${where}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

describe('deploy/: every Kubernetes object against the API schemas', () => {
  const all = manifests();

  it('finds them all: the sidecars, the DaemonSet (with and without trace), both PodMonitors, the rules', () => {
    expect(yamlFiles()).toEqual(expect.arrayContaining([DAEMONSET, DAEMONSET_PODMONITOR, 'deploy/kubernetes/podmonitor.yaml', 'deploy/kubernetes/sidecar-watch.yaml']));
    const kinds = new Set(all.map(kindOf));
    expect([...kinds].sort()).toEqual(Object.keys(KINDS).sort());
    expect(all.filter((m) => m.doc.kind === 'DaemonSet')).toHaveLength(2);
    expect(all.filter((m) => m.doc.kind === 'PodMonitor').length).toBeGreaterThanOrEqual(2);
  });

  it('each validates against its schema', () => {
    const failures: string[] = [];
    for (const m of all) {
      const k = KINDS[kindOf(m)];
      if (k === undefined) {
        failures.push(`${label(m)}: no schema here for this kind (add it to KINDS)`);
        continue;
      }
      try {
        k.validate(m.doc);
      } catch (e) {
        failures.push(`${label(m)}: ${(e as Error).message}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('the schema check catches a wrong type (self-test)', () => {
    const ds = structuredClone(all.find((m) => m.doc.kind === 'DaemonSet')!.doc);
    ds.spec.template.spec.hostPID = 'yes';
    expect(() => KINDS['apps/v1 DaemonSet']!.validate(ds)).toThrow(/hostPID must be boolean/);
  });

  it('no object has a field the API does not know', () => {
    expect(typeCheck(all.filter((m) => KINDS[kindOf(m)] !== undefined))).toEqual([]);
  }, 60_000);

  it('the unknown-field check catches a misspelt key (self-test)', () => {
    const m = structuredClone(all.find((x) => x.doc.kind === 'DaemonSet')!);
    m.doc.spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem = true;
    const pm = structuredClone(all.find((x) => x.name === DAEMONSET_PODMONITOR)!);
    pm.doc.spec.podMetricsEndpoints[0].intervall = '15s';
    const errors = typeCheck([m, pm]);
    expect(errors.join('\n')).toMatch(/DaemonSet.*readOnlyRootFilesytem\W+ does not exist/);
    expect(errors.join('\n')).toMatch(/PodMonitor.*intervall\W+ does not exist/);
  }, 60_000);
});

describe('deploy/daemonset.yaml: one agent per node (watch --netns all)', () => {
  const base = docsOf(read(DAEMONSET), DAEMONSET);
  const traced = docsOf(withTrace(read(DAEMONSET)), `${DAEMONSET} (trace on)`);
  const ds = base.find((d) => d.kind === 'DaemonSet')!;
  const dsTrace = traced.find((d) => d.kind === 'DaemonSet')!;
  const pm = docsOf(read(DAEMONSET_PODMONITOR), DAEMONSET_PODMONITOR)[0]!;
  const sidecarPm = docsOf(read('deploy/kubernetes/podmonitor.yaml'), 'podmonitor.yaml')[0]!;
  const container = (d: Obj, name: string): Obj => (d.spec.template.spec.containers as Obj[]).find((c) => c.name === name)!;
  const envOf = (c: Obj): Record<string, string> => Object.fromEntries((c.env as Obj[]).map((e) => [e.name, e.value]));
  const portOf = (c: Obj, name: string): number => (c.ports as Obj[]).find((p) => p.name === name)!.containerPort as number;
  const help: Record<string, string> = {};

  beforeAll(() => {
    for (const cmd of ['watch', 'trace']) help[cmd] = execFileSync('node', [CLI, cmd, '--help'], { encoding: 'utf8' });
  });

  it('trace is opt-in: off as shipped, one container more with the "#T " lines uncommented', () => {
    expect(traceLines(read(DAEMONSET))).toBeGreaterThan(20);
    expect((ds.spec.template.spec.containers as Obj[]).map((c) => c.name)).toEqual(['tcp-chronograph']);
    expect((dsTrace.spec.template.spec.containers as Obj[]).map((c) => c.name)).toEqual(['tcp-chronograph', 'trace']);
    // Uncommenting leaves everything else as it was.
    const rest = structuredClone(dsTrace);
    rest.spec.template.spec.containers = rest.spec.template.spec.containers.filter((c: Obj) => c.name !== 'trace');
    rest.spec.template.spec.volumes = rest.spec.template.spec.volumes.filter((v: Obj) => v.name !== 'cgroup');
    expect(rest).toEqual(ds);
  });

  it('sees the node: host PID namespace, /run/netns read-only, and no other host path', () => {
    const spec = ds.spec.template.spec as Obj;
    expect(spec.hostPID).toBe(true);
    expect(spec.hostNetwork ?? false).toBe(false);
    expect(spec.hostIPC ?? false).toBe(false);
    expect(spec.automountServiceAccountToken).toBe(false);
    const agent = container(ds, 'tcp-chronograph');
    expect(agent.volumeMounts).toEqual([{ name: 'netns', mountPath: '/run/netns', readOnly: true, mountPropagation: 'HostToContainer' }]);
    expect(spec.volumes).toEqual([{ name: 'netns', hostPath: { path: '/run/netns', type: 'DirectoryOrCreate' } }]);
  });

  it('the agent: watch --netns all with exactly SYS_ADMIN, SYS_PTRACE and DAC_READ_SEARCH, as root, nothing else', () => {
    const agent = container(ds, 'tcp-chronograph');
    expect(agent.args).toEqual(['watch']);
    expect(envOf(agent).TCP_CHRONOGRAPH_NETNS).toBe('all');
    const sc = agent.securityContext as Obj;
    expect(sc.capabilities.drop).toEqual(['ALL']);
    expect([...(sc.capabilities.add as string[])].sort()).toEqual(['DAC_READ_SEARCH', 'SYS_ADMIN', 'SYS_PTRACE']);
    // Kubernetes sets no ambient capabilities: added ones are effective for UID 0 only.
    expect(sc.runAsUser).toBe(0);
    expect(sc.runAsNonRoot).toBe(false);
    expect(sc.privileged ?? false).toBe(false);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    // Owners on need DAC_READ_SEARCH; the manifest says so explicitly.
    expect(envOf(agent).TCP_CHRONOGRAPH_OWNERS).toBe('on');
    // Its variables are values watch takes (as root: watch does not refuse it), pod and container labels included.
    const { values } = parseFlags('watch', WATCH_FLAGS, [], envOf(agent), 0);
    expect(values.netns).toEqual(['all']);
    expect(values.netnsLabels).toEqual(['pod_uid', 'container_id']);
  });

  it('the trace container: exactly BPF, NET_ADMIN, PERFMON and SYS_ADMIN, the node cgroup tree read-only, its own port', () => {
    const trace = container(dsTrace, 'trace');
    expect(trace.args).toEqual(['trace']);
    const sc = trace.securityContext as Obj;
    expect(sc.capabilities.drop).toEqual(['ALL']);
    expect([...(sc.capabilities.add as string[])].sort()).toEqual(['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_ADMIN']);
    expect(sc).toMatchObject({ runAsUser: 0, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(sc.privileged ?? false).toBe(false);
    const env = envOf(trace);
    const mount = (trace.volumeMounts as Obj[]).find((v) => v.name === 'cgroup')!;
    expect(mount).toMatchObject({ readOnly: true });
    expect(env.TCP_CHRONOGRAPH_TRACE_CGROUP!.startsWith(mount.mountPath as string)).toBe(true);
    expect((dsTrace.spec.template.spec.volumes as Obj[]).find((v) => v.name === 'cgroup')!.hostPath.path).toBe('/sys/fs/cgroup');
    // sock_diag in this pod's namespace only would be beside the point: watch covers every namespace.
    expect(env.TCP_CHRONOGRAPH_TRACE_DIAG).toBe('off');
    expect(env.TCP_CHRONOGRAPH_TRACE_LISTEN).toBe(`0.0.0.0:${portOf(trace, 'chrono-trace')}`);
    // One network namespace for both containers: distinct ports.
    expect(portOf(trace, 'chrono-trace')).not.toBe(portOf(container(dsTrace, 'tcp-chronograph'), 'chrono-metrics'));
  });

  it('every TCP_CHRONOGRAPH_* variable is one the mode documents in --help', () => {
    for (const [name, mode] of [['tcp-chronograph', 'watch'], ['trace', 'trace']] as const) {
      for (const e of container(dsTrace, name).env as Obj[]) expect(help[mode], `${name}: ${e.name}`).toContain(`env ${e.name}`);
    }
  });

  it('health on /healthz, metrics on the port the PodMonitor and the annotations scrape', () => {
    for (const [name, port] of [['tcp-chronograph', 'chrono-metrics'], ['trace', 'chrono-trace']] as const) {
      const c = container(dsTrace, name);
      for (const probe of [c.readinessProbe, c.livenessProbe] as Obj[]) expect(probe.httpGet).toEqual({ path: '/healthz', port });
      expect((pm.spec.podMetricsEndpoints as Obj[]).map((e) => e.port)).toContain(port);
    }
    const agent = container(ds, 'tcp-chronograph');
    const port = portOf(agent, 'chrono-metrics');
    expect(envOf(agent).TCP_CHRONOGRAPH_LISTEN).toBe(`0.0.0.0:${port}`);
    const tpl = ds.spec.template.metadata as Obj;
    expect(tpl.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' });
    for (const e of pm.spec.podMetricsEndpoints as Obj[]) {
      expect(e.path).toBe('/metrics');
      expect(e.relabelings).toContainEqual({ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' });
    }
  });

  it('its PodMonitor selects these pods and no sidecar; the sidecars\' PodMonitor does not select these', () => {
    const labels = ds.spec.template.metadata.labels as Record<string, string>;
    const selects = (sel: Record<string, string>, l: Record<string, string>): boolean => Object.entries(sel).every(([k, v]) => l[k] === v);
    expect(selects(pm.spec.selector.matchLabels, labels)).toBe(true);
    expect(selects(ds.spec.selector.matchLabels, labels)).toBe(true);
    expect(labels[pm.spec.jobLabel as string]).toBeTruthy();
    expect(selects(sidecarPm.spec.selector.matchLabels, labels)).toBe(false);
    for (const f of yamlFiles().filter((x) => x.startsWith('deploy/kubernetes/sidecar-'))) {
      for (const d of docsOf(read(f), f).filter((x) => x.kind === 'Deployment')) expect(selects(pm.spec.selector.matchLabels, d.spec.template.metadata.labels), f).toBe(false);
    }
    // Same namespace as the DaemonSet: no namespaceSelector.
    expect(pm.spec.namespaceSelector).toBeUndefined();
  });

  it('resources follow the measured figures (docs/costs.md, docs/reliability.md)', () => {
    const r = container(ds, 'tcp-chronograph').resources as Obj;
    const MiB = 1024 ** 2;
    const IDLE_RSS = 70 * MiB; // docs/reliability.md: 65 MiB at start
    const PER_CONNECTION = 1.9 * 1024; // docs/costs.md: heap per tracked connection
    const PEAK = 238 * MiB; // docs/reliability.md: churn, 100 000 short connections, before settling
    expect(bytes(r.requests.memory)).toBeGreaterThanOrEqual(IDLE_RSS + 20_000 * PER_CONNECTION);
    expect(bytes(r.limits.memory)).toBeGreaterThanOrEqual(2 * PEAK);
    expect(bytes(r.limits.memory)).toBeGreaterThan(bytes(r.requests.memory));
    expect(cores(r.requests.cpu)).toBeGreaterThanOrEqual(0.05);
    // A CPU limit would throttle polls into missed slots.
    expect(r.limits.cpu).toBeUndefined();
    const t = container(dsTrace, 'trace').resources as Obj;
    // The agent and its kernel maps (65 536 × 416-byte entries, preallocated, plus the 4 MiB ring).
    expect(bytes(t.requests.memory)).toBeGreaterThanOrEqual(IDLE_RSS + 65_536 * 416 + 4 * MiB);
    expect(t.limits.cpu).toBeUndefined();
  });
});
