"""The Argo CD application controller stand-in: syncs Applications from the repository directory.

Active only once Argo CD is installed the way a real one runs: the
argoproj.io CRDs are served and the `argocd-application-controller`
StatefulSet in `argocd` has a Ready pod. It then does, per Application in
`argocd`, what the real controller does and shows it in the same fields:

- validates the spec against its AppProject (source repos, destinations) and
  shows a violation as an `InvalidSpecError` condition with Argo's wording;
- renders the source (`repo.render`), compares every target with the live
  object (`status.sync`, `status.resources`), assesses health (`health`);
- syncs when asked (`operation`) or automatically (`syncPolicy.automated`,
  with `selfHeal` and `prune`), in sync-wave order, waiting for a wave to be
  healthy before the next, checking each resource against the project's
  resource lists first ("one or more synchronization tasks are not valid"),
  retrying per `syncPolicy.retry`, recording `operationState`;
- creates the destination namespace with `CreateNamespace=true`, honours the
  `argocd.argoproj.io/refresh` annotation, re-reads the repository every
  `refresh_seconds` (Argo's `timeout.reconciliation`, 180 s there), and
  deletes an app's resources when it carries the resources finalizer.

Resources are tracked by Argo CD's `argocd.argoproj.io/tracking-id`
annotation. Hooks, diffs of removed fields and multi-source apps are not
modelled.
"""

from __future__ import annotations

import copy
import fnmatch
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dr.sandbox import health, kube, loop, repo, store

NAMESPACE = "argocd"
APP = ("argoproj.io/v1alpha1", "Application")
PROJECT = ("argoproj.io/v1alpha1", "AppProject")
IN_CLUSTER = "https://kubernetes.default.svc"
TRACKING = "argocd.argoproj.io/tracking-id"
REFRESH = "argocd.argoproj.io/refresh"
WAVE = "argocd.argoproj.io/sync-wave"
FINALIZER = "resources-finalizer.argocd.argoproj.io"
MANAGER = "argocd-controller"
# The order Argo CD applies kinds within a wave (gitops-engine's kind order, shortened).
KIND_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "Deployment",
    "StatefulSet",
    "Job",
    "CronJob",
]


