"""The kube-controller-manager and kubelet stand-in: workloads get Pods, Pods become Ready.

Deployments, StatefulSets (stable ordinal names, OrderedReady or Parallel,
PVCs from `volumeClaimTemplates` that outlive their pods) and DaemonSets
(one node, so one pod) get Pods owned by them; a deleted Pod is recreated by
the next pass. Every Pod gets its own loopback address (`127.a.b.c`, one
`127.a.b.0/24` per sandbox) that is reachable from the host like a cluster's
pod network; a StatefulSet pod keeps its address across restarts, which
stands in for its stable DNS name. A Pod is Ready after `ready_seconds`,
unless its workload is in the failing set (then its container crash-loops
and a Deployment passes its progress deadline), or a `Runtime` owns the Pod
(the Vault pods: real processes whose own health decides readiness).

On the real control plane (`kubelet_only`) kube-controller-manager owns the
workloads and kube-scheduler binds the pods; what is left here is the
kubelet's part and K3s's local-path provisioner's: a Node that reports
Ready and renews its Lease in `kube-node-lease` like a kubelet's heartbeat,
status for the pods bound to it, the final delete of a pod whose deletion
was asked for (once its process stopped), and a PersistentVolume (a
directory of the sandbox) for every claim waiting for one, deleted with its
data when the claim is released.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from dr import files
from dr.sandbox import kube, loop, store


@dataclass
class Container:
    """What the kubelet reports of a Pod's one container."""

    ready: bool
    running: bool = True
    restarts: int = 0
    last_exit: int | None = None
    waiting_reason: str = ""
    labels: dict[str, str] | None = None  # labels the workload sets on its own pod (Vault's service registration)
    exit_code: int | None = None  # the container finished for good (restartPolicy Never): the pod's phase follows


class Runtime(Protocol):
    """Something that really runs the Pods it claims (instead of the timer)."""

    def claims(self, pod: dict[str, Any]) -> bool: ...

    def ensure(self, pod: dict[str, Any], volumes: dict[str, Path], peers: list[str]) -> Container: ...

    def release(self, namespace: str, name: str) -> None: ...

    def stop_all(self) -> None: ...


