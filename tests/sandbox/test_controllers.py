"""The node agent, the simulated workload and Argo CD controllers, in this process, on each API backend.

On the real control plane kube-controller-manager owns the workloads and kube-scheduler binds the pods, and
the agent only plays the kubelet and the volume provisioner; on the emulator the agent does all of it.

Faster and more precise than the whole platform: each test writes a small
Git-shaped repository, points an Application at it and watches what Argo CD's
stand-in does, through the kubernetes client as a user would.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from dr.adapters import certs
from dr.sandbox import argocd, backends, charts, kube, workloads
from tests.polling import eventually

REPO = "https://git.example/platform.git"


class Cluster:
    def __init__(self, api: backends.Emulated | backends.Real, client: kubernetes.client.ApiClient, root: Path) -> None:
        self.api, self.client, self.repo, self.volumes = api, client, root / "repo", root / "volumes"
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps_api = kubernetes.client.AppsV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    def app(self, name: str) -> dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                "argoproj.io", "v1alpha1", "argocd", "applications", name
            )
        except kubernetes.client.ApiException:
            return {}

    def create_app(self, name: str, path: str, *, automated: bool = True, **spec: Any) -> None:
        body = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {"repoURL": REPO, "path": path},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
                "syncPolicy": {
                    **({"automated": {"prune": True, "selfHeal": True}} if automated else {}),
                    "syncOptions": ["CreateNamespace=true"],
                },
                **spec,
            },
        }
        self.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications", body)

    def write(self, path: str, docs: list[dict[str, Any]]) -> None:
        target = self.repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump_all(docs))


def deployment(name: str, wave: int = 0, replicas: int = 1) -> dict[str, Any]:
    made = charts.workload("Deployment", name, "", {"app": name}, "nginx:1.27", replicas=replicas)
    del made["metadata"]["namespace"]
    if wave:
        made["metadata"]["annotations"] = {argocd.WAVE: str(wave)}
    return made


@pytest.fixture(scope="module", params=["real", "emulated"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An API, the workload controller (pods Ready after 0.5 s) and Argo CD, installed as a user installs it."""
    root = tmp_path_factory.mktemp(f"controllers-{request.param}")
    api = backends.make(request.param, root, certs.CertificateAuthority(root / "ca"), secrets.token_urlsafe(32))
    api.start()
    stop = threading.Event()
    client = kube.Kube(api.url, api.token, str(api.ca.cert_path))
    repo = root / "repo"
    repo.mkdir()
    controllers = [
        workloads.Workloads(
            client.clone(),
            stop,
            network=workloads.Network(root / "network.json"),
            volumes=root / "volumes",
            ready_seconds=lambda: 0.5,
            failing=lambda: set(),
            runtimes=[],
            kubelet_only=api.name == "real",
        ),
        argocd.ArgoCD(client.clone(), stop, repos=lambda: {REPO: str(repo)}, refresh_seconds=lambda: 3600.0),
    ]
    for controller in controllers:
        controller.start()
    config = root / "kubeconfig"
    config.write_text(yaml.safe_dump(api.kubeconfig))
    made = Cluster(api, kubernetes.config.new_client_from_config(str(config)), root)
    made.core.create_namespace({"metadata": {"name": "argocd"}})
    for obj in charts.argo_cd("argo-cd", "argocd", "argocd", "argocd", {}):
        client.create(obj)
    try:
        yield made
    finally:
        stop.set()
        api.stop()


def test_pods_get_their_own_loopback_ips_become_ready_and_come_back_when_deleted(cluster: Cluster) -> None:
    ns = f"w-{secrets.token_hex(3)}"
    cluster.core.create_namespace({"metadata": {"name": ns}})
    body = deployment("web", replicas=3)
    body["metadata"]["namespace"] = ns
    cluster.apps_api.create_namespaced_deployment(ns, body)
    deploy = eventually(
        lambda: (
            (d := cluster.apps_api.read_namespaced_deployment("web", ns)).status and d.status.ready_replicas == 3 and d
        ),
        "three ready replicas",
    )
    assert 3 == deploy.status.available_replicas
    pods = cluster.core.list_namespaced_pod(ns).items
    ips = {p.status.pod_ip for p in pods}
    assert 3 == len(ips)
    assert all(ip.startswith("127.") for ip in ips)
    assert all(p.metadata.owner_references[0].name.startswith("web") for p in pods)  # real: its ReplicaSet
    cluster.core.delete_namespaced_pod(pods[0].metadata.name, ns)
    eventually(
        lambda: (
            (names := {p.metadata.name for p in cluster.core.list_namespaced_pod(ns).items})
            and len(names) == 3
            and pods[0].metadata.name not in names
        ),
        "the deleted pod replaced",
    )


