"""examples/platform is valid Kubernetes YAML that a real Argo CD could sync, laid out as the seed's infrastructure/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests import kube_schema

ROOT = Path(__file__).resolve().parents[1] / "examples" / "platform"
FILES = sorted(p for p in ROOT.rglob("*.yaml"))


def documents(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_document_matches_its_kinds_schema(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} is empty"
    problems = [problem for doc in docs for problem in kube_schema.validate(doc)]
    assert [] == problems


def test_the_seed_layout_and_every_kustomization_resource_exists() -> None:
    """The seed's infrastructure/ tree: four team apps, their directories, each kustomization's entries present."""
    infra = ROOT / "infrastructure"
    for name in ("platform-tools-app", "observability-app", "security-app", "workloads-app", "argo-projects"):
        assert (infra / f"{name}.yaml").is_file()
    for directory in (
        "platform/vault",
        "platform/external-secrets",
        "platform/argo-cd",
        "observability/prometheus",
        "observability/alertmanager",
        "observability/grafana",
        "security/rbac",
        "workloads",
    ):
        assert (infra / directory / "kustomization.yaml").is_file(), directory
    for kustomization in ROOT.rglob("kustomization.yaml"):
        for entry in documents(kustomization)[0]["resources"]:  # type: ignore[attr-defined]
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry}"


def test_four_projects_and_a_vault_backend_store_with_kubernetes_auth() -> None:
    projects = {d["metadata"]["name"]: d for d in documents(ROOT / "infrastructure" / "argo-projects.yaml")}  # type: ignore[index]
    assert {"platform-tools", "platform-observability", "platform-security", "workloads"} == set(projects)
    workloads = projects["workloads"]["spec"]  # type: ignore[index]
    assert {"workloads", "applications", "services"} == {d["namespace"] for d in workloads["destinations"]}
    (store,) = documents(ROOT / "infrastructure" / "platform" / "external-secrets" / "secretstore.yaml")
    assert "vault-backend" == store["metadata"]["name"]  # type: ignore[index]
    assert "kubernetes" in store["spec"]["provider"]["vault"]["auth"]  # type: ignore[index]


def test_a_schema_violation_is_reported() -> None:
    """The checker itself: an unknown field and a missing one in a custom resource are both caught."""
    (app,) = documents(ROOT / "infrastructure" / "workloads-app.yaml")
    app["spec"]["sourceRepo"] = app["spec"].pop("source")  # type: ignore[index]
    problems = " ".join(kube_schema.validate(app))
    assert "'source' is a required property" in problems
    assert "sourceRepo" in problems
