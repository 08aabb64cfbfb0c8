"""kubectl against the emulator, and a real OpenBao's Kubernetes auth calling back into its TokenReview."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import hvac
import kubernetes
import pytest

from dr import errors, secret
from dr.adapters import vault
from dr.sandbox import backends
from tests.harness_vault import Original, remember
from tests.polling import eventually

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: from-kubectl, namespace: default}
data: {a: "1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
"""


def test_kubectl_apply_get_delete(kubeconfig: Path, tmp_path: Path, api: backends.Emulated | backends.Real) -> None:
    """kubectl apply (client- and server-side), get -o json and delete work through the kubeconfig.

    Plain `kubectl apply -f` validates against the server's OpenAPI: the real API serves it, the emulator
    does not (there, `--validate=false`).
    """
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    validate = [] if api.name == "real" else ["--validate=false"]

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60, check=False
        )

    first = kubectl("apply", *validate, "-f", str(manifest))
    assert 0 == first.returncode, first.stderr
    assert "configmap/from-kubectl created" in first.stdout
    assert "unchanged" in kubectl("apply", *validate, "-f", str(manifest)).stdout
    assert 0 == kubectl("apply", "--server-side", *validate, "-f", str(manifest)).returncode
    got = json.loads(kubectl("get", "configmap", "from-kubectl", "-o", "json").stdout)
    assert {"a": "1"} == got["data"]
    deleted = kubectl("delete", "-f", str(manifest))
    assert 0 == deleted.returncode, deleted.stderr
    assert "NotFound" in kubectl("get", "deployment", "web").stderr


def test_openbao_kubernetes_auth_reviews_tokens_with_the_sandbox_api(
    original: Original, api: backends.Emulated | backends.Real, client: kubernetes.client.ApiClient
) -> None:
    """OpenBao logs in a sandbox-issued service-account token through TokenReview; a forged one gets 403.

    On the real API, RBAC holds too: OpenBao reviews with the client's own token, which may create
    TokenReviews only once the account is bound to system:auth-delegator (as the platform binds ESO's).
    """
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": "external-secrets"}})
    core.create_namespaced_service_account("external-secrets", {"metadata": {"name": "external-secrets"}})
    issued = core.create_namespaced_service_account_token(
        "external-secrets", "external-secrets", {"spec": {"expirationSeconds": 600}}
    )
    jwt = secret.Secret(issued.status.token)
    remember(jwt)

    admin = hvac.Client(url=original.procs.addresses[0], token=original.token.reveal())
    if "sandbox-k8s/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("kubernetes", path="sandbox-k8s")
    node = vault.VaultNode(original.procs.addresses[0], token=original.token)
    node.write_kubernetes_auth(
        {"kubernetes_host": api.url, "kubernetes_ca_cert": api.ca.pem, "disable_local_ca_jwt": True},
        mount="sandbox-k8s",
    )
    admin.write_data(
        "auth/sandbox-k8s/role/eso",
        data={
            "bound_service_account_names": ["external-secrets"],
            "bound_service_account_namespaces": ["external-secrets"],
            "token_policies": ["default"],
            "token_ttl": "5m",
        },
    )
    if api.name == "real":
        with pytest.raises(errors.PermanentError, match="permission denied"):
            vault.VaultNode(original.procs.addresses[0]).login_kubernetes("eso", jwt, mount="sandbox-k8s")
        kubernetes.client.RbacAuthorizationV1Api(client).create_cluster_role_binding(
            {
                "metadata": {"name": "eso-tokenreview"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:auth-delegator",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "external-secrets", "namespace": "external-secrets"}],
            }
        )

    def login() -> secret.Secret | None:
        try:
            return vault.VaultNode(original.procs.addresses[0]).login_kubernetes("eso", jwt, mount="sandbox-k8s")
        except errors.PermanentError:
            return None  # the API server's RBAC cache learns of a new binding a moment after it is made

    token = eventually(login, "the login once the binding reaches the API server's authorizer", timeout=15)
    remember(token)
    assert "default" in vault.VaultNode(original.procs.addresses[0], token=token).lookup_self()["policies"]

    head, body, _ = jwt.reveal().split(".")
    forged = secret.Secret(f"{head}.{body}.Zm9yZ2Vk")
    remember(forged)
    with pytest.raises(errors.PermanentError, match="permission denied"):
        vault.VaultNode(original.procs.addresses[0]).login_kubernetes("eso", forged, mount="sandbox-k8s")
