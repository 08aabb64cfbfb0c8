"""`dr snapshot schedule`: manifests that validate against the Kubernetes schema and fit the seed's layout."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from dr import __version__, cli
from tests import kube_schema


def render(tmp_path: Path, *extra: str, config: str = "") -> Path:
    out = tmp_path / "snapshots"
    (tmp_path / "dr.yaml").write_text(
        config or "cluster: {name: prod}\nsnapshots: {pushgateway: http://pushgateway.observability.svc:9091}\n"
    )
    result = CliRunner().invoke(
        cli.cli,
        [
            "--config",
            str(tmp_path / "dr.yaml"),
            "snapshot",
            "schedule",
            "--cron",
            "0 2 * * *",
            "--output",
            str(out),
            *extra,
        ],
    )
    assert 0 == result.exit_code, result.output
    return out


def docs(out: Path) -> list[dict]:  # type: ignore[type-arg]
    found = []
    for path in sorted(out.glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def test_every_manifest_is_schema_valid(tmp_path: Path) -> None:
    """Each rendered document passes the schema check (unknown fields, types, required fields)."""
    rendered = docs(render(tmp_path))
    kinds = sorted(d["kind"] for d in rendered)
    assert [
        "ConfigMap",
        "CronJob",
        "Kustomization",
        "PersistentVolumeClaim",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ] == kinds
    for doc in rendered:
        assert [] == kube_schema.validate(doc), doc["kind"]


def test_the_schema_check_catches_mistakes() -> None:
    """The checker itself rejects an unknown field, a wrong type and a missing required field."""
    bad = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "x"},
        "spec": {
            "schedule": "0 2 * * *",
            "concurencyPolicy": "Forbid",
            "suspend": "no",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
        },
    }
    problems = " ".join(kube_schema.validate(bad))
    assert "spec.concurencyPolicy: Extra inputs are not permitted" in problems
    assert "spec.suspend: Input should be a valid boolean" in problems
    assert "containers.0.name: Field required" in problems


def test_cronjob_is_safe_to_run_nightly(tmp_path: Path) -> None:
    """Forbid concurrency, a starting deadline, history limits, resources, a pinned image, non-root."""
    (cronjob,) = [d for d in docs(render(tmp_path)) if d["kind"] == "CronJob"]
    spec = cronjob["spec"]
    assert ("0 2 * * *", "Forbid", "vault-admin") == (
        spec["schedule"],
        spec["concurrencyPolicy"],
        cronjob["metadata"]["namespace"],
    )
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"]
    assert spec["failedJobsHistoryLimit"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert ":" in container["image"]
    assert not container["image"].endswith(":latest")
    assert {"requests", "limits"} <= set(container["resources"])
    assert ["snapshot", "save", "--prune"] == container["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"secretRef": {"name": "dr-snapshot-store", "optional": True}} in container["envFrom"]


def test_job_config_is_a_valid_dr_config_using_kubernetes_auth(tmp_path: Path) -> None:
    """The dr.yaml in the ConfigMap loads with dr's own validation and logs in through Kubernetes auth."""
    from dr import config

    (configmap,) = [d for d in docs(render(tmp_path)) if d["kind"] == "ConfigMap"]
    path = tmp_path / "job.yaml"
    path.write_text(configmap["data"]["dr.yaml"])
    loaded = config.load(path, env={})
    assert ("kubernetes", "dr-snapshot") == (loaded.vault.auth.method, loaded.vault.auth.role)
    assert loaded.snapshots.pushgateway == "http://pushgateway.observability.svc:9091"


def test_alerts_cover_stale_failed_and_missing(tmp_path: Path) -> None:
    """The PrometheusRule alerts on a stale snapshot (configured age), a failed run or Job, a missing metric."""
    (rule,) = [
        d
        for d in docs(render(tmp_path, config="cluster: {name: prod}\nsnapshots: {stale_after: 30h}\n"))
        if d["kind"] == "PrometheusRule"
    ]
    alerts = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert {"DRSnapshotStale", "DRSnapshotFailed", "DRSnapshotJobFailed", "DRSnapshotMetricMissing"} == set(alerts)
    assert alerts["DRSnapshotStale"].endswith(f"> {30 * 3600}")
    assert alerts["DRSnapshotMetricMissing"].startswith("absent(")
    assert "kube-prometheus-stack" == rule["metadata"]["labels"]["release"]


def test_output_is_a_kustomization_directory(tmp_path: Path) -> None:
    """kustomization.yaml lists every other file, so the directory drops into infrastructure/platform/vault/."""
    out = render(tmp_path)
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert sorted(p.name for p in out.glob("*.yaml") if p.name != "kustomization.yaml") == sorted(
        kustomization["resources"]
    )
    assert "vault-admin" == kustomization["namespace"]


def test_s3_store_needs_no_volume(tmp_path: Path) -> None:
    """With an S3 store there is no PVC, and the job config carries the bucket URL."""
    out = render(tmp_path, config="cluster: {name: prod}\nsnapshots: {store: 's3://backups/vault', s3_sse: AES256}\n")
    assert not (out / "pvc.yaml").exists()
    (configmap,) = [d for d in docs(out) if d["kind"] == "ConfigMap"]
    job = yaml.safe_load(configmap["data"]["dr.yaml"])
    assert ("s3://backups/vault", "AES256") == (job["snapshots"]["store"], job["snapshots"]["s3_sse"])


def test_bad_cron_is_exit_2(tmp_path: Path) -> None:
    """A schedule that is not five cron fields is refused before anything is written."""
    result = CliRunner().invoke(
        cli.cli, ["snapshot", "schedule", "--cron", "every night", "--output", str(tmp_path / "x")]
    )
    assert 2 == result.exit_code
    assert "is not a five-field cron schedule" in result.output
    assert not (tmp_path / "x").exists()


def test_the_example_platform_carries_the_schedule_as_rendered(tmp_path: Path) -> None:
    """examples/platform's snapshot directory is `dr snapshot schedule` output for the default config, unedited."""
    example = Path(__file__).parents[2] / "examples/platform/infrastructure/platform/vault/snapshots"
    pinned = next(d for d in yaml.safe_load_all((example / "cronjob.yaml").read_text()) if d)
    image = pinned["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(rf"ghcr\.io/dr-project/dr:{re.escape(__version__)}@sha256:[0-9a-f]{{64}}", image), (
        f"{image}: pin the example to the digest `make image` built (python image/build.py --pin-example)"
    )
    out = render(tmp_path, "--image", image, config="{}\n")
    rendered = {p.name: p.read_text() for p in out.glob("*.yaml")}
    assert rendered == {p.name: p.read_text() for p in example.glob("*.yaml")}, (
        "re-render: dr snapshot schedule --cron '0 2 * * *' --output " + str(example)
    )
    cronjob = next(d for d in docs(out) if d["kind"] == "CronJob")
    assert "suspend" not in cronjob["spec"], "a suspend: false in Git would undo dr's suspension through selfHeal"
