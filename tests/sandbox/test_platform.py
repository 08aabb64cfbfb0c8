"""The whole platform on a fresh sandbox, driven only through its API as a user would drive a cluster.

One sandbox for the module (starting it and its three OpenBao pods is the
expensive part): kubectl applies Argo CD and the root app from
examples/platform, the simulated controllers do the rest. Vault is initialised
and unsealed through the project's Vault adapter, as `dr recover` will.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import kubernetes
import pytest
from click.testing import CliRunner

from dr import cli, errors
from dr.adapters import sandbox_process, vault
from dr.sandbox import backends
from tests.harness_vault import remember
from tests.polling import eventually

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "platform"
APPS = {
    "platform-root",
    "platform-tools-app",
    "observability-app",
    "security-app",
    "workloads-app",
    "vault",
    "vault-snapshots",
    "external-secrets",
    "argo-cd",
    "kube-prometheus-stack",
}
DEMO_VALUE = "demo-api-key-7f3a"
REPO = "https://github.com/temitayocharles/platform-gitops.git"


@dataclass
class Platform:
    directory: Path
    client: kubernetes.client.ApiClient
    unsealed: dict[str, Any] = field(default_factory=dict)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.client)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.client)

    def kubectl(self, *args: str) -> str:
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.directory / "kubeconfig"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == done.returncode, done.stderr
        return done.stdout

    def apps(self) -> dict[str, dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications")
        return {a["metadata"]["name"]: a for a in listed["items"]}

    def app(self, name: str) -> dict[str, Any]:
        return self.apps().get(name) or {}

    def external_secret(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "external-secrets.io", "v1", namespace, "externalsecrets", name
        )

    def store(self) -> dict[str, Any]:
        return self.custom.get_cluster_custom_object(  # type: ignore[no-any-return]
            "external-secrets.io", "v1", "clustersecretstores", "vault-backend"
        )

    def vault_pods(self) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod("vault", label_selector="app.kubernetes.io/name=vault,component=server")
        return sorted(
            (self.client.sanitize_for_serialization(p) for p in pods.items), key=lambda p: p["metadata"]["name"]
        )

    def vault_addresses(self) -> list[str]:
        pods = self.vault_pods()
        ips = [(p.get("status") or {}).get("podIP") for p in pods]
        return [f"http://{ip}:8200" for ip in ips] if all(ips) else []  # all or none: pods get their IP a moment late


def health(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("health") or {}).get("status"))


def sync(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("sync") or {}).get("status"))


def ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)


def pod_ready(pod: dict[str, Any]) -> bool:
    cond = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
    return cond.get("status") == "True"


def force_sync(platform: Platform, namespace: str, name: str) -> None:
    """What dr's eso-sync does: the store first (ESO syncs nothing from a store it last found invalid, and
    validates it again only on its own back-off), then the ExternalSecret."""
    stamp = {"metadata": {"annotations": {"force-sync": str(time.time_ns())}}}
    platform.custom.patch_cluster_custom_object(
        "external-secrets.io", "v1", "clustersecretstores", "vault-backend", stamp
    )
    eventually(lambda: (ready(platform.store()) or {}).get("status") == "True", "vault-backend valid", timeout=30)
    platform.custom.patch_namespaced_custom_object(
        "external-secrets.io", "v1", namespace, "externalsecrets", name, stamp
    )


def warnings(platform: Platform, namespace: str, name: str) -> list[str]:
    """ESO's Warning events on an object: where the provider's own error goes (the condition says only
    "could not get secret data from provider")."""
    listed = platform.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},type=Warning")
    return [e.message for e in listed.items]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A fresh sandbox with Argo CD and the root app applied by kubectl, as the examples' README says."""
    directory = tmp_path_factory.mktemp("platform") / "sb"
    result = CliRunner().invoke(cli.cli, ["sandbox", "up", "--dir", str(directory), "--pod-ready-seconds", "0.3"])
    assert 0 == result.exit_code, result.output
    try:
        made = Platform(directory, kubernetes.config.new_client_from_config(str(directory / "kubeconfig")))
        # Validated against the server's OpenAPI (kubectl's default); server-side for the large upstream CRDs.
        made.kubectl("apply", "--server-side", "-k", str(EXAMPLES / "bootstrap" / "argo-cd"))
        # As on any cluster, a new CRD serves its kind only once Established.
        # kubectl 1.32's `wait --for=condition` fails outright on a CRD read before the API server's
        # first pass (`conditions: null`), as seen under CI's load; the README says to run it again.
        for crd in ("crd/applications.argoproj.io", "crd/appprojects.argoproj.io"):
            eventually(
                lambda crd=crd: (
                    "True"
                    == made.kubectl("get", crd, "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}")
                ),
                f"{crd} Established",
                timeout=30,
            )
        made.kubectl("apply", "-f", str(EXAMPLES / "root-app.yaml"))
        yield made
    finally:
        sandbox_process.down(directory)