class Network:
    """Pod addresses: one loopback /24 per sandbox, sticky per StatefulSet pod, persisted in the sandbox dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            saved = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            saved = {"prefix": f"127.{64 + secrets.randbelow(180)}.{secrets.randbelow(250)}", "pods": {}}
        self.prefix: str = saved["prefix"]
        self.pods: dict[str, str] = saved["pods"]
        self._save()

    def _save(self) -> None:
        files.write_atomic(self.path, json.dumps({"prefix": self.prefix, "pods": self.pods}).encode())

    def address(self, key: str) -> str:
        with self.lock:
            if key not in self.pods:
                used = set(self.pods.values())
                free = next(f"{self.prefix}.{i}" for i in range(2, 255) if f"{self.prefix}.{i}" not in used)
                self.pods[key] = free
                self._save()
            return self.pods[key]

    def release(self, key: str) -> None:
        with self.lock:
            if self.pods.pop(key, None) is not None:
                self._save()


NODE = "sandbox"
HEARTBEAT_SECONDS = 10.0
PROVISIONER = "dr.dev/sandbox-local-path"


def _since(obj: dict[str, Any], kind: str, stamp: str) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("lastTransitionTime") or stamp)
    return stamp


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned_by(pod: dict[str, Any], uid: str) -> bool:
    return any(o.get("uid") == uid for o in pod["metadata"].get("ownerReferences") or [])


def _condition(kind: str, ok: bool, stamp: str, reason: str = "", message: str = "") -> dict[str, Any]:
    cond = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": stamp}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


class Workloads(loop.Controller):
    name = "workloads"
    watches = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("v1", "Pod"))
    resync = 0.5

    def __init__(
        self,
        api: kube.Kube,
        stop: threading.Event,
        *,
        network: Network,
        volumes: Path,
        ready_seconds: Callable[[], float],
        failing: Callable[[], set[str]],
        runtimes: list[Runtime],
        kubelet_only: bool = False,
    ) -> None:
        super().__init__(api, stop)
        self.kubelet_only = kubelet_only
        self.heartbeat_at = 0.0
        self.network, self.volumes = network, volumes
        self.ready_seconds, self.failing = ready_seconds, failing
        self.runtimes = runtimes
        self.first_seen: dict[str, float] = {}  # pod uid → when this process first saw it (readiness delay)
        self.unavailable_since: dict[str, float] = {}  # deployment uid → when it lost availability
        self.restarts: dict[str, int] = {}
        self.known_pods: set[tuple[str, str]] = set()

    # -- the pass -------------------------------------------------------------------------

    def reconcile(self) -> None:
        if self.kubelet_only:
            self._kubelet()
            return
        pods = self.kube.list("v1", "Pod")
        claims = {
            (c["metadata"]["namespace"], c["metadata"]["name"]): c
            for c in self.kube.list("v1", "PersistentVolumeClaim")
        }
        self._bind_claims(claims)
        kinds = {"Deployment": self._deployment, "StatefulSet": self._statefulset, "DaemonSet": self._daemonset}
        for kind, handle in kinds.items():
            for workload in self.kube.list("apps/v1", kind):
                if workload["metadata"].get("deletionTimestamp"):
                    continue
                handle(workload, [p for p in pods if _owned_by(p, workload["metadata"]["uid"])], claims)
        self._forget_gone(pods)
        self._delete_released_volumes()

    # -- the kubelet's and the provisioner's part on the real control plane ---------------------

    def _kubelet(self) -> None:
        if time.monotonic() - self.heartbeat_at >= HEARTBEAT_SECONDS:
            self._heartbeat()
        pods = self.kube.list("v1", "Pod")
        claims = {
            (c["metadata"]["namespace"], c["metadata"]["name"]): c
            for c in self.kube.list("v1", "PersistentVolumeClaim")
        }
        self._provision(claims)
        owners = self._owners()
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") != NODE:
                continue
            try:
                if pod["metadata"].get("deletionTimestamp"):
                    self._finish_deletion(pod)
                else:
                    self._update_pod(self._top_owner(pod, owners), pod)
            except kube.KubeError as exc:  # one pod the API refuses must not hold up every other pod's status
                self.errors += 1
                loop.log.warning("workloads: pod %s/%s: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], exc)
        self._forget_gone(pods)
        self._delete_released_volumes()

    def _heartbeat(self) -> None:
        """Register the Node, report it Ready and renew its Lease, as a kubelet does every 10 s."""
        stamp = store.now()
        node = self.kube.get("v1", "Node", None, NODE)
        if node is None:
            labels = {
                "kubernetes.io/hostname": NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": "true",
            }
            node = self.kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": labels}})
        resources = {"cpu": "8", "memory": "32Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        conditions = [
            {
                "type": kind,
                "status": "True" if kind == "Ready" else "False",
                "reason": reason,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": _since(node, kind, stamp),
            }
            for kind, reason in (
                ("Ready", "KubeletReady"),
                ("MemoryPressure", "KubeletHasSufficientMemory"),
                ("DiskPressure", "KubeletHasNoDiskPressure"),
                ("PIDPressure", "KubeletHasSufficientPID"),
            )
        ]
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
            "nodeInfo": {"kubeletVersion": "dr-sandbox", "operatingSystem": "linux", "architecture": "amd64"},
        }
        self.kube.patch(node, {"status": status}, status=True)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NODE, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": _micro_now()},
        }
        self.kube.apply(lease, "dr-sandbox-node")
        self.heartbeat_at = time.monotonic()

    def _provision(self, claims: dict[tuple[str, str], dict[str, Any]]) -> None:
        """K3s's local-path provisioner: a PersistentVolume on a sandbox directory, bound to the waiting claim."""
        for claim in claims.values():
            meta, spec = claim["metadata"], claim.get("spec") or {}
            if spec.get("volumeName") or meta.get("deletionTimestamp"):
                continue
            path = self.volume(meta["namespace"], meta["name"])
            path.mkdir(parents=True, exist_ok=True)
            volume = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": f"pvc-{meta['uid']}",
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                    "labels": {"dr.dev/claim-namespace": meta["namespace"]},
                },
                "spec": {
                    "capacity": {
                        "storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
                    },
                    "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.get("storageClassName") or "",
                    "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            with contextlib.suppress(kube.KubeError):  # made by an earlier pass; the PV controller binds it
                self.kube.create(volume)
        for pv in self.kube.list("v1", "PersistentVolume"):
            ours = (pv["metadata"].get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
            if ours and (pv.get("status") or {}).get("phase") in ("Released", "Failed"):
                self.kube.delete(pv)  # reclaim policy Delete; the directory goes with its claim below

    def _owners(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for kind in ("ReplicaSet", "Deployment", "StatefulSet", "DaemonSet"):
            for obj in self.kube.list("apps/v1", kind):
                found[obj["metadata"]["uid"]] = obj
        return found

    @staticmethod
    def _top_owner(obj: dict[str, Any], owners: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The workload a pod belongs to (a Deployment through its ReplicaSet); the pod itself when none."""
        for _ in range(3):
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]
            if not refs or refs[0]["uid"] not in owners:
                return obj
            obj = owners[refs[0]["uid"]]
        return obj

    def _finish_deletion(self, pod: dict[str, Any]) -> None:
        """The kubelet's half of a pod's deletion: stop its process, then remove it for good."""
        meta = pod["metadata"]
        for runtime in self.runtimes:
            runtime.release(meta["namespace"], meta["name"])
        try:
            self.kube.request(
                "DELETE",
                self.kube.path("v1", "Pod", meta["namespace"], meta["name"]),
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
        except kube.KubeError as exc:
            if exc.code not in (404, 409):  # gone already, or a new pod of the same name
                raise

    def _bind_claims(self, claims: dict[tuple[str, str], dict[str, Any]]) -> None:
        """K3s's local-path provisioner: every claim binds to a directory under the sandbox dir."""
        for claim in claims.values():
            if (claim.get("status") or {}).get("phase") != "Bound" and not claim["metadata"].get("deletionTimestamp"):
                self.volume(claim["metadata"]["namespace"], claim["metadata"]["name"]).mkdir(
                    parents=True, exist_ok=True
                )
                spec = claim.get("spec") or {}
                self.kube.patch(
                    claim,
                    {
                        "status": {
                            "phase": "Bound",
                            "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                            "capacity": {
                                "storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
                            },
                        }
                    },
                    status=True,
                )

    def volume(self, namespace: str, claim: str) -> Path:
        return self.volumes / namespace / claim

    def _delete_released_volumes(self) -> None:
        """A deleted claim's data goes with it (local-path's reclaim policy is Delete)."""
        if not self.volumes.exists():
            return
        # Listed again: a claim made during this pass may already have a directory.
        claims = {
            (c["metadata"]["namespace"], c["metadata"]["name"]) for c in self.kube.list("v1", "PersistentVolumeClaim")
        }
        for ns_dir in self.volumes.iterdir():
            for claim_dir in ns_dir.iterdir():
                if (ns_dir.name, claim_dir.name) not in claims:
                    shutil.rmtree(claim_dir, ignore_errors=True)

    def _forget_gone(self, pods: list[dict[str, Any]]) -> None:
        live = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
        for namespace, name in self.known_pods - live:
            for runtime in self.runtimes:
                runtime.release(namespace, name)
            if not self._sticky(namespace, name):
                self.network.release(f"{namespace}/{name}")
        self.known_pods = live

    def _sticky(self, namespace: str, name: str) -> bool:
        base, _, ordinal = name.rpartition("-")
        return ordinal.isdigit() and self.kube.get("apps/v1", "StatefulSet", namespace, base) is not None

    # -- per kind ---------------------------------------------------------------------------

    def _deployment(self, deploy: dict[str, Any], pods: list[dict[str, Any]], _: object) -> None:
        spec = deploy.get("spec") or {}
        want = int(spec.get("replicas", 1))
        rs_hash = template_hash(spec.get("template") or {})
        current = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == rs_hash]
        for old in (p for p in pods if p not in current):
            self.kube.delete(old)  # a new template: replace the pods (Recreate, without the ReplicaSet)
        for _i in range(want - len(current)):
            current.append(
                self._create_pod(deploy, f"{deploy['metadata']['name']}-{rs_hash}-{secrets.token_hex(3)[:5]}", rs_hash)
            )
        for extra in current[want:]:
            self.kube.delete(extra)
        current = current[:want]
        ready = sum(self._update_pod(deploy, p) for p in current)
        self._deployment_status(deploy, want, ready)

    def _deployment_status(self, deploy: dict[str, Any], want: int, ready: int) -> None:
        uid, name = deploy["metadata"]["uid"], deploy["metadata"]["name"]
        spec, previous = deploy.get("spec") or {}, deploy.get("status") or {}
        stamp = store.now()
        if ready >= want:
            self.unavailable_since.pop(uid, None)
            progressing = _condition(
                "Progressing",
                True,
                stamp,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}" has successfully progressed.',
            )
        else:
            since = self.unavailable_since.setdefault(uid, time.monotonic())
            deadline = min(float(spec.get("progressDeadlineSeconds", 600)), max(3.0, 3 * self.ready_seconds()))
            if time.monotonic() - since > deadline and self._workload_key(deploy) in self.failing():
                progressing = _condition(
                    "Progressing",
                    False,
                    stamp,
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{name}" has timed out progressing.',
                )
            else:
                progressing = _condition(
                    "Progressing", True, stamp, "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.'
                )
        available = _condition(
            "Available",
            ready >= want,
            stamp,
            "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if ready >= want
            else "Deployment does not have minimum availability.",
        )
        status = {
            "observedGeneration": deploy["metadata"].get("generation", 1),
            "replicas": want,
            "updatedReplicas": want,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, want - ready),
            "conditions": [self._keep_time(previous, available), self._keep_time(previous, progressing)],
        }
        self._set_status(deploy, status)

    def _statefulset(self, sts: dict[str, Any], pods: list[dict[str, Any]], claims: dict[tuple[str, str], Any]) -> None:
        spec = sts.get("spec") or {}
        name, namespace = sts["metadata"]["name"], sts["metadata"]["namespace"]
        want = int(spec.get("replicas", 1))
        by_name = {p["metadata"]["name"]: p for p in pods}
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        rev = f"{name}-{template_hash(spec.get('template') or {})}"
        ready = 0
        for ordinal in range(want):
            pod_name = f"{name}-{ordinal}"
            for template in spec.get("volumeClaimTemplates") or []:
                claim = f"{template['metadata']['name']}-{pod_name}"
                if (namespace, claim) not in claims:
                    with contextlib.suppress(kube.KubeError):  # a concurrent pass made it
                        self.kube.create(
                            {
                                "apiVersion": "v1",
                                "kind": "PersistentVolumeClaim",
                                "metadata": {
                                    "name": claim,
                                    "namespace": namespace,
                                    "labels": dict((spec.get("selector") or {}).get("matchLabels") or {}),
                                },
                                "spec": template.get("spec") or {},
                            }
                        )
            pod = by_name.get(pod_name)
            if pod is None:
                if ordered and ready < ordinal:
                    break  # OrderedReady: the next ordinal waits for every earlier one to be Ready
                pod = self._create_pod(sts, pod_name, rev)
            ready += self._update_pod(sts, pod)
        for pod_name, pod in sorted(by_name.items(), reverse=True):
            base, _, ordinal = pod_name.rpartition("-")
            if base == name and ordinal.isdigit() and int(ordinal) >= want:
                self.kube.delete(pod)
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": want,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": want,
            "updatedReplicas": want,
            "currentRevision": rev,
            "updateRevision": rev,
            "collisionCount": 0,
        }
        self._set_status(sts, status)

    def _daemonset(self, ds: dict[str, Any], pods: list[dict[str, Any]], _: object) -> None:
        rev = template_hash((ds.get("spec") or {}).get("template") or {})
        if not pods:
            pods = [self._create_pod(ds, f"{ds['metadata']['name']}-{secrets.token_hex(3)[:5]}", rev)]
        ready = sum(self._update_pod(ds, p) for p in pods[:1])
        status = {
            "observedGeneration": ds["metadata"].get("generation", 1),
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1,
            "updatedNumberScheduled": 1,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberMisscheduled": 0,
        }
        self._set_status(ds, status)

    # -- pods --------------------------------------------------------------------------------

    def _create_pod(self, owner: dict[str, Any], name: str, revision: str) -> dict[str, Any]:
        spec = owner.get("spec") or {}
        template = spec.get("template") or {}
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        if owner["kind"] == "Deployment":
            labels["pod-template-hash"] = revision
        elif owner["kind"] == "StatefulSet":
            labels.update({"statefulset.kubernetes.io/pod-name": name, "controller-revision-hash": revision})
        pod_spec = dict(template.get("spec") or {})
        pod_spec.setdefault("serviceAccountName", "default")
        pod_spec["nodeName"] = "sandbox"
        if owner["kind"] == "StatefulSet":
            pod_spec["hostname"] = name
            pod_spec["subdomain"] = spec.get("serviceName", "")
            pod_spec["volumes"] = [
                *(pod_spec.get("volumes") or []),
                *(
                    {
                        "name": t["metadata"]["name"],
                        "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{name}"},
                    }
                    for t in spec.get("volumeClaimTemplates") or []
                ),
            ]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": owner["metadata"]["namespace"],
                "labels": labels,
                "ownerReferences": [_owner(owner)],
            },
            "spec": pod_spec,
        }
        try:
            return self.kube.create(body)
        except kube.KubeError as exc:
            if exc.code != 409:
                raise
            found = self.kube.get("v1", "Pod", owner["metadata"]["namespace"], name)
            return found or body

    def _workload_key(self, owner: dict[str, Any]) -> str:
        return f"{owner['metadata']['namespace']}/{owner['metadata']['name']}"

    def _update_pod(self, owner: dict[str, Any], pod: dict[str, Any]) -> int:
        """Drive one Pod's status; 1 when it is Ready."""
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            return 0
        namespace, name = meta["namespace"], meta["name"]
        ip = self.network.address(f"{namespace}/{name}")
        container = self._container(owner, pod, ip)
        if container.labels and any(meta.get("labels", {}).get(k) != v for k, v in container.labels.items()):
            self.kube.patch(pod, {"metadata": {"labels": container.labels}})
        previous = pod.get("status") or {}
        stamp = store.now()
        image = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
        cname = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "main")
        state: dict[str, Any]
        if container.exit_code is not None:
            finished: dict[str, Any] = next(
                (
                    c["state"]["terminated"]
                    for c in previous.get("containerStatuses") or []
                    if "terminated" in (c.get("state") or {})
                ),
                {},
            )
            state = {
                "terminated": {
                    "exitCode": container.exit_code,
                    "reason": "Completed" if container.exit_code == 0 else "Error",
                    "startedAt": previous.get("startTime") or stamp,
                    "finishedAt": finished.get("finishedAt") or stamp,
                }
            }
        elif container.running:
            state = {"running": {"startedAt": (previous.get("startTime") or stamp)}}
        else:
            state = {"waiting": {"reason": container.waiting_reason or "ContainerCreating"}}
        status_entry: dict[str, Any] = {
            "name": cname,
            "image": image,
            "imageID": "",
            "ready": container.ready,
            "started": container.running,
            "restartCount": container.restarts,
            "state": state,
        }
        if container.last_exit is not None:
            status_entry["lastState"] = {"terminated": {"exitCode": container.last_exit, "reason": "Error"}}
        if container.exit_code is not None:
            phase = "Succeeded" if container.exit_code == 0 else "Failed"
        else:
            phase = "Running" if container.running or container.restarts else "Pending"
        status = {
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "127.0.0.1",
            "startTime": previous.get("startTime") or stamp,
            "qosClass": previous.get("qosClass") or "BestEffort",  # set by the API at creation, immutable
            "conditions": [
                self._keep_time(previous, _condition("PodScheduled", True, stamp)),
                self._keep_time(previous, _condition("Initialized", True, stamp)),
                self._keep_time(previous, _condition("ContainersReady", container.ready, stamp)),
                self._keep_time(previous, _condition("Ready", container.ready, stamp)),
            ],
            "containerStatuses": [status_entry],
        }
        self._set_status(pod, status)
        return 1 if container.ready else 0

    def _container(self, owner: dict[str, Any], pod: dict[str, Any], ip: str) -> Container:
        for runtime in self.runtimes:
            if runtime.claims(pod):
                volumes = {
                    v["name"]: self.volume(pod["metadata"]["namespace"], v["persistentVolumeClaim"]["claimName"])
                    for v in (pod.get("spec") or {}).get("volumes") or []
                    if "persistentVolumeClaim" in v
                }
                peers = []
                if owner["kind"] == "StatefulSet":
                    base = owner["metadata"]["name"]
                    replicas = int((owner.get("spec") or {}).get("replicas", 1))
                    peers = [
                        self.network.address(f"{owner['metadata']['namespace']}/{base}-{i}") for i in range(replicas)
                    ]
                return runtime.ensure({**pod, "status": {**(pod.get("status") or {}), "podIP": ip}}, volumes, peers)
        uid = pod["metadata"]["uid"]
        first = self.first_seen.setdefault(uid, time.monotonic())
        if self._workload_key(owner) in self.failing():
            # CrashLoopBackOff: the container starts, exits 1, waits, starts again: a restart every 5 s.
            restarts = self.restarts[uid] = 1 + int((time.monotonic() - first) // 5)
            return Container(
                ready=False, running=False, restarts=restarts, last_exit=1, waiting_reason="CrashLoopBackOff"
            )
        running = time.monotonic() - first >= self.ready_seconds() / 2
        ready = time.monotonic() - first >= self.ready_seconds()
        return Container(ready=ready, running=running, restarts=self.restarts.get(uid, 0))

    @staticmethod
    def _keep_time(previous: dict[str, Any], cond: dict[str, Any]) -> dict[str, Any]:
        """Keep lastTransitionTime while a condition's status stays the same (else every pass is a change)."""
        for old in previous.get("conditions") or []:
            if old.get("type") == cond["type"] and old.get("status") == cond["status"]:
                return {**cond, "lastTransitionTime": old.get("lastTransitionTime", cond["lastTransitionTime"])}
        return cond

    def _set_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        if obj.get("status") != status:
            try:
                self.kube.patch(obj, {"status": status}, status=True)
            except kube.KubeError as exc:
                if exc.code != 404:  # deleted meanwhile: nothing to report on
                    raise
