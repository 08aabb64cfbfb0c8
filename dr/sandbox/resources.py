"""The resource types the emulated API serves, and the discovery documents that describe them.

The real `kubernetes` client, its dynamic client and kubectl find resources
through discovery (`/api`, `/apis`, `/apis/<group>/<version>`), so the
emulator must describe exactly what it serves. Built-in types are a fixed
table covering what the platform uses; a CustomResourceDefinition adds its
own type at runtime, and it appears in discovery as soon as it is created.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def discovery(self) -> list[dict[str, Any]]:
        entries = [
            {
                "name": self.plural,
                "singularName": self.singular or self.kind.lower(),
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": VERBS,
                **({"shortNames": list(self.short_names)} if self.short_names else {}),
            }
        ]
        for sub in self.subresources:
            verbs = (
                ["create"]
                if sub == "token"
                else (["get", "create"] if sub == "portforward" else ["get", "patch", "update"])
            )
            kind = {"token": "TokenRequest", "portforward": "PodPortForwardOptions"}.get(sub, self.kind)
            entries.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
        return entries


def _r(
    group: str, version: str, plural: str, kind: str, namespaced: bool = True, *subs: str, short: tuple[str, ...] = ()
) -> Resource:
    return Resource(group, version, plural, kind, namespaced, kind.lower(), subs, short)


BUILTIN = [
    _r("", "v1", "namespaces", "Namespace", False, "status", "finalize", short=("ns",)),
    _r("", "v1", "pods", "Pod", True, "status", "portforward", short=("po",)),
    _r("", "v1", "services", "Service", True, "status", short=("svc",)),
    _r("", "v1", "endpoints", "Endpoints", True, short=("ep",)),
    _r("", "v1", "configmaps", "ConfigMap", True, short=("cm",)),
    _r("", "v1", "secrets", "Secret", True),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, "token", short=("sa",)),
    _r("", "v1", "events", "Event", True, short=("ev",)),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, "status", short=("pvc",)),
    _r("", "v1", "nodes", "Node", False, "status", short=("no",)),
    _r("apps", "v1", "deployments", "Deployment", True, "status", short=("deploy",)),
    _r("apps", "v1", "statefulsets", "StatefulSet", True, "status", short=("sts",)),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, "status", short=("ds",)),
    _r("apps", "v1", "replicasets", "ReplicaSet", True, "status", short=("rs",)),
    _r("batch", "v1", "jobs", "Job", True, "status"),
    _r("batch", "v1", "cronjobs", "CronJob", True, "status", short=("cj",)),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("coordination.k8s.io", "v1", "leases", "Lease", True),
    _r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "status",
        short=("crd", "crds"),
    ),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, short=("netpol",)),
    _r("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False),
]


@dataclass
class Registry:
    """Every servable type, by (group, version, plural); CRDs add to it while the server runs."""

    resources: dict[tuple[str, str, str], Resource] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for r in BUILTIN:
            self.resources[(r.group, r.version, r.plural)] = r

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        return self.resources.get((group, version, plural))

    def by_kind(self, group_version: str, kind: str) -> Resource | None:
        for r in self.resources.values():
            if r.group_version == group_version and r.kind == kind:
                return r
        return None

    def add_crd(self, crd: dict[str, Any]) -> list[Resource]:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        added = []
        with self._lock:
            for version in spec.get("versions", []):
                if not version.get("served", True):
                    continue
                subs = tuple(k for k in ("status", "scale") if k in (version.get("subresources") or {}))
                r = Resource(
                    spec.get("group", ""),
                    version["name"],
                    names["plural"],
                    names["kind"],
                    spec.get("scope", "Namespaced") == "Namespaced",
                    names.get("singular", ""),
                    subs,
                    tuple(names.get("shortNames", [])),
                )
                self.resources[(r.group, r.version, r.plural)] = r
                added.append(r)
        return added

    def remove_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec", {})
        with self._lock:
            for version in spec.get("versions", []):
                self.resources.pop((spec.get("group", ""), version["name"], spec["names"]["plural"]), None)

    # -- discovery documents ---------------------------------------------------------

    def core_versions(self) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }

    def groups(self) -> dict[str, Any]:
        by_group: dict[str, list[str]] = {}
        for r in list(self.resources.values()):
            if r.group:
                by_group.setdefault(r.group, [])
                if r.version not in by_group[r.group]:
                    by_group[r.group].append(r.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self.group(g, v) for g, v in sorted(by_group.items())],
        }

    def group(self, name: str, versions: list[str] | None = None) -> dict[str, Any]:
        found = versions or sorted({r.version for r in self.resources.values() if r.group == name})
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in found]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": entries,
            "preferredVersion": entries[0] if entries else {},
        }

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        found = [r for r in list(self.resources.values()) if r.group == group and r.version == version]
        if not found:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": found[0].group_version,
            "resources": [e for r in found for e in r.discovery()],
        }