def unseal_and_configure(platform: Platform) -> dict[str, Any]:
    """Init 5/3 and unseal every pod through the Vault adapter; KV at secret/, Kubernetes auth for ESO.

    Once per platform; later calls only unseal again what a test left sealed (a killed pod, a restart).
    """
    if platform.unsealed:
        state = platform.unsealed
        statuses = [eventually(lambda a=a: _seal_status(vault.VaultNode(a)), f"{a}") for a in state["addresses"]]
        if any(s.sealed for s in statuses):
            state["cluster"].unseal_all(state["init"].shares[:3])
            state["cluster"].await_healthy(timeout=90)
        return state
    addresses = eventually(
        lambda: (a := platform.vault_addresses()) and len(a) == 3 and a, "three Vault pods with pod IPs"
    )
    first = vault.VaultNode(addresses[0])
    eventually(lambda: (s := _seal_status(first)) and not s.initialized, "vault-0's OpenBao to answer, uninitialised")
    init = first.init(5, 3)
    remember(init.root_token, *init.shares)
    cluster = vault.VaultCluster(addresses, token=init.root_token)
    cluster.unseal_all(init.shares[:3])
    cluster.await_healthy(timeout=90)
    admin = hvac.Client(url=cluster.active().address, token=init.root_token.reveal())
    admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    for path, value in (
        ("workloads/demo-app", {"api_key": DEMO_VALUE}),
        ("alerts/discord", {"webhook_url": "https://discord.example/hook"}),
    ):
        eventually(lambda p=path, v=value: _write(admin, p, v), f"secret/{path} to be writable")
    admin.sys.create_or_update_policy("external-secrets", 'path "secret/data/*" { capabilities = ["read"] }')
    admin.sys.enable_auth_method("kubernetes", path="kubernetes")
    info = json.loads((platform.directory / "sandbox.json").read_text())
    auth = {
        "kubernetes_host": info["url"],
        "kubernetes_ca_cert": (platform.directory / "ca" / "ca.crt").read_text(),
        "disable_local_ca_jwt": True,
    }
    vault.VaultNode(cluster.active().address, token=init.root_token).write_kubernetes_auth(auth)
    admin.write_data(
        "auth/kubernetes/role/external-secrets",
        data={
            "bound_service_account_names": ["external-secrets"],
            "bound_service_account_namespaces": ["external-secrets"],
            "token_policies": ["external-secrets"],
            "token_ttl": "10m",
        },
    )
    platform.unsealed.update(init=init, cluster=cluster, auth=auth, addresses=addresses)
    return platform.unsealed


def _write(admin: hvac.Client, path: str, value: dict[str, str]) -> bool:
    try:
        admin.secrets.kv.v2.create_or_update_secret(path=path, secret=value, mount_point="secret")
        return True
    except hvac.exceptions.InvalidPath:
        return False  # the mount becomes writable a moment after it is enabled


