"""Schema checks for rendered Kubernetes manifests, from the kubernetes client's generated models.

The client's models are strict pydantic models generated from the API's
OpenAPI schema (extra fields forbidden, strict types, required fields), so
validating a manifest against them catches what `kubectl apply
--dry-run=client` would: unknown fields, wrong types, missing required
fields. Custom resources are checked against the small schemas below.
"""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pydantic

MODELS = {
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Service"): "V1Service",
    ("batch/v1", "CronJob"): "V1CronJob",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
}
PROMETHEUS_RULE_FIELDS = {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}


def validate(doc: dict[str, Any]) -> list[str]:
    """Problems found in one manifest (empty when it is valid)."""
    api, kind = doc.get("apiVersion"), doc.get("kind")
    name = f"{kind}/{doc.get('metadata', {}).get('name')}"
    if (api, kind) == ("monitoring.coreos.com/v1", "PrometheusRule"):
        problems = []
        for g, group in enumerate(doc.get("spec", {}).get("groups", [])):
            if not group.get("name") or not group.get("rules"):
                problems.append(f"{name}: group {g} needs name and rules")
            for r, rule in enumerate(group.get("rules", [])):
                unknown = set(rule) - PROMETHEUS_RULE_FIELDS
                if unknown or not rule.get("expr") or not (rule.get("alert") or rule.get("record")):
                    problems.append(f"{name}: rule {g}.{r} is malformed ({sorted(unknown)})")
        return problems
    if (api, kind) == ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        return [] if isinstance(doc.get("resources"), list) else [f"{name}: resources must be a list"]
    model = MODELS.get((api, kind))
    if model is None:
        return [f"{name}: no schema for {api} {kind}"]
    try:
        getattr(kubernetes.client, model).model_validate(doc)
    except pydantic.ValidationError as exc:
        return [f"{name}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return []