def test_statefulset_pods_are_ordered_keep_their_names_and_claims(cluster: Cluster) -> None:
    ns = f"s-{secrets.token_hex(3)}"
    cluster.core.create_namespace({"metadata": {"name": ns}})
    body = charts.workload(
        "StatefulSet",
        "db",
        ns,
        {"app": "db"},
        "postgres:16",
        replicas=3,
        extra={
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ]
        },
    )
    cluster.apps_api.create_namespaced_stateful_set(ns, body)
    # OrderedReady: db-1 is created only once db-0 is Ready.
    first = eventually(lambda: cluster.core.list_namespaced_pod(ns).items, "db-0")
    assert ["db-0"] == [p.metadata.name for p in first]
    eventually(
        lambda: (
            ((s := cluster.apps_api.read_namespaced_stateful_set("db", ns)).status and s.status.ready_replicas) == 3
        ),
        "three ready",
    )
    pods = {p.metadata.name: p for p in cluster.core.list_namespaced_pod(ns).items}
    assert {"db-0", "db-1", "db-2"} == set(pods)
    claims = {c.metadata.name: c for c in cluster.core.list_namespaced_persistent_volume_claim(ns).items}
    assert {"data-db-0", "data-db-1", "data-db-2"} == set(claims)
    assert {"Bound"} == {c.status.phase for c in claims.values()}
    ip = pods["db-1"].status.pod_ip
    cluster.core.delete_namespaced_pod("db-1", ns)
    again = eventually(
        lambda: next(
            (
                p
                for p in cluster.core.list_namespaced_pod(ns).items
                if p.metadata.name == "db-1" and p.metadata.uid != pods["db-1"].metadata.uid and p.status.pod_ip
            ),
            None,
        ),
        "db-1 recreated",
    )
    assert ip == again.status.pod_ip  # a StatefulSet pod keeps its address: its stand-in for a stable DNS name
    assert pods["db-1"].metadata.uid != again.metadata.uid
    # A claim's volume survives its pod and goes with the claim (local-path's Delete reclaim policy).
    volume = cluster.volumes / ns / "data-db-0"
    (volume / "raft.db").write_text("data")
    cluster.apps_api.delete_namespaced_stateful_set("db", ns)
    eventually(lambda: not cluster.core.list_namespaced_pod(ns).items, "the pods gone with their StatefulSet")
    assert "data" == (volume / "raft.db").read_text()
    cluster.core.delete_namespaced_persistent_volume_claim("data-db-0", ns)
    eventually(lambda: not volume.exists(), "the volume deleted with its claim")
    assert (cluster.volumes / ns / "data-db-1").is_dir()


def test_missing_before_sync_then_a_manual_sync_operation(cluster: Cluster) -> None:
    cluster.write("manual/app.yaml", [deployment("manual-web")])
    cluster.create_app("manual", "manual", automated=False)
    app = eventually(lambda: (a := cluster.app("manual")).get("status", {}).get("sync") and a, "a comparison")
    assert "OutOfSync" == app["status"]["sync"]["status"]
    assert "Missing" == app["status"]["health"]["status"]
    assert "Directory" == app["status"]["sourceType"]
    assert 40 == len(app["status"]["sync"]["revision"])
    cluster.custom.patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", "manual", {"operation": {"sync": {}}}
    )
    app = eventually(
        lambda: (a := cluster.app("manual"))["status"]["health"]["status"] == "Healthy" and a, "manual Healthy"
    )
    assert "Synced" == app["status"]["sync"]["status"]
    assert "Succeeded" == app["status"]["operationState"]["phase"]
    assert "operation" not in app
    (row,) = app["status"]["resources"]
    assert {
        "kind": "Deployment",
        "name": "manual-web",
        "namespace": "manual",
        "status": "Synced",
    }.items() <= row.items()