def test_full_install_vault_gates_health_and_eso_delivers_the_secret(platform: Platform) -> None:
    """Every Application reaches Synced; vault stays Progressing until its pods are unsealed; then the demo
    app's Secret carries the value written into OpenBao and its ExternalSecret is Ready."""
    apps = eventually(
        lambda: (a := platform.apps()) and set(a) == APPS and all(sync(x) == "Synced" for x in a.values()) and a,
        "all ten Applications Synced",
        timeout=90,
    )
    assert "Progressing" == health(apps["vault"])
    time.sleep(2)  # it stays so: the pods run but OpenBao is uninitialised, hence not Ready
    assert "Progressing" == health(platform.app("vault"))
    assert all(not pod_ready(p) for p in platform.vault_pods())
    eventually(  # labelled by the pods themselves once OpenBao answers (Vault's service registration)
        lambda: {"true"} == {(p["metadata"].get("labels") or {}).get("vault-sealed") for p in platform.vault_pods()},
        "every Vault pod labelled sealed",
    )
    assert "Degraded" == health(platform.app("workloads-app"))  # the ExternalSecret cannot sync yet

    unseal_and_configure(platform)
    eventually(lambda: health(platform.app("vault")) == "Healthy", "the vault app Healthy once unsealed")
    labels = [p["metadata"]["labels"] for p in platform.vault_pods()]
    assert 1 == sum(lbl["vault-active"] == "true" for lbl in labels)
    force_sync(platform, "workloads", "demo-app-secret")  # else ESO retries on its own backoff
    es = eventually(
        lambda: (r := ready(platform.external_secret("workloads", "demo-app-secret"))) and r["status"] == "True" and r,
        "the demo ExternalSecret Ready",
    )
    assert "SecretSynced" == es["reason"]
    eventually(
        lambda: (ready(platform.store()) or {}).get("reason") == "Valid", "vault-backend validated by a real login"
    )
    data = platform.core.read_namespaced_secret("demo-app-secret", "workloads").data
    assert DEMO_VALUE == base64.b64decode(data["api_key"]).decode()
    eventually(
        lambda: all(health(a) == "Healthy" for a in platform.apps().values()),
        "every Application Healthy",
        timeout=60,
    )


def test_the_real_api_serves_kubectl_and_clients_as_a_cluster_does(platform: Platform) -> None:
    """kubectl explain, wait and auth can-i answer as on a cluster; the DynamicClient resolves every CRD.

    The emulator could do none of this: it served no OpenAPI (explain), enforced no RBAC (can-i), and its
    discovery missed the platform's custom kinds.
    """
    explained = platform.kubectl("explain", "application.spec")
    assert "KIND:" in explained
    assert "destination" in explained
    assert "syncPolicy" in explained
    waited = platform.kubectl(
        "wait", "--for=condition=Available", "deployment/demo-app", "-n", "workloads", "--timeout=60s"
    )
    assert "condition met" in waited

    def can_i(*args: str) -> str:
        done = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(platform.directory / "kubeconfig"),
                "auth",
                "can-i",
                *args,
                "--as=system:serviceaccount:vault-admin:dr-snapshot",
                "-n",
                "vault-admin",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout.strip()

    # What the snapshot job needs (its config map) and nothing beside it.
    assert "yes" == can_i("get", "configmaps/dr-snapshot")
    assert "no" == can_i("get", "configmaps/other")
    assert "no" == can_i("list", "configmaps")
    assert "no" == can_i("get", "secrets")
    assert "no" == can_i("delete", "cronjobs")

    dynamic = kubernetes.dynamic.DynamicClient(platform.client)
    crds = kubernetes.client.ApiextensionsV1Api(platform.client).list_custom_resource_definition().items
    groups = {crd.spec.group for crd in crds}
    assert {"argoproj.io", "external-secrets.io", "monitoring.coreos.com"} <= groups
    for crd in crds:
        for version in (v.name for v in crd.spec.versions if v.served):
            resource = dynamic.resources.get(api_version=f"{crd.spec.group}/{version}", kind=crd.spec.names.kind)
            assert crd.spec.names.plural == resource.name
            resource.get()  # listable: a user's script that works on K3s works here
    es = dynamic.resources.get(api_version="external-secrets.io/v1", kind="ExternalSecret")
    assert "demo-app-secret" in {item.metadata.name for item in es.get(namespace="workloads").items}


