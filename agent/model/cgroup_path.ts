// Which pod and container a process belongs to, read from its cgroup path
// (/proc/PID/cgroup): the kubelet names a pod's cgroup after the pod's UID,
// and the container runtimes name a container's after its ID. Pure
// functions over the text, so they are tested on the path shapes found in
// the wild (test/watch/cgroup_path.test.ts); reading the file is the
// caller's (agent/model/owners.ts, agent/sources/netns.ts).
//
// The shapes:
//   systemd cgroup driver (cgroup v2 and v1, the default of kubeadm since 1.22):
//     /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/cri-containerd-<id>.scope
//     (crio-<id>.scope under CRI-O, docker-<id>.scope under cri-dockerd; Guaranteed
//     pods sit right under kubepods.slice: kubepods-pod<uid>.slice)
//   cgroupfs driver: /kubepods/burstable/pod<uid>/<id> (CRI-O: crio-<id>)
//   outside Kubernetes: /system.slice/docker-<id>.scope, /docker/<id>,
//     /machine.slice/libpod-<id>.scope (podman), /libpod_parent/libpod-<id>
//   nested (kind: Kubernetes in Docker): /docker/<node>/kubelet.slice/kubelet-kubepods.slice/…-pod<uid>.slice/cri-containerd-<id>.scope
//   seen from inside a cgroup namespace, relative to its root: /../../kubepods-…
// The innermost pod and container win; a container is only taken below the
// pod when there is one (a process of a pod's own cgroup is in no container,
// whatever node container holds the pod). Conmon's own scopes
// (crio-conmon-<id>, libpod-conmon-<id>) are not containers.

/** Who named the container's cgroup (undefined: a bare ID, as the cgroupfs driver writes it). */
export type ContainerRuntime = 'containerd' | 'cri-o' | 'docker' | 'podman';

export interface CgroupIdentity {
  /** The Kubernetes pod UID, with dashes (as `kubectl get pod -o jsonpath='{.metadata.uid}'` prints it). */
  podUid?: string;
  /** The container ID, 64 hex digits (as `crictl ps`, `docker ps --no-trunc` print it). */
  containerId?: string;
  runtime?: ContainerRuntime;
}

const HEX64 = /^[0-9a-f]{64}$/;
/** A runtime's prefix before the ID, in a systemd scope or a cgroupfs directory. */
const PREFIXED = /^(cri-containerd|crio|docker|libpod)-([0-9a-f]{64})(?:\.scope)?$/;
const RUNTIMES: Record<string, ContainerRuntime> = { 'cri-containerd': 'containerd', crio: 'cri-o', docker: 'docker', libpod: 'podman' };
/**
 * systemd driver: `<prefix>-pod<uid>.slice`, the prefix naming the QoS class
 * (`kubepods-burstable`, `kubepods-besteffort`, `kubepods` for Guaranteed;
 * `kubelet-kubepods-…` under kind). The UID's dashes are underscores
 * (systemd reads a dash as a slice separator). A static pod's UID is the
 * 32 hex digits of a hash, without dashes.
 */
const SYSTEMD_POD = /^(?:[a-z0-9_-]*-)?kubepods(?:-[a-z]+)*-pod([0-9a-f_]{32,36})\.slice$/;
/** cgroupfs driver: `pod<uid>` below a `kubepods` directory. */
const CGROUPFS_POD = /^pod([0-9a-f-]{32,36})$/;

/** The pod and container named by one cgroup path (absolute, or relative to a cgroup namespace's root). */
export function parseCgroupPath(path: string): CgroupIdentity {
  const segments = path.split('/').filter((s) => s !== '' && s !== '.' && s !== '..');
  let podAt = -1;
  let podUid: string | undefined;
  let underKubepods = false;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === 'kubepods' || s.startsWith('kubepods.') || s.startsWith('kubepods-')) underKubepods = true;
    const m = SYSTEMD_POD.exec(s) ?? (underKubepods ? CGROUPFS_POD.exec(s) : null);
    if (m !== null && validUid(m[1]!.replace(/_/g, '-'))) {
      podUid = m[1]!.replace(/_/g, '-');
      podAt = i;
    }
  }
  let containerId: string | undefined;
  let runtime: ContainerRuntime | undefined;
  for (let i = segments.length - 1; i > podAt; i--) {
    const s = segments[i]!;
    const m = PREFIXED.exec(s);
    if (m !== null) {
      containerId = m[2]!;
      runtime = RUNTIMES[m[1]!];
      break;
    }
    if (HEX64.test(s)) {
      containerId = s;
      // /docker/<id> (cgroupfs, outside Kubernetes) says who; below a pod, the kubelet's cgroupfs driver does not.
      if (segments[i - 1] === 'docker' && podAt < 0) runtime = 'docker';
      break;
    }
  }
  return { ...(podUid !== undefined && { podUid }), ...(containerId !== undefined && { containerId }), ...(runtime !== undefined && { runtime }) };
}

/** A UID as the kubelet writes it: 8-4-4-4-12 hex digits, or (a static pod's) 32 hex digits. */
function validUid(uid: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(uid) || /^[0-9a-f]{32}$/.test(uid);
}

/**
 * The pod and container of a process, from the text of /proc/PID/cgroup:
 * its cgroup v2 line (`0::PATH`) first, then the v1 lines (`N:controllers:PATH`,
 * name=systemd first), the first that names either. Empty if none does.
 */
export function parseProcCgroup(text: string): CgroupIdentity {
  const v2: string[] = [];
  const systemd: string[] = [];
  const v1: string[] = [];
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (line.slice(0, first) === '0' && controllers === '') v2.push(path);
    else if (controllers === 'name=systemd') systemd.push(path);
    else v1.push(path);
  }
  for (const path of [...v2, ...systemd, ...v1]) {
    const id = parseCgroupPath(path);
    if (id.podUid !== undefined || id.containerId !== undefined) return id;
  }
  return {};
}