def test_sync_waves_wait_for_the_previous_wave_to_be_healthy(cluster: Cluster) -> None:
    cluster.write(
        "waves/kustomization.yaml",
        [{"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["all.yaml"]}],
    )
    cluster.write("waves/all.yaml", [deployment("second", wave=1), deployment("first", wave=0)])
    cluster.create_app("waves", "waves")
    op = eventually(
        lambda: (
            "waiting for healthy state"
            in (m := (cluster.app("waves").get("status") or {}).get("operationState", {})).get("message", "")
            and m
        ),
        "the wave wait",
    )
    assert "waiting for healthy state of apps/Deployment/first" == op["message"]
    assert [] == cluster.apps_api.list_namespaced_deployment("waves", field_selector="metadata.name=second").items
    app = eventually(lambda: (a := cluster.app("waves"))["status"]["health"]["status"] == "Healthy" and a, "Healthy")
    assert "Kustomize" == app["status"]["sourceType"]
    rows = {r["name"]: r for r in app["status"]["resources"]}
    assert 1 == rows["second"]["syncWave"]
    assert "syncWave" not in rows["first"]


def test_the_refresh_annotation_rereads_the_repo_and_prune_removes_what_left_it(cluster: Cluster) -> None:
    cluster.write("refresh/app.yaml", [deployment("kept"), deployment("dropped")])
    cluster.create_app("refresh", "refresh")
    eventually(lambda: cluster.app("refresh").get("status", {}).get("health", {}).get("status") == "Healthy", "Healthy")
    before = cluster.app("refresh")["status"]["sync"]["revision"]
    cluster.write("refresh/app.yaml", [deployment("kept")])
    time.sleep(1.5)  # the repo is re-read every hour here: nothing changes without a refresh
    assert before == cluster.app("refresh")["status"]["sync"]["revision"]
    cluster.custom.patch_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        "argocd",
        "applications",
        "refresh",
        {"metadata": {"annotations": {argocd.REFRESH: "normal"}}},
    )
    eventually(
        lambda: (
            not cluster.apps_api.list_namespaced_deployment("refresh", field_selector="metadata.name=dropped").items
        ),
        "the dropped Deployment pruned",
    )
    app = cluster.app("refresh")
    assert before != app["status"]["sync"]["revision"]
    assert argocd.REFRESH not in (app["metadata"].get("annotations") or {})
    assert ["kept"] == [r["name"] for r in app["status"]["resources"]]


def test_render_errors_show_as_comparison_errors(cluster: Cluster) -> None:
    cluster.create_app(
        "nochart",
        "",
        source={"repoURL": "https://charts.example", "chart": "mystery", "targetRevision": "1.0.0"},
    )
    cluster.create_app("nopath", "does/not/exist")
    for name, expected in (
        ("nochart", "chart 'mystery' from https://charts.example is not in the sandbox's chart table"),
        ("nopath", "does/not/exist: app path does not exist"),
    ):
        app = eventually(lambda n=name: (a := cluster.app(n)).get("status", {}).get("conditions") and a, name)
        (cond,) = app["status"]["conditions"]
        assert "ComparisonError" == cond["type"]
        assert expected in cond["message"]
        assert "Unknown" == app["status"]["sync"]["status"]


def test_selfheal_puts_back_a_deleted_resource_and_the_finalizer_cascades(cluster: Cluster) -> None:
    cluster.write(
        "heal/cm.yaml", [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}]
    )
    cluster.create_app("heal", "heal")
    eventually(lambda: cluster.app("heal").get("status", {}).get("sync", {}).get("status") == "Synced", "Synced")
    cluster.core.delete_namespaced_config_map("c", "heal")
    eventually(
        lambda: cluster.core.list_namespaced_config_map("heal", field_selector="metadata.name=c").items, "healed"
    )
    cluster.custom.patch_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        "argocd",
        "applications",
        "heal",
        {"metadata": {"finalizers": [argocd.FINALIZER]}},
    )
    cluster.custom.delete_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications", "heal")
    eventually(lambda: not cluster.app("heal"), "the app gone")
    assert [] == cluster.core.list_namespaced_config_map("heal", field_selector="metadata.name=c").items