def test_the_snapshot_cronjob_runs_dr_snapshot_save_through_the_real_controllers(platform: Platform) -> None:
    """The real CronJob controller makes the Job, the real Job controller its pod, and the node agent runs the
    pod's `dr snapshot save` as a process with the projected token: a verified snapshot lands in the claim.

    A copy of the platform's CronJob on `* * * * *` (the original runs at 02:00, and Argo CD would put a changed
    schedule back): same ServiceAccount, ConfigMap, claim and container.
    """
    state = unseal_and_configure(platform)
    admin = hvac.Client(url=state["cluster"].active().address, token=state["init"].root_token.reveal())
    admin.sys.create_or_update_policy("dr-snapshot", 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }')
    admin.write_data(
        "auth/kubernetes/role/dr-snapshot",
        data={
            "bound_service_account_names": ["dr-snapshot"],
            "bound_service_account_namespaces": ["vault-admin"],
            "token_policies": ["dr-snapshot"],
            "token_ttl": "15m",
        },
    )
    batch = kubernetes.client.BatchV1Api(platform.client)
    original = eventually(
        lambda: next(iter(batch.list_namespaced_cron_job("vault-admin").items), None), "the dr-snapshot CronJob"
    )
    body = platform.client.sanitize_for_serialization(original)
    copy = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "dr-snapshot-now", "namespace": "vault-admin"},
        "spec": {**body["spec"], "schedule": "* * * * *", "suspend": False},
    }
    batch.create_namespaced_cron_job("vault-admin", copy)
    try:
        job = eventually(
            lambda: next(
                (
                    j
                    for j in batch.list_namespaced_job("vault-admin").items
                    if (j.metadata.owner_references or [{}])[0].name == "dr-snapshot-now"
                    and (j.status.succeeded or j.status.failed)
                ),
                None,
            ),
            "the CronJob's Job to finish",
            timeout=150,
        )
        pods = platform.core.list_namespaced_pod("vault-admin", label_selector=f"job-name={job.metadata.name}").items
        logs = "\n".join(
            p.read_text()
            for p in (platform.directory / "pods").glob("vault-admin_*/*")
            if p.name in ("container.log", "hosts")
        )
        assert 1 == job.status.succeeded, logs
        (pod,) = pods
        assert "Succeeded" == pod.status.phase
        assert 0 == pod.status.container_statuses[0].state.terminated.exit_code
        assert "snapshot_saved" in logs
        store = platform.directory / "volumes" / "vault-admin" / "dr-snapshot-data"
        listed = CliRunner().invoke(
            cli.cli, ["snapshot", "list", "--store", str(store), "--cluster", "platform", "-o", "json"]
        )
        assert 0 == listed.exit_code, listed.output
        (saved,) = json.loads(listed.stdout)["snapshots"]
        assert "platform" == saved["cluster"]
    finally:
        batch.delete_namespaced_cron_job("dr-snapshot-now", "vault-admin", propagation_policy="Foreground")


