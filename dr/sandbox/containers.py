"""Pods of dr's own image run for real: the container's command as a process, in a pod's view of the filesystem.

The nightly snapshot CronJob's pod runs `dr snapshot save` from the image
`ghcr.io/dr-project/dr`. There is no container runtime here, but the image's
entry point is this project's own `dr`, so the node agent runs it as a
process (`python -m dr`, the project's interpreter) and gives it what a
kubelet gives a container, by path, in a private mount namespace
(`unshare -m`, as root; the host's files are untouched):

- every `volumeMount` at its `mountPath`: a ConfigMap's or Secret's keys as
  files, a PersistentVolumeClaim's directory, an `emptyDir`;
- the projected ServiceAccount token, `ca.crt` and `namespace` at
  `/var/run/secrets/kubernetes.io/serviceaccount/`, the token from a real
  TokenRequest bound to the pod (the API's audience, an hour);
- `/etc/hosts` with `<service>.<namespace>.svc` for every Service that has a
  ready endpoint (the cluster DNS the pod would have), and
  `KUBERNETES_SERVICE_HOST`/`_PORT` pointing at the sandbox's API;
- `env` values and `envFrom` ConfigMaps/Secrets.

`/etc`, `/var` and `/run` are overlays in that namespace, so mount points can
be made without touching the host. The process's exit is the container's:
exit 0 makes the pod Succeeded (a Job completes), anything else Failed.
What is not modelled: `runAsUser` and the rest of `securityContext`
(the process runs as the agent's user), resource limits, probes.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr.sandbox import kube, workloads

IMAGE = "ghcr.io/dr-project/dr"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path, not a secret
log = logging.getLogger("dr.sandbox")
OVERLAID = ("/etc", "/var", "/run")


@dataclass
class _Run:
    process: subprocess.Popen[bytes]
    root: Path


def _image(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image") or "")


class DrContainers:
    """The `workloads.Runtime` for pods of dr's image."""

    def __init__(self, api: kube.Kube, roots: Path, api_address: Callable[[], str], on_spawn: Callable[[int], None]):
        self.kube, self.roots, self.api_address, self.on_spawn = api, roots, api_address, on_spawn
        self.runs: dict[str, _Run] = {}
        self.lock = threading.Lock()
        self.closed = False

    def claims(self, pod: dict[str, Any]) -> bool:
        return _image(pod).split(":")[0] == IMAGE

    def ensure(self, pod: dict[str, Any], volumes: dict[str, Path], peers: list[str]) -> workloads.Container:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        with self.lock:
            if self.closed:  # the sandbox is stopping: start nothing new
                return workloads.Container(ready=False, running=False, waiting_reason="ContainerCreating")
            run = self.runs.get(key)
            if run is None:
                try:
                    run = self.runs[key] = self._start(pod, volumes)
                except kube.KubeError as exc:  # a ConfigMap or Secret not there yet: the kubelet retries too
                    log.warning("pod %s cannot start yet: %s", key, exc)
                    return workloads.Container(ready=False, running=False, waiting_reason="CreateContainerConfigError")
        code = run.process.poll()
        if code is None:
            return workloads.Container(ready=True, running=True)
        return workloads.Container(ready=False, running=False, exit_code=128 - code if code < 0 else code)

    def release(self, namespace: str, name: str) -> None:
        with self.lock:
            run = self.runs.pop(f"{namespace}/{name}", None)
        if run is None:
            return
        if run.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, 15)
            try:
                run.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, 9)
                run.process.wait()
        shutil.rmtree(run.root, ignore_errors=True)

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
        for key in list(self.runs):
            namespace, _, name = key.partition("/")
            self.release(namespace, name)

    # -- the pod's view ---------------------------------------------------------------------

    def _start(self, pod: dict[str, Any], claims: dict[str, Path]) -> _Run:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        root = self.roots / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        root.mkdir(parents=True, exist_ok=True)
        container = (spec.get("containers") or [{}])[0]
        sources = {v["name"]: self._volume(v, meta["namespace"], root, claims) for v in spec.get("volumes") or []}
        mounts = [(str(sources[m["name"]]), m["mountPath"]) for m in container.get("volumeMounts") or []]
        if spec.get("automountServiceAccountToken", True):
            mounts.append((str(self._token(pod, root / "serviceaccount")), TOKEN_DIR))
        hosts = root / "hosts"
        hosts.write_text(self._hosts())
        host, port = self.api_address().rsplit(":", 1)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/tmp",  # noqa: S108 - inside the pod's own mount namespace, its emptyDir when it mounts one
            "HOSTNAME": meta["name"],
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            **self._env(container, meta["namespace"]),
        }
        command = [sys.executable, "-m", "dr", *(container.get("command") or [])[1:], *(container.get("args") or [])]
        log = (root / "container.log").open("ab")
        process = subprocess.Popen(
            ["unshare", "-m", "--", "sh", "-c", _script(root, mounts, hosts), "pod", *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        log.close()
        self.on_spawn(process.pid)
        return _Run(process, root)

    def _volume(self, volume: dict[str, Any], namespace: str, root: Path, claims: dict[str, Path]) -> Path:
        name = str(volume["name"])
        target = root / "volumes" / name
        if "persistentVolumeClaim" in volume:
            return Path(claims[name])
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume or "secret" in volume:
            kind = "ConfigMap" if "configMap" in volume else "Secret"
            ref = volume.get("configMap") or volume.get("secret") or {}
            obj = self.kube.get("v1", kind, namespace, ref.get("name") or ref.get("secretName") or "")
            if obj is None:
                if ref.get("optional"):
                    return target
                raise kube.KubeError(404, "NotFound", f"{kind} {namespace}/{ref.get('name') or ref.get('secretName')}")
            for key, value in _data(obj).items():
                (target / key).write_bytes(value)
                (target / key).chmod(0o600 if kind == "Secret" else 0o644)
        return target  # emptyDir and anything else: an empty directory of the pod's own

    def _token(self, pod: dict[str, Any], target: Path) -> Path:
        """What the kubelet projects: a TokenRequest bound to the pod, the cluster's CA, the namespace."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        issued = self.kube.request(
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
                },
            },
        )
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o700)
        (target / "token").write_text(issued["status"]["token"])
        (target / "token").chmod(0o600)
        ca = self.kube.get("v1", "ConfigMap", meta["namespace"], "kube-root-ca.crt")
        (target / "ca.crt").write_text(((ca or {}).get("data") or {}).get("ca.crt", ""))
        (target / "namespace").write_text(meta["namespace"])
        return target

    def _hosts(self) -> str:
        """Cluster DNS as a hosts file: each Service's name to the address of one ready pod it selects.

        From the Service's selector, not its EndpointSlices: the API refuses endpoint addresses in
        127.0.0.0/8, so the endpoint controllers cannot record the sandbox's loopback pod IPs.
        """
        lines = ["127.0.0.1 localhost", "127.0.0.1 kubernetes kubernetes.default kubernetes.default.svc"]
        pods = [p for p in self.kube.list("v1", "Pod") if _ready(p)]
        for service in self.kube.list("v1", "Service"):
            meta, selector = service["metadata"], (service.get("spec") or {}).get("selector") or {}
            chosen = sorted(
                (p for p in pods if p["metadata"]["namespace"] == meta["namespace"] and _selects(selector, p)),
                key=lambda p: p["metadata"]["name"],
            )
            if selector and chosen:
                name = f"{meta['name']}.{meta['namespace']}.svc"
                lines.append(f"{chosen[0]['status']['podIP']} {name} {name}.cluster.local")
        return "\n".join(lines) + "\n"

    def _env(self, container: dict[str, Any], namespace: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            obj = self.kube.get("v1", kind, namespace, ref.get("name") or "")
            if obj is None and not ref.get("optional"):
                raise kube.KubeError(404, "NotFound", f"{kind} {namespace}/{ref.get('name')}")
            env.update({k: v.decode() for k, v in _data(obj or {}).items()})
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
        return env


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    return bool(status.get("podIP")) and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _selects(selector: dict[str, str], pod: dict[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _data(obj: dict[str, Any]) -> dict[str, bytes]:
    if obj.get("kind") == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    return {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}


def _kept() -> list[str]:
    """What the process itself needs from the host: the project (an editable install) and its interpreter."""
    project = Path(__file__).resolve().parents[2]
    return sorted({str(project), sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent)})


def _script(root: Path, mounts: list[tuple[str, str]], hosts: Path) -> str:
    """The shell run inside the new mount namespace: overlays, mount points, binds, then exec the command.

    A pod's mount may cover where the project or its interpreter lives (an emptyDir on /tmp, and a clone
    under /tmp): those are bound aside first and put back on top after the pod's mounts.
    """
    lines = ["set -e", "mount --make-rprivate /"]
    kept = _kept()
    for path in OVERLAID:
        name = path.strip("/")
        upper, work = root / "overlay" / name / "upper", root / "overlay" / name / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        lines.append(
            f"mount -t overlay overlay -o lowerdir={path},upperdir={shlex.quote(str(upper))},"
            f"workdir={shlex.quote(str(work))} {path}"
        )
    for i, path in enumerate(kept):  # in /run's overlay, so nothing is made on the host
        lines.append(f"mkdir -p /run/dr-kept/{i} && mount --bind {shlex.quote(path)} /run/dr-kept/{i}")
    lines.append(f"cat {shlex.quote(str(hosts))} > /etc/hosts")
    for source, target in sorted(mounts, key=lambda m: m[1].startswith("/tmp")):  # noqa: S108 - the pod's /tmp
        lines.append(f"mkdir -p {shlex.quote(target)}")
        lines.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
    for i, path in enumerate(kept):
        lines.append(f"mkdir -p {shlex.quote(path)} && mount --bind /run/dr-kept/{i} {shlex.quote(path)}")
    lines.append('exec "$@"')
    return "\n".join(lines)
