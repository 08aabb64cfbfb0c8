"""Pods whose image is a program we have run for real: the container's command as a process, in a pod's view.

There is no container runtime here, but for two images the entry point is a
program on this machine (`PROGRAMS`):

- `ghcr.io/dr-project/dr` (the nightly snapshot CronJob's pod runs
  `dr snapshot save`): this project's own `dr`, as `python -m dr` on the
  project's interpreter;
- `oci.external-secrets.io/external-secrets/external-secrets` (the
  external-secrets chart's controller): the External Secrets Operator built
  from its Go module (`make testbed`), with the chart's arguments and its
  metrics on the pod's own address. The chart's cert-controller and webhook
  pods (the same image, `certcontroller`/`webhook` arguments) are not run:
  nothing in the platform calls the webhook.

The node agent gives the process what a kubelet gives a container, by path,
in a private mount namespace (`unshare -m`, as root; the host's files are
untouched):

- every `volumeMount` at its `mountPath`: a ConfigMap's or Secret's keys as
  files, a PersistentVolumeClaim's directory, an `emptyDir`;
- the projected ServiceAccount token, `ca.crt` and `namespace` at
  `/var/run/secrets/kubernetes.io/serviceaccount/`, the token from a real
  TokenRequest bound to the pod (the API's audience, an hour);
- `/etc/hosts` with `<service>.<namespace>.svc` for every Service that has a
  ready endpoint (the cluster DNS the pod would have), rewritten in place as
  pods come and go, and `KUBERNETES_SERVICE_HOST`/`_PORT` pointing at the
  sandbox's API; the token is renewed at 80 % of its life, as the kubelet does;
- `env` values and `envFrom` ConfigMaps/Secrets.

`/etc`, `/var` and `/run` are overlays in that namespace, so mount points can
be made without touching the host. The process's exit is the container's:
under `restartPolicy: Never` exit 0 makes the pod Succeeded (a Job
completes), anything else Failed; under `Always` (a Deployment's pods) the
container is started again, at once the first time, then after the kubelet's
back-off (10 s doubling to 5 min, `CrashLoopBackOff` meanwhile), and the pod
counts the restarts. Its output is `container.log` in the pod's directory.
What is not modelled: `runAsUser` and the rest of `securityContext`
(the process runs as the agent's user), resource limits, probes (a running
container is Ready, as a kubelet reports a container without a probe).
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dr import files
from dr.adapters import sandbox_process
from dr.sandbox import kube, workloads

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path, not a secret
TOKEN_SECONDS = 3600
log = logging.getLogger("dr.sandbox")
OVERLAID = ("/etc", "/var", "/run")
BACKOFF_FIRST, BACKOFF_MAX = 10.0, 300.0  # the kubelet's crash-loop back-off
HOSTS_EVERY = 2.0  # how often a running pod's hosts file follows the Services' pods


@dataclass(frozen=True)
class Program:
    """How to run a container of one image here: the argv for the container's command, args and pod IP."""

    name: str
    image: str
    argv: Callable[[dict[str, Any], str], list[str]]
    runs: Callable[[dict[str, Any]], bool] = lambda container: True  # which of the image's commands are run


def _dr(container: dict[str, Any], ip: str) -> list[str]:
    return [sys.executable, "-m", "dr", *(container.get("command") or [])[1:], *(container.get("args") or [])]


def _eso(container: dict[str, Any], ip: str) -> list[str]:
    """The chart's arguments, its `:PORT` binds (every address) narrowed to the pod's own address."""
    args = [f"{a.partition('=')[0]}={ip}{a.partition('=')[2]}" if "=:" in a else a for a in container.get("args") or []]
    return [str(sandbox_process.TESTBED_BIN / "external-secrets"), *args]


def _eso_controller(container: dict[str, Any]) -> bool:
    args = container.get("args") or []
    return not args or args[0] not in ("certcontroller", "webhook")


PROGRAMS = (
    Program("dr", "ghcr.io/dr-project/dr", _dr),
    Program("external-secrets", "oci.external-secrets.io/external-secrets/external-secrets", _eso, _eso_controller),
    Program("external-secrets", "ghcr.io/external-secrets/external-secrets", _eso, _eso_controller),
)


