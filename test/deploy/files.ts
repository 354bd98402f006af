// The deployment files of deploy/, read the way the tests need them: every
// YAML document (Kubernetes objects apart), and the DaemonSet with its opt-in
// trace container switched on.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEPLOY = join(ROOT, 'deploy');

// Parsed manifests are checked field by field: loosely typed on purpose.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;

/** Every .yaml/.yml under dir, relative to the repository's root. */
export function yamlFiles(dir: string = DEPLOY): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((e) => {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) return yamlFiles(p);
      return /\.ya?ml$/.test(e) ? [relative(ROOT, p)] : [];
    });
}

export function read(file: string): string {
  return readFileSync(join(ROOT, file), 'utf8');
}

/** The documents of a YAML text; throws on a parse error. */
export function docsOf(text: string, name: string): Obj[] {
  return parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${name}: ${d.errors.map((e) => e.message).join('; ')}`);
      return d.toJS() as Obj | null;
    })
    .filter((d): d is Obj => d !== null);
}

/** A Kubernetes object: a string apiVersion and kind (Prometheus and Grafana configs are not). */
export function isK8s(doc: Obj): boolean {
  return typeof doc.apiVersion === 'string' && typeof doc.kind === 'string';
}

export interface Manifest {
  /** file, or file + " (trace on)" for the DaemonSet with its trace lines uncommented */
  name: string;
  index: number;
  doc: Obj;
}

export const DAEMONSET = 'deploy/daemonset.yaml';
export const DAEMONSET_PODMONITOR = 'deploy/podmonitor-daemonset.yaml';

/** The opt-in lines of deploy/daemonset.yaml start with "#T " after their indentation. */
const TRACE_LINE = /^(\s*)#T /gm;

/** deploy/daemonset.yaml as its comments say to enable trace: sed 's/^\( *\)#T /\1/'. */
export function withTrace(text: string): string {
  return text.replace(TRACE_LINE, '$1');
}

export function traceLines(text: string): number {
  return text.match(TRACE_LINE)?.length ?? 0;
}

/** Every Kubernetes object under deploy/, plus the DaemonSet with trace on. */
export function manifests(): Manifest[] {
  const out: Manifest[] = [];
  const add = (name: string, text: string): void => {
    docsOf(text, name).forEach((doc, index) => {
      if (isK8s(doc)) out.push({ name, index, doc });
    });
  };
  for (const f of yamlFiles()) add(f, read(f));
  add(`${DAEMONSET} (trace on)`, withTrace(read(DAEMONSET)));
  return out;
}

/** Kubernetes quantity → bytes (Mi, Gi, Ki, M, G, k, plain). */
export function bytes(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  if (m === null) throw new Error(`not a memory quantity: ${q}`);
  const unit: Record<string, number> = { '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 };
  return Number(m[1]) * unit[m[2] ?? '']!;
}

/** Kubernetes CPU quantity → cores. */
export function cores(q: string | number): number {
  const s = String(q);
  return s.endsWith('m') ? Number(s.slice(0, -1)) / 1000 : Number(s);
}