def test_eso_shows_openbaos_403_when_kubernetes_auth_points_at_another_cluster(
    platform: Platform, real_api: backends.Real
) -> None:
    """OpenBao sends ESO's token to the other cluster's TokenReview, which rejects it: 403 in the condition."""
    state = unseal_and_configure(platform)
    node = vault.VaultNode(state["cluster"].active().address, token=state["init"].root_token)
    node.write_kubernetes_auth(
        {"kubernetes_host": real_api.url, "kubernetes_ca_cert": real_api.ca.pem, "disable_local_ca_jwt": True}
    )
    try:
        platform.custom.patch_namespaced_custom_object(
            "external-secrets.io",
            "v1",
            "workloads",
            "externalsecrets",
            "demo-app-secret",
            {"metadata": {"annotations": {"force-sync": str(time.time_ns())}}},
        )
        cond = eventually(
            lambda: (
                (r := ready(platform.external_secret("workloads", "demo-app-secret"))) and r["status"] == "False" and r
            ),
            "the ExternalSecret to fail",
        )
        assert "SecretSyncedError" == cond["reason"]
        refused = eventually(
            lambda: [m for m in warnings(platform, "workloads", "demo-app-secret") if "Code: 403" in m],
            "ESO's event with OpenBao's answer",
        )
        assert "permission denied" in refused[-1]
        assert "/v1/auth/kubernetes/login" in refused[-1]
    finally:
        node.write_kubernetes_auth(state["auth"])
    force_sync(platform, "workloads", "demo-app-secret")
    eventually(
        lambda: (r := ready(platform.external_secret("workloads", "demo-app-secret"))) and r["status"] == "True",
        "the ExternalSecret to recover once auth points back at this cluster",
    )


def test_the_eso_pod_is_the_real_operator_restarts_when_killed_and_fails_cut_off_from_vault(
    platform: Platform, real_api: backends.Real
) -> None:
    """ESO's upstream CRDs validate what is written; its pod runs the operator built from its Go module, which a
    kill restarts (the restart counted, as a kubelet does) and which, cut off from Vault, says so in the store."""
    unseal_and_configure(platform)
    bad = {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": "bad-policy", "namespace": "workloads"},
        "spec": {"refreshPolicy": "Sometimes", "secretStoreRef": {"name": "vault-backend"}},
    }
    with pytest.raises(kubernetes.client.ApiException) as refused:
        platform.custom.create_namespaced_custom_object(
            "external-secrets.io", "v1", "workloads", "externalsecrets", bad
        )
    assert 422 == refused.value.status
    assert "spec.refreshPolicy" in refused.value.body
    assert "refreshInterval" in platform.kubectl("explain", "externalsecret.spec")

    def eso_pod() -> Any:
        pods = platform.core.list_namespaced_pod(
            "external-secrets", label_selector="app.kubernetes.io/name=external-secrets"
        )
        return next(iter(pods.items), None)

    pod = eventually(lambda: (p := eso_pod()) and p.status.container_statuses and p, "the ESO pod")
    (log,) = platform.directory.glob(f"pods/external-secrets_{pod.metadata.name}_*/container.log")
    assert '"controller":"externalsecret"' in log.read_text()  # controller-runtime's own lines: the real operator
    before = pod.status.container_statuses[0].restart_count
    killed = CliRunner().invoke(
        cli.cli,
        ["sandbox", "faults", "--dir", str(platform.directory), "--kill-pod", f"external-secrets/{pod.metadata.name}"],
    )
    assert 0 == killed.exit_code, killed.output
    restarted = eventually(
        lambda: (p := eso_pod()) and p.status.container_statuses[0].restart_count == before + 1 and p,
        "the restart counted",
    )
    assert 137 == restarted.status.container_statuses[0].last_state.terminated.exit_code
    eventually(lambda: eso_pod().status.container_statuses[0].ready, "ESO running again")

    sandbox_process.set_faults(platform.directory, eso_failing=True)
    try:
        # The cut restarts ESO (its open connections end with it), which validates the store as it starts.
        eventually(lambda: eso_pod().status.container_statuses[0].restart_count == before + 2, "ESO restarted")
        cond = eventually(lambda: (r := ready(platform.store())) and r["status"] == "False" and r, "the store invalid")
        assert "InvalidProviderConfig" == cond["reason"]
        cut_off = eventually(  # ESO's own words, in its event: it cannot resolve or reach Vault
            lambda: [m for m in warnings(platform, "default", "vault-backend") if "vault.vault.svc" in m],
            "ESO's event on the store",
        )
        assert "/v1/auth/kubernetes/login" in cut_off[-1]
    finally:
        sandbox_process.set_faults(platform.directory, eso_failing=False)
    eventually(lambda: eso_pod().status.container_statuses[0].restart_count == before + 3, "ESO restarted again")
    force_sync(platform, "workloads", "demo-app-secret")
    eventually(
        lambda: (r := ready(platform.external_secret("workloads", "demo-app-secret"))) and r["status"] == "True",
        "the ExternalSecret synced once ESO reaches Vault again",
    )


