"""`dr snapshot schedule`: the nightly CronJob and its alerts, as a kustomization directory.

OpenBao has no snapshot scheduler of its own, so the platform runs `dr
snapshot save --prune` from a CronJob in the `vault-admin` namespace (the
seed's namespace for Vault admin tools), authenticating to Vault with its
own service account through Kubernetes auth. The directory drops into the
platform repository under `infrastructure/platform/vault/snapshots/` and
Argo CD applies it like everything else. The PrometheusRule alerts when the
last success is older than `snapshots.stale_after`, when the last run
failed, when a Job failed, and when the metric is missing altogether; and,
from the metrics `dr drill` records, when the latest drill failed, when no
drill passed for `drills.overdue_after`, and when a drill's RTO was over
its target.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from dr import config as config_mod
from dr import errors

NAME: Final = "dr-snapshot"
CONFIG_PATH: Final = "/etc/dr/dr.yaml"
DATA_PATH: Final = "/var/lib/dr/snapshots"
POD_TMP: Final = "/tmp"  # noqa: S108 - inside the pod, backed by an emptyDir (the root filesystem is read-only)
POD_STATE_DIR: Final = "/tmp/dr"  # noqa: S108 - same emptyDir
_CRON_FIELD: Final = r"^(\*|[0-9*/,\-A-Za-z]+)$"


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "dr"}


def _check_cron(cron: str) -> None:
    import re

    fields = cron.split()
    if len(fields) != 5 or not all(re.match(_CRON_FIELD, f) for f in fields):
        raise errors.ConfigError(
            f"--cron {cron!r} is not a five-field cron schedule", hint='use e.g. "0 2 * * *" (02:00 every day, UTC)'
        )


def job_config(config: config_mod.Config) -> dict[str, Any]:
    """The dr.yaml the CronJob runs with: in-cluster Vault, Kubernetes auth, the store, the Pushgateway."""
    s = config.snapshots
    file_store = not s.store.startswith("s3://")
    snapshots: dict[str, Any] = {
        "store": DATA_PATH if file_store else s.store,
        "keep_last": s.keep_last,
        "keep_daily": s.keep_daily,
        "keep_weekly": s.keep_weekly,
        "keep_monthly": s.keep_monthly,
        "min_age": f"{int(s.min_age)}s",
    }
    for key in ("s3_endpoint", "s3_region", "s3_sse", "s3_kms_key_id", "s3_object_lock_days", "pushgateway"):
        value = getattr(s, key)
        if value is not None:
            snapshots[key] = value
    return {
        "log_format": "json",
        "cluster": {"name": config.cluster.name},
        "vault": {
            "addresses": list(config.vault.addresses) or ["http://vault-active.vault.svc:8200"],
            "auth": {"method": "kubernetes", "role": NAME},
        },
        "snapshots": snapshots,
    }


def _dump(doc: Any) -> str:
    if isinstance(doc, list):
        return str(yaml.safe_dump_all(doc, sort_keys=False))
    return str(yaml.safe_dump(doc, sort_keys=False))


def render(config: config_mod.Config, cron: str) -> dict[str, str]:
    """File name → YAML text of every manifest, kustomization.yaml included."""
    _check_cron(cron)
    s = config.snapshots
    ns = s.namespace
    file_store = not s.store.startswith("s3://")

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": ns, "labels": _labels()}

    docs: dict[str, Any] = {
        "serviceaccount.yaml": {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(NAME),
            "automountServiceAccountToken": True,
        },
        "rbac.yaml": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta(NAME),
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [NAME], "verbs": ["get"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta(NAME),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
                "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}],
            },
        ],
        "configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(NAME),
            "data": {"dr.yaml": yaml.safe_dump(job_config(config), sort_keys=False)},
        },
    }
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": NAME}}]
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": "/etc/dr", "readOnly": True}]
    if file_store:
        docs["pvc.yaml"] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta(f"{NAME}-data"),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
        }
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": f"{NAME}-data"}})
        mounts.append({"name": "data", "mountPath": DATA_PATH})
    container = {
        "name": "save",
        "image": s.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["snapshot", "save", "--prune"],
        "env": [{"name": "DR_CONFIG", "value": CONFIG_PATH}, {"name": "DR_STATE_DIR", "value": POD_STATE_DIR}],
        # Store credentials (AWS_ACCESS_KEY_ID, …) come from a Secret the platform provides, e.g. through ESO.
        "envFrom": [{"secretRef": {"name": f"{NAME}-store", "optional": True}}],
        "resources": {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": POD_TMP}],
    }
    volumes.append({"name": "tmp", "emptyDir": {}})
    docs["cronjob.yaml"] = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta(NAME),
        "spec": {
            "schedule": cron,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            # No `suspend` here: `dr recover` suspends the CronJob until the restore is verified, and a
            # `suspend: false` in Git would be drift that Argo CD's selfHeal reverts mid-recovery.
            "jobTemplate": {
                "metadata": {"labels": _labels()},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 3600,
                    "template": {
                        "metadata": {"labels": _labels()},
                        "spec": {
                            "serviceAccountName": NAME,
                            "restartPolicy": "Never",
                            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532},
                            "containers": [container],
                            "volumes": volumes,
                        },
                    },
                },
            },
        },
    }
    stale = int(s.stale_after)
    overdue = int(config.drills.overdue_after)
    who = f'cluster="{config.cluster.name}"'

    docs["prometheusrule.yaml"] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {**meta(NAME), "labels": {**_labels(), "release": "kube-prometheus-stack"}},
        "spec": {
            "groups": [
                {
                    "name": "dr-snapshot",
                    "rules": [
                        {
                            "alert": "DRSnapshotStale",
                            "expr": f"time() - dr_snapshot_last_success_timestamp_seconds{{{who}}} > {stale}",
                            "for": "10m",
                            "labels": {"severity": "critical"},
                            "annotations": {
                                "summary": "No successful Vault snapshot for more than " + f"{stale // 3600}h",
                                "runbook_url": "runbooks/raft-restore.md",
                            },
                        },
                        {
                            "alert": "DRSnapshotFailed",
                            "expr": f"dr_snapshot_last_run_success{{{who}}} == 0",
                            "for": "5m",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "The latest Vault snapshot run failed; see the dr-snapshot Job's logs"
                            },
                        },
                        {
                            "alert": "DRSnapshotJobFailed",
                            "expr": f'kube_job_status_failed{{namespace="{ns}", job_name=~"{NAME}-.*"}} > 0',
                            "for": "5m",
                            "labels": {"severity": "warning"},
                            "annotations": {"summary": "A dr-snapshot Job failed"},
                        },
                        {
                            "alert": "DRSnapshotMetricMissing",
                            "expr": f"absent(dr_snapshot_last_success_timestamp_seconds{{{who}}})",
                            "for": "1h",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "No dr_snapshot metric: the job never succeeded or cannot push metrics"
                            },
                        },
                    ],
                },
                {
                    # dr drill pushes these (drills.metrics_textfile / drills.pushgateway): a DR plan nobody has
                    # rehearsed lately is a guess, so an overdue drill pages like a failed one.
                    "name": "dr-drill",
                    "rules": [
                        {
                            "alert": "DRDrillFailed",
                            "expr": "dr_drill_last_run_success == 0",
                            "for": "5m",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "The latest DR drill did not pass; `dr report` shows where it failed",
                                "runbook_url": "runbooks/drill.md",
                            },
                        },
                        {
                            "alert": "DRDrillOverdue",
                            "expr": f"time() - dr_drill_last_success_timestamp_seconds > {overdue}",
                            "for": "1h",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": f"No passing DR drill for more than {overdue // 86400} days",
                                "runbook_url": "runbooks/drill.md",
                            },
                        },
                        {
                            "alert": "DRDrillRTOOverTarget",
                            "expr": "dr_drill_rto_seconds > dr_drill_rto_target_seconds",
                            "for": "5m",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "The latest DR drill recovered, but slower than the RTO target",
                                "runbook_url": "runbooks/drill.md",
                            },
                        },
                    ],
                },
            ]
        },
    }
    files = {
        name: yaml.safe_dump_all(doc, sort_keys=False)
        if isinstance(doc, list)
        else yaml.safe_dump(doc, sort_keys=False)
        for name, doc in docs.items()
    }
    files["kustomization.yaml"] = _dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": ns,
            "resources": sorted(docs),
        },
    )
    return files
