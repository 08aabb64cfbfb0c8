"""Argo CD's health assessment, per kind, with gitops-engine's rules and messages.

Only the kinds the platform uses are assessed; like Argo CD, a kind without a
health check has no health (it is left out of the app's aggregate). An
`Application` inside an app-of-apps has none either, as in Argo CD since 1.8:
a parent app is Healthy while a child app is still Progressing, so a
recovery must look at every Application, not only the root.
"""

from __future__ import annotations

from typing import Any

ORDER = ["Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown"]


def worst(statuses: list[str]) -> str:
    return max(statuses, key=ORDER.index) if statuses else "Healthy"


def _generation_seen(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return int(obj["metadata"].get("generation", 1)) <= int(status.get("observedGeneration", 0))


def _deployment(obj: dict[str, Any]) -> tuple[str, str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    name = obj["metadata"]["name"]
    if spec.get("paused"):
        return "Suspended", "Deployment is paused"
    if not _generation_seen(obj):
        return (
            "Progressing",
            "Waiting for rollout to finish: observed deployment generation less than desired generation",
        )
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "Degraded", f'Deployment "{name}" exceeded its progress deadline'
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < replicas:
        return "Progressing", (
            f"Waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated..."
        )
    if available < updated:
        return (
            "Progressing",
            f"Waiting for rollout to finish: {available} of {updated} updated replicas are available...",
        )
    return "Healthy", ""


def _statefulset(obj: dict[str, Any]) -> tuple[str, str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not status.get("observedGeneration") or not _generation_seen(obj):
        return "Progressing", "Waiting for statefulset spec update to be observed..."
    replicas = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0))
    if ready < replicas:
        return "Progressing", f"Waiting for {replicas - ready} pods to be ready..."
    return (
        "Healthy",
        f"statefulset rolling update complete {replicas} pods at revision {status.get('updateRevision', '')}...",
    )


def _daemonset(obj: dict[str, Any]) -> tuple[str, str]:
    status = obj.get("status") or {}
    if not _generation_seen(obj):
        return (
            "Progressing",
            "Waiting for rollout to finish: observed daemon set generation less than desired generation",
        )
    desired, available = int(status.get("desiredNumberScheduled", 0)), int(status.get("numberAvailable", 0))
    if available < desired:
        return "Progressing", (
            f'Waiting for daemon set "{obj["metadata"]["name"]}" rollout to finish:'
            f" {available} of {desired} updated pods are available..."
        )
    return "Healthy", ""


def _pvc(obj: dict[str, Any]) -> tuple[str, str]:
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Bound":
        return "Healthy", ""
    if phase == "Lost":
        return "Degraded", ""
    return "Progressing", ""


def _ready_condition(obj: dict[str, Any], waiting: str) -> tuple[str, str]:
    """The Lua checks Argo ships for external-secrets.io: the Ready condition decides."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "False":
                return "Degraded", str(cond.get("message", ""))
            if cond.get("status") == "True":
                return "Healthy", str(cond.get("message", ""))
    return "Progressing", waiting


def assess(obj: dict[str, Any] | None) -> tuple[str, str] | None:
    """(status, message), or None when Argo CD has no health check for the kind."""
    if obj is None:
        return "Missing", ""
    kind = obj.get("kind")
    if kind == "Deployment":
        return _deployment(obj)
    if kind == "StatefulSet":
        return _statefulset(obj)
    if kind == "DaemonSet":
        return _daemonset(obj)
    if kind == "PersistentVolumeClaim":
        return _pvc(obj)
    if kind == "Service":
        return "Healthy", ""
    if kind == "ExternalSecret":
        return _ready_condition(obj, "Waiting for ExternalSecret")
    if kind in ("ClusterSecretStore", "SecretStore"):
        return _ready_condition(obj, "Waiting for SecretStore")
    return None