def test_killing_a_vault_pod_restarts_it_sealed_with_its_raft_data(platform: Platform) -> None:
    state = unseal_and_configure(platform)
    eventually(lambda: all(pod_ready(p) for p in platform.vault_pods()), "every Vault pod Ready")
    before = {p["metadata"]["name"]: p for p in platform.vault_pods()}["vault-1"]
    result = CliRunner().invoke(
        cli.cli, ["sandbox", "faults", "--dir", str(platform.directory), "--kill-pod", "vault/vault-1"]
    )
    assert 0 == result.exit_code, result.output

    def restarted() -> dict[str, Any] | None:
        pod = {p["metadata"]["name"]: p for p in platform.vault_pods()}["vault-1"]
        statuses = pod["status"]["containerStatuses"][0]
        return pod if statuses["restartCount"] == 1 and statuses["state"].get("running") else None

    pod = eventually(restarted, "vault-1 to be restarted by the kubelet")
    assert pod["metadata"]["uid"] == before["metadata"]["uid"]  # the same pod: a container restart
    assert pod["status"]["podIP"] == before["status"]["podIP"]
    assert 137 == pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"]
    node = vault.VaultNode(f"http://{pod['status']['podIP']}:8200")
    status = eventually(lambda: _seal_status(node), "vault-1's OpenBao to answer again")
    assert status.sealed
    assert status.initialized  # from its own Raft data, not re-joined blank
    assert not pod_ready(pod)
    eventually(lambda: health(platform.app("vault")) == "Progressing", "the vault app Progressing while one is sealed")
    node.unseal(state["init"].shares[:3])
    eventually(lambda: health(platform.app("vault")) == "Healthy", "the vault app Healthy again")
    follower = hvac.Client(url=node.address, token=state["init"].root_token.reveal())
    read = follower.secrets.kv.v2.read_secret_version(
        path="workloads/demo-app", mount_point="secret", raise_on_deleted_version=True
    )
    assert DEMO_VALUE == read["data"]["data"]["api_key"]


def test_restart_fault_and_pod_names_the_sandbox_does_not_know(platform: Platform) -> None:
    """--restart-pod stops OpenBao cleanly (exit 0) and it comes back sealed; bad names are clear errors."""
    state = unseal_and_configure(platform)
    eventually(lambda: all(pod_ready(p) for p in platform.vault_pods()), "every Vault pod Ready")

    def faults(*args: str) -> Any:
        return CliRunner().invoke(cli.cli, ["sandbox", "faults", "--dir", str(platform.directory), *args])

    assert 0 == faults("--restart-pod", "vault/vault-2").exit_code

    def restarted() -> dict[str, Any] | None:
        pod = {p["metadata"]["name"]: p for p in platform.vault_pods()}["vault-2"]
        last = pod["status"]["containerStatuses"][0].get("lastState", {}).get("terminated", {})
        return pod if last.get("exitCode") == 0 and pod["metadata"]["labels"].get("vault-sealed") == "true" else None

    pod = eventually(restarted, "vault-2 restarted cleanly and sealed")
    assert not pod_ready(pod)
    vault.VaultNode(f"http://{pod['status']['podIP']}:8200").unseal(state["init"].shares[:3])
    eventually(lambda: health(platform.app("vault")) == "Healthy", "the vault app Healthy again")

    unknown = faults("--kill-pod", "vault/vault-9")
    assert 1 == unknown.exit_code
    assert "no pod vault/vault-9 runs a process in this sandbox" in unknown.output
    malformed = faults("--kill-pod", "vault-0")
    assert 2 == malformed.exit_code
    assert "--kill-pod takes NAMESPACE/NAME, not 'vault-0'" in malformed.output
    assert "Traceback" not in unknown.output + malformed.output


