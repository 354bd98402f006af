// agent/model/cgroup_path.ts on the cgroup paths kubelet and the container
// runtimes write (shapes as found on nodes and in the runtimes' sources:
// kubelet's cgroup_manager_linux.go, containerd's and CRI-O's systemd
// scopes, docker, podman, kind), and /proc/PID/cgroup as v1, v2 and hybrid
// hosts print it.
import { describe, expect, it } from 'vitest';
import { parseCgroupPath, parseProcCgroup } from '../../agent/model/cgroup_path.js';

const UID = '6b7f2a34-9c1d-4e8b-a0f5-1d2c3b4a5e6f';
const UID_ = UID.replace(/-/g, '_');
const STATIC_UID = '0e6f5a3c8b2d4f1a9e7c6b5a4d3c2b1a'; // a static pod's: a hash, no dashes
const ID = 'a3f1c2d4e5b60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';
const ID2 = 'ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100';

describe('parseCgroupPath', () => {
  it.each([
    // systemd driver, containerd
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${ID}.scope`, { podUid: UID, containerId: ID, runtime: 'containerd' }],
    [`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${ID}.scope`, { podUid: UID, containerId: ID, runtime: 'containerd' }],
    // Guaranteed QoS: the pod right under kubepods.slice
    [`/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope`, { podUid: UID, containerId: ID, runtime: 'containerd' }],
    // CRI-O, and CRI-O's conmon (not a container) beside it
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${ID}.scope`, { podUid: UID, containerId: ID, runtime: 'cri-o' }],
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-conmon-${ID}.scope`, { podUid: UID }],
    // CRI-O with a container that runs systemd (its processes one level down)
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${ID}.scope/container`, { podUid: UID, containerId: ID, runtime: 'cri-o' }],
    // cri-dockerd
    [`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/docker-${ID}.scope`, { podUid: UID, containerId: ID, runtime: 'docker' }],
    // a static pod (UID: a hash)
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${STATIC_UID}.slice/cri-containerd-${ID}.scope`, { podUid: STATIC_UID, containerId: ID, runtime: 'containerd' }],
    // cgroupfs driver: containerd (a bare ID), CRI-O, Guaranteed
    [`/kubepods/burstable/pod${UID}/${ID}`, { podUid: UID, containerId: ID }],
    [`/kubepods/besteffort/pod${UID}/crio-${ID}`, { podUid: UID, containerId: ID, runtime: 'cri-o' }],
    [`/kubepods/pod${UID}/${ID}`, { podUid: UID, containerId: ID }],
    // a process of the pod's own cgroup: in no container
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`, { podUid: UID }],
    [`/kubepods/burstable/pod${UID}`, { podUid: UID }],
    // the pod's QoS slices alone
    ['/kubepods.slice/kubepods-burstable.slice', {}],
    // kind: Kubernetes in a Docker container (the node's own ID outside the pod is not the container)
    [`/docker/${ID2}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice/cri-containerd-${ID}.scope`, { podUid: UID, containerId: ID, runtime: 'containerd' }],
    [`/docker/${ID2}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice`, { podUid: UID }],
    // seen from inside a cgroup namespace (the agent's own pod): relative to its root
    [`/../../kubepods-besteffort-pod${UID_}.slice/cri-containerd-${ID}.scope`, { podUid: UID, containerId: ID, runtime: 'containerd' }],
    // outside Kubernetes
    [`/system.slice/docker-${ID}.scope`, { containerId: ID, runtime: 'docker' }],
    [`/docker/${ID}`, { containerId: ID, runtime: 'docker' }],
    [`/machine.slice/libpod-${ID}.scope`, { containerId: ID, runtime: 'podman' }],
    [`/machine.slice/libpod-${ID}.scope/container`, { containerId: ID, runtime: 'podman' }],
    [`/machine.slice/libpod-conmon-${ID}.scope`, {}],
    [`/libpod_parent/libpod-${ID}`, { containerId: ID, runtime: 'podman' }],
    [`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope`, { containerId: ID, runtime: 'podman' }],
    [`/system.slice/containerd.service/default/${ID}`, { containerId: ID }],
    // no pod, no container
    ['/', {}],
    ['', {}],
    ['/user.slice/user-1000.slice/session-3.scope', {}],
    ['/system.slice/kubelet.service', {}],
    ['/init.scope', {}],
    ['/process_api/ceebfb6355f13e713914d7b5a5328021', {}],
    // look-alikes: a pod directory outside kubepods, a short or upper-case ID, a malformed UID
    [`/somewhere/pod${UID}/${ID}`, { containerId: ID }],
    [`/system.slice/docker-${ID.slice(0, 12)}.scope`, {}],
    [`/system.slice/docker-${ID.toUpperCase()}.scope`, {}],
    ['/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnot_a_uid.slice', {}],
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_.slice(0, 30)}.slice`, {}],
  ])('%s', (path, want) => {
    expect(parseCgroupPath(path)).toEqual(want);
  });
});

describe('parseProcCgroup', () => {
  it('cgroup v2 only', () => {
    expect(parseProcCgroup(`0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${ID}.scope\n`)).toEqual({ podUid: UID, containerId: ID, runtime: 'containerd' });
  });

  it('cgroup v1 (cgroupfs driver): every controller names the same place', () => {
    const lines = ['12:pids', '11:memory', '10:cpu,cpuacct', '9:devices', '1:name=systemd'].map((c) => `${c}:/kubepods/burstable/pod${UID}/${ID}`);
    expect(parseProcCgroup(lines.join('\n') + '\n')).toEqual({ podUid: UID, containerId: ID });
  });

  it('hybrid: the v2 line first, then name=systemd, then the other controllers', () => {
    const text = [
      `12:memory:/kubepods/burstable/pod${UID}/${ID2}`,
      `1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${ID}.scope`,
      '0::/',
    ].join('\n');
    // 0::/ names nothing: name=systemd next
    expect(parseProcCgroup(text)).toEqual({ podUid: UID, containerId: ID, runtime: 'containerd' });
    expect(parseProcCgroup(`${text}\n0::/system.slice/docker-${ID2}.scope`)).toEqual({ containerId: ID2, runtime: 'docker' });
  });

  it('this machine kind of host: nothing', () => {
    expect(parseProcCgroup('9:name=systemd:/\n4:memory:/process_api/ceebfb6355f13e713914d7b5a5328021\n1:cpu:/\n0::/\n')).toEqual({});
  });

  it('empty or malformed text', () => {
    expect(parseProcCgroup('')).toEqual({});
    expect(parseProcCgroup('garbage\n::\n')).toEqual({});
  });

  it('a path with a colon in it is kept whole', () => {
    expect(parseProcCgroup(`0::/odd:dir/docker-${ID}.scope`)).toEqual({ containerId: ID, runtime: 'docker' });
  });
});