@dataclass
class _Run:
    process: subprocess.Popen[bytes]
    root: Path
    restarts: int = 0
    last_exit: int | None = None
    exited_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)
    token_at: float = field(default_factory=time.monotonic)
    hosts_at: float = field(default_factory=time.monotonic)
    cut: bool = False  # started (or last restarted) cut off from the Services by the fault knob


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(((pod.get("spec") or {}).get("containers") or [{}])[0])


def _program(pod: dict[str, Any]) -> Program | None:
    container = _container(pod)
    image = str(container.get("image") or "").split("@")[0].rsplit(":", 1)[0]
    return next((p for p in PROGRAMS if p.image == image and p.runs(container)), None)


def _backoff(restarts: int) -> float:
    """The wait before restart number `restarts`: none for the first, then 10 s, 20 s, ... up to 5 min."""
    return 0.0 if restarts <= 1 else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (restarts - 2))


class Processes:
    """The `workloads.Runtime` for pods of the images in `PROGRAMS`."""

    def __init__(
        self,
        api: kube.Kube,
        roots: Path,
        api_address: Callable[[], str],
        on_spawn: Callable[[int], None],
        cut_off: Callable[[str], bool] = lambda program: False,
    ):
        self.kube, self.roots, self.api_address, self.on_spawn = api, roots, api_address, on_spawn
        self.cut_off = cut_off  # the fault knob: a program's pods resolve no Service (the cluster network is down)
        self.runs: dict[str, _Run] = {}
        self.lock = threading.Lock()
        self.closed = False

    def claims(self, pod: dict[str, Any]) -> bool:
        return _program(pod) is not None

    def ensure(self, pod: dict[str, Any], volumes: dict[str, Path], peers: list[str]) -> workloads.Container:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        with self.lock:
            if self.closed:  # the sandbox is stopping: start nothing new
                return workloads.Container(ready=False, running=False, waiting_reason="ContainerCreating")
            run = self.runs.get(key)
            try:
                if run is None:
                    program = _program(pod)
                    run = self.runs[key] = _Run(self._start(pod, volumes), self.roots / _dirname(pod))
                    run.cut = bool(program and self.cut_off(program.name))
                else:
                    self._restart_if_due(run, pod, volumes)
            except kube.KubeError as exc:  # a ConfigMap or Secret not there yet: the kubelet retries too
                log.warning("pod %s cannot start yet: %s", key, exc)
                if run is None:
                    return workloads.Container(ready=False, running=False, waiting_reason="CreateContainerConfigError")
        if run.exited_at is not None:
            return workloads.Container(
                ready=False,
                running=False,
                restarts=run.restarts,
                last_exit=run.last_exit,
                waiting_reason="CrashLoopBackOff",
            )
        code = run.process.poll()
        if code is not None:
            code = 128 - code if code < 0 else code  # a signal shows as 128+n, as the kubelet reports
            policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                return workloads.Container(ready=False, running=False, restarts=run.restarts, exit_code=code)
            with self.lock:
                run.exited_at, run.last_exit = time.monotonic(), code
                run.restarts += 1
            return self.ensure(pod, volumes, peers)
        self._refresh(run, pod)
        return workloads.Container(ready=True, running=True, restarts=run.restarts, last_exit=run.last_exit)

    def _restart_if_due(self, run: _Run, pod: dict[str, Any], volumes: dict[str, Path]) -> None:
        if run.exited_at is None:
            return
        if time.monotonic() - run.started_at > 600:  # ran ten minutes before it exited: the kubelet forgives
            run.restarts = 1 if run.restarts else 0
        if time.monotonic() - run.exited_at >= _backoff(run.restarts):
            run.process = self._start(pod, volumes)
            run.exited_at, run.started_at = None, time.monotonic()

    def _refresh(self, run: _Run, pod: dict[str, Any]) -> None:
        """What a kubelet keeps current in a running container: the projected token and (here) the hosts file."""
        now = time.monotonic()
        try:
            if now - run.token_at > 0.8 * TOKEN_SECONDS:
                self._token(pod, run.root / "serviceaccount")
                run.token_at = now
            program = _program(pod)
            cut = bool(program and self.cut_off(program.name))
            if now - run.hosts_at > HOSTS_EVERY or cut != run.cut:
                hosts = self._hosts(services=not cut)
                if (run.root / "hosts").read_text() != hosts:
                    with (run.root / "hosts").open("r+") as f:  # in place: the pod's /etc/hosts is this inode
                        f.write(hosts)
                        f.truncate()
                run.hosts_at = now
            if cut != run.cut:
                # A cut network also ends the connections already open (a pooled one would go on working):
                # the container is stopped and restarts, by its policy, into the new network.
                run.cut = cut
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, 9)
        except (kube.KubeError, OSError) as exc:
            log.warning("pod %s/%s: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], exc)

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

    def signal(self, namespace: str, name: str, *, kill: bool) -> bool:
        """A fault: SIGKILL (a crash) or SIGTERM (a clean stop) of the pod's process; it restarts by policy."""
        with self.lock:
            run = self.runs.get(f"{namespace}/{name}")
        if run is None or run.process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, 9 if kill else 15)
        run.process.wait(timeout=15)
        return True

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
        for key in list(self.runs):
            namespace, _, name = key.partition("/")
            self.release(namespace, name)

    # -- the pod's view ---------------------------------------------------------------------

    def _start(self, pod: dict[str, Any], claims: dict[str, Path]) -> subprocess.Popen[bytes]:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        root = self.roots / _dirname(pod)
        root.mkdir(parents=True, exist_ok=True)
        container = _container(pod)
        program = _program(pod)
        assert program is not None
        sources = {v["name"]: self._volume(v, meta["namespace"], root, claims) for v in spec.get("volumes") or []}
        mounts = [(str(sources[m["name"]]), m["mountPath"]) for m in container.get("volumeMounts") or []]
        if spec.get("automountServiceAccountToken", True):
            mounts.append((str(self._token(pod, root / "serviceaccount")), TOKEN_DIR))
        hosts = root / "hosts"
        if not hosts.exists():  # a restart keeps the file its running pod's mounts point at
            hosts.write_text(self._hosts(services=not self.cut_off(program.name)))
        host, port = self.api_address().rsplit(":", 1)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/tmp",  # noqa: S108 - inside the pod's own mount namespace, its emptyDir when it mounts one
            "HOSTNAME": meta["name"],
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            **self._env(container, meta["namespace"]),
        }
        command = program.argv(container, pod["status"]["podIP"])
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
        return process

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
                    "expirationSeconds": TOKEN_SECONDS,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
                },
            },
        )
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o700)
        files.write_atomic(target / "token", issued["status"]["token"].encode())  # a reader never sees half of it
        ca = self.kube.get("v1", "ConfigMap", meta["namespace"], "kube-root-ca.crt")
        (target / "ca.crt").write_text(((ca or {}).get("data") or {}).get("ca.crt", ""))
        (target / "namespace").write_text(meta["namespace"])
        return target

    def _hosts(self, *, services: bool = True) -> str:
        """Cluster DNS as a hosts file: each Service's name to the address of one ready pod it selects.

        From the Service's selector, not its EndpointSlices: the API refuses endpoint addresses in
        127.0.0.0/8, so the endpoint controllers cannot record the sandbox's loopback pod IPs.
        """
        lines = ["127.0.0.1 localhost", "127.0.0.1 kubernetes kubernetes.default kubernetes.default.svc"]
        if not services:
            return "\n".join(lines) + "\n"
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


def _dirname(pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"


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
    lines.append(f"mount --bind {shlex.quote(str(hosts))} /etc/hosts")  # bound, so rewrites reach the pod
    for source, target in sorted(mounts, key=lambda m: m[1].startswith("/tmp")):  # noqa: S108 - the pod's /tmp
        lines.append(f"mkdir -p {shlex.quote(target)}")
        lines.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
    for i, path in enumerate(kept):
        lines.append(f"mkdir -p {shlex.quote(path)} && mount --bind /run/dr-kept/{i} {shlex.quote(path)}")
    lines.append('exec "$@"')
    return "\n".join(lines)