def _seal_status(node: vault.VaultNode) -> Any:
    try:
        return node.seal_status()
    except errors.DRError:
        return None  # not listening yet


def test_a_project_violation_and_a_failing_workload_show_as_argo_shows_them(platform: Platform) -> None:
    rogue = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "rogue", "namespace": "argocd"},
        "spec": {
            "project": "workloads",
            "source": {"repoURL": REPO, "path": "infrastructure/workloads"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "kube-system"},
        },
    }
    platform.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications", rogue)
    app = eventually(
        lambda: (a := platform.app("rogue")) and (a.get("status") or {}).get("conditions") and a, "rogue's conditions"
    )
    (cond,) = app["status"]["conditions"]
    assert "InvalidSpecError" == cond["type"]
    assert (
        "application destination server 'https://kubernetes.default.svc' and namespace 'kube-system' do not match"
        " any of the allowed destinations in project 'workloads'" == cond["message"]
    )
    assert "Unknown" == sync(app)
    assert [] == kubernetes.client.AppsV1Api(platform.client).list_namespaced_deployment("kube-system").items

    # A project that may write only ServiceAccounts, only to `narrow`: security/rbac fails before anything applies.
    narrow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "narrow", "namespace": "argocd"},
        "spec": {
            "sourceRepos": [REPO],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "narrow"}],
            "clusterResourceWhitelist": [{"group": "", "kind": "Namespace"}],
            "namespaceResourceWhitelist": [{"group": "", "kind": "ServiceAccount"}],
        },
    }
    platform.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "appprojects", narrow)
    limited = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "limited", "namespace": "argocd"},
        "spec": {
            "project": "narrow",
            "source": {"repoURL": REPO, "path": "infrastructure/security/rbac"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "narrow"},
            "syncPolicy": {"automated": {}, "syncOptions": ["CreateNamespace=true"]},
        },
    }
    platform.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications", limited)
    op = eventually(
        lambda: (
            ((platform.app("limited").get("status") or {}).get("operationState") or {}).get("phase") == "Failed"
            and platform.app("limited")["status"]["operationState"]
        ),
        "the limited app's sync to fail",
    )
    assert "one or more synchronization tasks are not valid" == op["message"]
    failed = {r["kind"]: r for r in op["syncResult"]["resources"]}
    assert "resource rbac.authorization.k8s.io:Role is not permitted in project narrow." == failed["Role"]["message"]
    assert "SyncFailed" == failed["Role"]["status"]
    # The rbac manifests name their namespace, and that one is not the project's either.
    assert "namespace security is not permitted in project 'narrow'" == failed["ServiceAccount"]["message"]
    assert "OutOfSync" == sync(platform.app("limited"))
    assert not _exists(platform, "narrow")  # nothing was applied, not even the namespace

    result = CliRunner().invoke(
        cli.cli, ["sandbox", "faults", "--dir", str(platform.directory), "--fail-workload", "workloads/demo-app"]
    )
    assert 0 == result.exit_code, result.output
    try:
        # Its rollout finished long ago, so no progress deadline applies: Argo CD shows it Progressing, its pods
        # unavailable (as on a real cluster; Degraded comes only from a rollout that passes its deadline).
        message = "Waiting for rollout to finish: 0 of 2 updated replicas are available..."

        def deployment_row() -> dict[str, Any] | None:
            app = platform.app("workloads-app")
            rows = (app.get("status") or {}).get("resources") or []
            row = next((r for r in rows if r["kind"] == "Deployment"), None)
            # Both pods fail one after the other: "1 of 2" comes first.
            return row if health(app) == "Progressing" and row and row["health"].get("message") == message else None

        row = eventually(deployment_row, "workloads-app Progressing with both pods unavailable")
        assert {"status": "Progressing", "message": message} == row["health"]
        pods = platform.core.list_namespaced_pod("workloads", label_selector="app.kubernetes.io/name=demo-app").items
        assert {"CrashLoopBackOff"} == {p.status.container_statuses[0].state.waiting.reason for p in pods}
    finally:
        CliRunner().invoke(
            cli.cli, ["sandbox", "faults", "--dir", str(platform.directory), "--heal-workload", "workloads/demo-app"]
        )
    eventually(lambda: health(platform.app("workloads-app")) == "Healthy", "workloads-app Healthy once healed")