def _stamp() -> str:
    return store.now()


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def _contains(live: Any, want: Any) -> bool:
    """Whether every field the manifest sets has that value live (what a sync would not change)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(_contains(live.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(live) == len(want) and all(map(_contains, live, want))
    return bool(live == want or str(live) == str(want))


class Target:
    """One desired object of an app, with where it lives and when it syncs."""

    def __init__(self, manifest: dict[str, Any], namespaced: bool) -> None:
        self.manifest = manifest
        self.namespaced = namespaced
        meta = manifest["metadata"]
        self.api_version, self.kind, self.name = manifest["apiVersion"], manifest["kind"], meta["name"]
        self.namespace = meta.get("namespace", "") if namespaced else ""
        self.group = _group(self.api_version)
        self.wave = int((meta.get("annotations") or {}).get(WAVE, "0") or 0)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace, self.name)

    @property
    def order(self) -> tuple[int, int, str]:
        rank = KIND_ORDER.index(self.kind) if self.kind in KIND_ORDER else len(KIND_ORDER)
        return (self.wave, rank, self.name)

    def row(self, status: str, health_: tuple[str, str] | None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "group": self.group,
            "version": self.api_version.split("/")[-1],
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "status": status,
        }
        if health_ is not None:
            row["health"] = {"status": health_[0], **({"message": health_[1]} if health_[1] else {})}
        if self.wave:
            row["syncWave"] = self.wave
        return row

    def describe(self) -> str:
        return f"{self.group}/{self.kind}/{self.name}" if self.group else f"/{self.kind}/{self.name}"


class ArgoCD(loop.Controller):
    name = "argocd"
    watches = (APP, PROJECT, ("apps/v1", "StatefulSet"), ("apps/v1", "Deployment"))
    resync = 1.0

    def __init__(
        self,
        api: kube.Kube,
        stop: threading.Event,
        *,
        repos: Callable[[], dict[str, str]],
        refresh_seconds: Callable[[], float],
    ) -> None:
        super().__init__(api, stop)
        self.repos, self.refresh_seconds = repos, refresh_seconds
        self.rendered: dict[str, tuple[float, str, Any]] = {}  # app uid → (when, source key, result or error)
        self.retry_at: dict[str, float] = {}

    def active(self) -> bool:
        try:
            self.kube.resource(*APP)
        except kube.KubeError:
            return False
        sts = self.kube.get("apps/v1", "StatefulSet", NAMESPACE, "argocd-application-controller")
        return bool(sts and int((sts.get("status") or {}).get("readyReplicas", 0)) >= 1)

    def reconcile(self) -> None:
        if not self.active():
            return
        projects = {p["metadata"]["name"]: p for p in self.kube.list(*PROJECT, NAMESPACE)}
        if "default" not in projects:
            projects["default"] = self._default_project()
        for app in self.kube.list(*APP, NAMESPACE):
            try:
                self._reconcile_app(app, projects)
            except kube.KubeError as exc:
                if exc.code != 404:  # the app went away mid-pass
                    raise

    def _default_project(self) -> dict[str, Any]:
        """The project Argo CD creates at start: anything from anywhere to anywhere."""
        body = {
            "apiVersion": APP[0],
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        }
        try:
            return self.kube.create(body)
        except kube.KubeError as exc:
            if exc.code != 409:
                raise
            return body

    # -- one app ------------------------------------------------------------------------------

    def _reconcile_app(self, app: dict[str, Any], projects: dict[str, dict[str, Any]]) -> None:
        meta, spec = app["metadata"], app.get("spec") or {}
        if meta.get("deletionTimestamp"):
            self._finalize(app)
            return
        old = copy.deepcopy(app.get("status") or {})
        status: dict[str, Any] = copy.deepcopy({k: v for k, v in old.items() if k in ("operationState", "history")})
        source, dest = spec.get("source") or {}, spec.get("destination") or {}
        compared = {"source": source, "destination": dest}
        project = projects.get(spec.get("project") or "default")
        problem = self._invalid(spec, project)
        if problem:
            status.update(
                sync={"status": "Unknown", "comparedTo": compared},
                health={"status": "Unknown"},
                conditions=[{"type": "InvalidSpecError", "message": problem}],
            )
            self._write(app, old, status)
            return
        assert project is not None
        rendered = self._render(app, source, dest)
        if isinstance(rendered, repo.RenderError):
            status.update(
                sync={"status": "Unknown", "comparedTo": compared},
                health={"status": (old.get("health") or {}).get("status", "Unknown")},
                conditions=[{"type": "ComparisonError", "message": str(rendered)}],
            )
            self._write(app, old, status)
            return
        source_type, revision, manifests = rendered
        targets = self._targets(manifests, app, dest)
        live = {t.key: self._live(t) for t in targets}
        conditions: list[dict[str, Any]] = []

        policy = spec.get("syncPolicy") or {}
        operation = app.get("operation")
        op_state = status.get("operationState")
        running = bool(op_state and op_state.get("phase") == "Running")
        automated = policy.get("automated")
        # Only extra resources, and no automated prune: Argo CD skips ("need to prune extra resources only").
        prunable = bool(self._extra(old, live)) and bool((automated or {}).get("prune"))
        out_of_sync = prunable or any(not self._synced(t, live[t.key]) for t in targets)
        if operation and not running:
            op_state = self._begin(operation)
            self.kube.patch(app, {"operation": None})
        elif automated is not None and out_of_sync and not running:
            skip = self._skip_auto_sync(op_state, revision, policy)
            if skip:
                conditions.append({"type": "SyncError", "message": skip})
            elif skip is None:
                op_state = self._begin(
                    {
                        "sync": {"revision": revision, "prune": bool(automated.get("prune"))},
                        "initiatedBy": {"automated": True},
                        "retry": policy.get("retry") or {},
                    }
                )
        if op_state and op_state.get("phase") == "Running":
            self._sync(app, op_state, targets, live, project, revision, source, policy)
            live = {t.key: self._live(t) for t in targets}
        if op_state:
            status["operationState"] = op_state

        rows, healths = [], []
        for t in sorted(targets, key=lambda t: t.order):
            assessed = health.assess(live[t.key])
            rows.append(t.row("Synced" if self._synced(t, live[t.key]) else "OutOfSync", assessed))
            if assessed is not None:
                healths.append(assessed[0])
        rows += [{**row, "status": "OutOfSync", "requiresPruning": True} for row in self._extra(old, live)]
        synced = all(r["status"] == "Synced" for r in rows)
        status.update(
            sync={"status": "Synced" if synced else "OutOfSync", "revision": revision, "comparedTo": compared},
            health={"status": health.worst(healths)},
            resources=rows,
            sourceType=source_type,
            summary={"images": sorted(self._images(manifests))},
        )
        last = op_state or {}
        if last.get("phase") in ("Failed", "Error") and policy.get("automated") is not None and not conditions:
            conditions.append(
                {"type": "SyncError", "message": f"Failed sync attempt to {revision}: {last.get('message')}"}
            )
        if conditions:
            status["conditions"] = conditions
        self._write(app, old, status)

    def _extra(self, old: dict[str, Any], live: dict[tuple[str, str, str, str], Any]) -> list[dict[str, Any]]:
        """Resources the app managed that left the repository but are still in the cluster."""
        return [
            row
            for row in old.get("resources") or []
            if (row["group"], row["kind"], row["namespace"], row["name"]) not in live
            and self._live_row(row) is not None
        ]

    def _write(self, app: dict[str, Any], old: dict[str, Any], status: dict[str, Any]) -> None:
        """Patch status when anything but the timestamps changed (a patch wakes every watcher)."""

        def strip(s: dict[str, Any]) -> dict[str, Any]:
            s = {k: v for k, v in s.items() if k not in ("reconciledAt", "observedAt")}
            s["conditions"] = [
                {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []
            ]
            return s

        if strip(old) == strip(status):
            return
        stamp = _stamp()
        previous = {c["type"]: c for c in old.get("conditions") or []}
        for cond in status.get("conditions") or []:
            same = previous.get(cond["type"])
            cond["lastTransitionTime"] = (
                same.get("lastTransitionTime", stamp) if same and same.get("message") == cond["message"] else stamp
            )
        status["reconciledAt"] = status["observedAt"] = stamp
        patch: dict[str, Any] = {"status": status}
        # A merge patch keeps keys it does not mention: name the ones to drop.
        for key in old:
            if key not in status:
                patch["status"][key] = None
        self.kube.patch(app, patch)

    # -- validation -----------------------------------------------------------------------------

    def _invalid(self, spec: dict[str, Any], project: dict[str, Any] | None) -> str:
        name = spec.get("project") or "default"
        if project is None:
            return f"Application referencing project {name} which does not exist"
        pspec = project.get("spec") or {}
        source, dest = spec.get("source") or {}, spec.get("destination") or {}
        url = str(source.get("repoURL") or "")
        if not any(
            fnmatch.fnmatchcase(repo.normalise(url), repo.normalise(p)) or p == "*"
            for p in pspec.get("sourceRepos") or []
        ):
            return f"application repo {url} is not permitted in project '{name}'"
        server = dest.get("server") or ("" if dest.get("name") else IN_CLUSTER)
        if dest.get("name") and dest["name"] != "in-cluster":
            return f"unable to find destination server: there are no clusters with this name: {dest['name']}"
        if server and server.rstrip("/") != IN_CLUSTER:
            return f"unable to find destination server: there are no clusters with this URL: {server}"
        namespace = dest.get("namespace") or ""
        if not self._destination_ok(pspec, namespace):
            return (
                f"application destination server '{server or IN_CLUSTER}' and namespace '{namespace}' do not match"
                f" any of the allowed destinations in project '{name}'"
            )
        return ""

    @staticmethod
    def _destination_ok(pspec: dict[str, Any], namespace: str) -> bool:
        for allowed in pspec.get("destinations") or []:
            server = allowed.get("server") or IN_CLUSTER
            name = allowed.get("name")
            if (name and name not in ("in-cluster", "*")) or not fnmatch.fnmatchcase(IN_CLUSTER, server):
                continue
            if fnmatch.fnmatchcase(namespace, allowed.get("namespace") or ""):
                return True
        return False

    def _not_permitted(self, t: Target, project: dict[str, Any]) -> str:
        pspec, name = project.get("spec") or {}, project["metadata"]["name"]

        def listed(entries: list[dict[str, str]]) -> bool:
            return any(
                fnmatch.fnmatchcase(t.group, e.get("group", "")) and fnmatch.fnmatchcase(t.kind, e.get("kind", ""))
                for e in entries
            )

        if not t.namespaced:
            if not listed(pspec.get("clusterResourceWhitelist") or []) or listed(
                pspec.get("clusterResourceBlacklist") or []
            ):
                return f"resource {t.group}:{t.kind} is not permitted in project {name}."
            return ""
        whitelist = pspec.get("namespaceResourceWhitelist")
        if listed(pspec.get("namespaceResourceBlacklist") or []) or (whitelist is not None and not listed(whitelist)):
            return f"resource {t.group}:{t.kind} is not permitted in project {name}."
        if not self._destination_ok(pspec, t.namespace):
            return f"namespace {t.namespace} is not permitted in project '{name}'"
        return ""

    # -- rendering and comparing ---------------------------------------------------------------

    def _render(self, app: dict[str, Any], source: dict[str, Any], dest: dict[str, Any]) -> Any:
        uid = app["metadata"]["uid"]
        key = repr(sorted(source.items()))
        cached = self.rendered.get(uid)
        forced = REFRESH in (app["metadata"].get("annotations") or {})
        if cached and cached[1] == key and not forced and time.monotonic() - cached[0] < self.refresh_seconds():
            return copy.deepcopy(cached[2])
        try:
            result: Any = repo.render(source, self.repos(), app["metadata"]["name"], dest.get("namespace") or "")
        except repo.RenderError as exc:
            result = exc
        self.rendered[uid] = (time.monotonic(), key, result)
        if forced:
            self.kube.patch(app, {"metadata": {"annotations": {REFRESH: None}}})
        return copy.deepcopy(result)

    def _targets(self, manifests: list[dict[str, Any]], app: dict[str, Any], dest: dict[str, Any]) -> list[Target]:
        out = []
        for manifest in manifests:
            try:
                _, namespaced = self.kube.resource(manifest["apiVersion"], manifest["kind"])
            except kube.KubeError:
                namespaced = manifest["kind"] not in repo.CLUSTER_KINDS
            meta = manifest.setdefault("metadata", {})
            if namespaced and not meta.get("namespace"):
                meta["namespace"] = dest.get("namespace") or "default"
            if not namespaced:
                meta.pop("namespace", None)
            t = Target(manifest, namespaced)
            ns = f"{t.namespace}/" if t.namespace else "/"
            meta.setdefault("annotations", {})[TRACKING] = f"{app['metadata']['name']}:{t.group}/{t.kind}:{ns}{t.name}"
            out.append(t)
        return out

    def _live(self, t: Target) -> dict[str, Any] | None:
        try:
            return self.kube.get(t.api_version, t.kind, t.namespace or None, t.name)
        except kube.KubeError:
            return None

    def _live_row(self, row: dict[str, Any]) -> dict[str, Any] | None:
        api_version = f"{row['group']}/{row['version']}" if row["group"] else row["version"]
        try:
            return self.kube.get(api_version, row["kind"], row["namespace"] or None, row["name"])
        except kube.KubeError:
            return None

    @staticmethod
    def _synced(t: Target, live: dict[str, Any] | None) -> bool:
        if live is None:
            return False
        want = {k: v for k, v in t.manifest.items() if k not in ("status",)}
        return _contains(live, want)

    @staticmethod
    def _images(manifests: list[dict[str, Any]]) -> set[str]:
        images: set[str] = set()
        for m in manifests:
            pod = (((m.get("spec") or {}).get("template") or {}).get("spec")) or {}
            images.update(c.get("image", "") for c in pod.get("containers") or [] if c.get("image"))
        return images

    # -- syncing ---------------------------------------------------------------------------------

    @staticmethod
    def _begin(operation: dict[str, Any]) -> dict[str, Any]:
        return {"operation": operation, "phase": "Running", "message": "", "startedAt": _stamp(), "retryCount": 0}

    @staticmethod
    def _skip_auto_sync(op_state: dict[str, Any] | None, revision: str, policy: dict[str, Any]) -> str | None:
        """None to sync; else why not (Argo CD tries one automated sync per revision, healing drift only
        with selfHeal; "" skips without a condition)."""
        if not op_state:
            return None
        done_rev = ((op_state.get("syncResult") or {}).get("revision")) or (
            ((op_state.get("operation") or {}).get("sync") or {}).get("revision")
        )
        if done_rev != revision:
            return None
        if op_state.get("phase") in ("Failed", "Error"):
            retried = op_state.get("retryCount", 0)
            return f"Failed sync attempt to {revision}: {op_state.get('message')} (retried {retried} times)."
        return None if (policy.get("automated") or {}).get("selfHeal") else ""

    def _sync(
        self,
        app: dict[str, Any],
        op: dict[str, Any],
        targets: list[Target],
        live: dict[tuple[str, str, str, str], dict[str, Any] | None],
        project: dict[str, Any],
        revision: str,
        source: dict[str, Any],
        policy: dict[str, Any],
    ) -> None:
        uid = app["metadata"]["uid"]
        result = op.setdefault("syncResult", {"resources": [], "revision": revision, "source": source})
        result["revision"] = revision
        invalid = [(t, msg) for t in targets if (msg := self._not_permitted(t, project))]
        if invalid:
            result["resources"] = [
                {**t.row("SyncFailed", None), "message": msg, "hookPhase": "Failed", "syncPhase": "Sync"}
                for t, msg in invalid
            ]
            self._finish(op, "Failed", "one or more synchronization tasks are not valid")
            return
        if time.monotonic() < self.retry_at.get(uid, 0):
            return
        dest = (app.get("spec") or {}).get("destination") or {}
        options = set(policy.get("syncOptions") or [])
        waves = sorted({t.wave for t in targets})
        for wave in waves:
            in_wave = sorted((t for t in targets if t.wave == wave), key=lambda t: t.order)
            pending = [t for t in in_wave if not self._synced(t, live[t.key])]
            if pending:
                # Like gitops-engine, every task of the wave runs; the first failure fails the attempt.
                failure = ""
                try:
                    if "CreateNamespace=true" in options and dest.get("namespace"):
                        self._ensure_namespace(dest["namespace"])
                except kube.KubeError as exc:
                    failure = f"one or more objects failed to apply, reason: {exc.message}"
                for t in pending if not failure else []:
                    try:
                        self._apply(t, live[t.key], result)
                    except kube.KubeError as exc:
                        failure = failure or self._apply_error(exc, t)
                if failure:
                    self._failed(uid, op, policy, failure)
                return
            waiting = [t for t in in_wave if (h := health.assess(live[t.key])) is not None and h[0] != "Healthy"]
            if waiting and wave != waves[-1]:
                op["message"] = f"waiting for healthy state of {waiting[0].describe()}"
                return
        if (op.get("operation") or {}).get("sync", {}).get("prune"):
            self._prune(app, targets, result)
        self.retry_at.pop(uid, None)
        self._finish(op, "Succeeded", "successfully synced (all tasks run)")

    def _apply(self, t: Target, live: dict[str, Any] | None, result: dict[str, Any]) -> None:
        self.kube.apply(t.manifest, MANAGER)
        resource = f"{t.kind.lower()}{'.' + t.group if t.group else ''}/{t.name}"
        entry = {
            **t.row("Synced", None),
            "message": f"{resource} {'configured' if live else 'created'}",
            "hookPhase": "Running",
            "syncPhase": "Sync",
        }
        result["resources"] = [
            r for r in result["resources"] if (r["kind"], r["namespace"], r["name"]) != (t.kind, t.namespace, t.name)
        ]
        result["resources"].append(entry)

    def _apply_error(self, exc: kube.KubeError, t: Target) -> str:
        if "no matches for kind" in exc.message:
            return (
                f"one or more objects failed to apply, reason: The Kubernetes API could not find"
                f" {t.group}/{t.kind} for requested resource {t.namespace}/{t.name}."
                f' Make sure the "{t.kind}" CRD is installed on the destination cluster.'
            )
        return f"one or more objects failed to apply, reason: {exc.message}"

    def _ensure_namespace(self, name: str) -> None:
        if self.kube.get("v1", "Namespace", None, name) is None:
            try:
                self.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            except kube.KubeError as exc:
                if exc.code != 409:
                    raise

    def _failed(self, uid: str, op: dict[str, Any], policy: dict[str, Any], message: str) -> None:
        retry = ((op.get("operation") or {}).get("retry")) or policy.get("retry") or {}
        limit = int(retry.get("limit", 0))
        count = int(op.get("retryCount", 0))
        if limit < 0 or count < limit:
            backoff = retry.get("backoff") or {}
            delay = loop.go_duration(backoff.get("duration"), 5) * float(backoff.get("factor", 2)) ** count
            delay = min(delay, loop.go_duration(backoff.get("maxDuration"), 180))
            self.retry_at[uid] = time.monotonic() + delay
            op["retryCount"] = count + 1
            at = datetime.fromtimestamp(time.time() + delay, UTC).strftime("%H:%M:%S")
            op["message"] = f"Retrying attempt #{count + 1} at {at}: {message}"
            return
        self.retry_at.pop(uid, None)
        self._finish(op, "Failed", message)

    @staticmethod
    def _finish(op: dict[str, Any], phase: str, message: str) -> None:
        op.update(phase=phase, message=message, finishedAt=_stamp())

    def _prune(self, app: dict[str, Any], targets: list[Target], result: dict[str, Any]) -> None:
        wanted = {t.key for t in targets}
        for row in (app.get("status") or {}).get("resources") or []:
            key = (row["group"], row["kind"], row["namespace"], row["name"])
            found = self._live_row(row) if key not in wanted else None
            if found is not None and ((found["metadata"].get("annotations") or {}).get(TRACKING, "")).startswith(
                f"{app['metadata']['name']}:"
            ):
                self.kube.delete(found)
                result["resources"].append({**row, "status": "Pruned", "message": "pruned", "syncPhase": "Sync"})

    def _finalize(self, app: dict[str, Any]) -> None:
        """Cascade delete: the resources go first, then the finalizer, then (by the API) the app."""
        finalizers = app["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers:
            return
        for row in (app.get("status") or {}).get("resources") or []:
            found = self._live_row(row)
            if found is not None:
                self.kube.delete(found)
        self.kube.patch(app, {"metadata": {"finalizers": [f for f in finalizers if f != FINALIZER]}})
