"""The Kubernetes API emulator in a thread for the session, and real clients configured from its kubeconfig."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from dr.adapters import certs
from dr.sandbox import apiserver


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[apiserver.ApiServer]:
    server = apiserver.ApiServer(certs.CertificateAuthority(tmp_path_factory.mktemp("ca")))
    server.serve_in_thread()
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def kubeconfig(api: apiserver.ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    path.write_text(yaml.safe_dump(api.kubeconfig()))
    path.chmod(0o600)
    return path


@pytest.fixture
def client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(str(kubeconfig))


@pytest.fixture
def namespace(client: kubernetes.client.ApiClient) -> Iterator[str]:
    name = f"t-{secrets.token_hex(3)}"
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException:
        pass