def _exists(platform: Platform, namespace: str) -> bool:
    try:
        platform.core.read_namespace(namespace)
        return True
    except kubernetes.client.ApiException:
        return False


def test_eso_refreshes_on_its_interval_and_names_a_missing_path(platform: Platform) -> None:
    state = unseal_and_configure(platform)
    admin = hvac.Client(url=state["cluster"].active().address, token=state["init"].root_token.reveal())
    admin.secrets.kv.v2.create_or_update_secret(path="workloads/fast", secret={"v": "one"}, mount_point="secret")

    def external_secret(name: str, key: str) -> dict[str, Any]:
        return {
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": "workloads"},
            "spec": {
                "refreshInterval": "1s",
                "secretStoreRef": {"name": "vault-backend", "kind": "ClusterSecretStore"},
                "target": {"name": name},
                "data": [{"secretKey": "v", "remoteRef": {"key": key, "property": "v"}}],
            },
        }

    for body in (external_secret("fast", "workloads/fast"), external_secret("nowhere", "workloads/nowhere")):
        platform.custom.create_namespaced_custom_object(
            "external-secrets.io", "v1", "workloads", "externalsecrets", body
        )

    def value() -> str | None:
        try:
            return base64.b64decode(platform.core.read_namespaced_secret("fast", "workloads").data["v"]).decode()
        except kubernetes.client.ApiException:
            return None

    assert "one" == eventually(value, "the fast Secret")
    admin.secrets.kv.v2.create_or_update_secret(path="workloads/fast", secret={"v": "two"}, mount_point="secret")
    eventually(lambda: value() == "two", "the new value within the 1 s refresh interval, without a force-sync")
    cond = eventually(
        lambda: (r := ready(platform.external_secret("workloads", "nowhere"))) and r["status"] == "False" and r,
        "the missing path reported",
    )
    assert "SecretSyncedError" == cond["reason"]
    missing = eventually(
        lambda: [m for m in warnings(platform, "workloads", "nowhere") if "workloads/nowhere" in m], "ESO's event"
    )
    assert "Secret does not exist" in missing[-1]


def test_the_platform_survives_a_sandbox_restart_with_vault_sealed_on_its_data(platform: Platform) -> None:
    """down then up on the same dir (a node reboot): objects are back, the Vault pods start sealed but initialised."""
    unseal_and_configure(platform)
    assert 0 == CliRunner().invoke(cli.cli, ["sandbox", "down", "--dir", str(platform.directory)]).exit_code
    assert 0 == CliRunner().invoke(cli.cli, ["sandbox", "up", "--dir", str(platform.directory)]).exit_code
    platform.client = kubernetes.config.new_client_from_config(str(platform.directory / "kubeconfig"))
    assert APPS <= set(platform.apps())
    for address in eventually(lambda: (a := platform.vault_addresses()) and len(a) == 3 and a, "the Vault pods"):
        status = eventually(lambda a=address: _seal_status(vault.VaultNode(a)), f"{address} to answer")
        assert status.initialized
        assert status.sealed
    eventually(lambda: health(platform.app("vault")) == "Progressing", "the vault app Progressing while sealed")
