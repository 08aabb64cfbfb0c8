"""Schema checks for rendered Kubernetes manifests, from the kubernetes client's generated models.

The client's models are strict pydantic models generated from the API's
OpenAPI schema (extra fields forbidden, strict types, required fields), so
validating a manifest against them catches what `kubectl apply
--dry-run=client` would: unknown fields, wrong types, missing required
fields. Custom resources are checked against the closed JSON schemas below,
which hold the fields of the upstream CRDs that the project's manifests use.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes.client
import pydantic

from dr.recovery import vaultconfig

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
MODELS.update(
    {
        ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "V1CustomResourceDefinition",
    }
)
PROMETHEUS_RULE_FIELDS = {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    """A closed JSON-schema object: unknown fields are errors, as with the CRDs' structural schemas."""
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


_STR: dict[str, Any] = {"type": "string"}
_STRS: dict[str, Any] = {"type": "array", "items": _STR}
_ANY: dict[str, Any] = {"type": "object"}
_META = {"type": "object", "required": ["name"]}
_GK = {"type": "array", "items": _obj(["group", "kind"], group=_STR, kind=_STR)}
_SOURCE = {
    **_obj(
        ["repoURL"], repoURL=_STR, path=_STR, chart=_STR, targetRevision=_STR, helm=_ANY, directory=_ANY, kustomize=_ANY
    ),
    "oneOf": [{"required": ["path"]}, {"required": ["chart"]}],
}
_SYNC_POLICY = _obj(
    [],
    automated=_obj([], prune={"type": "boolean"}, selfHeal={"type": "boolean"}, allowEmpty={"type": "boolean"}),
    syncOptions=_STRS,
    retry=_obj(
        [], limit={"type": "integer"}, backoff=_obj([], duration=_STR, factor={"type": "integer"}, maxDuration=_STR)
    ),
)
# The fields of Argo CD's, ESO's and the Prometheus operator's CRDs that the examples use (from their API types).
CUSTOM: dict[tuple[str, str], dict[str, Any]] = {
    ("argoproj.io/v1alpha1", "Application"): _obj(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=_STR,
        kind=_STR,
        metadata=_META,
        spec=_obj(
            ["project", "source", "destination"],
            project=_STR,
            source=_SOURCE,
            destination=_obj(["namespace"], server=_STR, name=_STR, namespace=_STR),
            syncPolicy=_SYNC_POLICY,
        ),
    ),
    ("argoproj.io/v1alpha1", "AppProject"): _obj(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=_STR,
        kind=_STR,
        metadata=_META,
        spec=_obj(
            ["sourceRepos", "destinations"],
            description=_STR,
            sourceRepos=_STRS,
            destinations={"type": "array", "items": _obj(["namespace"], server=_STR, name=_STR, namespace=_STR)},
            clusterResourceWhitelist=_GK,
            clusterResourceBlacklist=_GK,
            namespaceResourceWhitelist=_GK,
            namespaceResourceBlacklist=_GK,
        ),
    ),
    ("external-secrets.io/v1", "ClusterSecretStore"): _obj(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=_STR,
        kind=_STR,
        metadata=_META,
        spec=_obj(
            ["provider"],
            provider=_obj(
                ["vault"],
                vault=_obj(
                    ["server", "path", "version", "auth"],
                    server=_STR,
                    path=_STR,
                    version={"enum": ["v1", "v2"]},
                    auth=_obj(
                        ["kubernetes"],
                        kubernetes=_obj(
                            ["mountPath", "role", "serviceAccountRef"],
                            mountPath=_STR,
                            role=_STR,
                            serviceAccountRef=_obj(["name"], name=_STR, namespace=_STR, audiences=_STRS),
                        ),
                    ),
                ),
            ),
        ),
    ),
    ("external-secrets.io/v1", "ExternalSecret"): _obj(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=_STR,
        kind=_STR,
        metadata=_META,
        spec=_obj(
            ["secretStoreRef", "target"],
            refreshInterval=_STR,
            secretStoreRef=_obj(["name", "kind"], name=_STR, kind={"enum": ["SecretStore", "ClusterSecretStore"]}),
            target=_obj(["name"], name=_STR, creationPolicy={"enum": ["Owner", "Orphan", "Merge", "None"]}),
            data={
                "type": "array",
                "items": _obj(
                    ["secretKey", "remoteRef"],
                    secretKey=_STR,
                    remoteRef=_obj(["key"], key=_STR, property=_STR, version=_STR),
                ),
            },
        ),
    ),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): _obj(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=_STR,
        kind=_STR,
        metadata=_META,
        spec=_obj(
            ["route", "receivers"],
            route=_obj(
                ["receiver"],
                receiver=_STR,
                groupBy=_STRS,
                groupWait=_STR,
                groupInterval=_STR,
                repeatInterval=_STR,
            ),
            receivers={
                "type": "array",
                "items": _obj(
                    ["name"],
                    name=_STR,
                    discordConfigs={
                        "type": "array",
                        "items": _obj(
                            ["apiURL"],
                            apiURL=_obj(["name", "key"], name=_STR, key=_STR),
                            sendResolved={"type": "boolean"},
                        ),
                    },
                ),
            },
            inhibitRules={"type": "array", "items": _ANY},
        ),
    ),
}


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
    if (api, kind) == ("dr.dev/v1alpha1", "VaultPlatform"):  # dr's own format: its own model is the schema
        try:
            vaultconfig.VaultPlatform.model_validate(doc)
        except pydantic.ValidationError as exc:
            return [f"{name}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return []
    schema = CUSTOM.get((str(api), str(kind)))
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    model = MODELS.get((api, kind))
    if model is None:
        return [f"{name}: no schema for {api} {kind}"]
    try:
        getattr(kubernetes.client, model).model_validate(doc)
    except pydantic.ValidationError as exc:
        return [f"{name}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return []
