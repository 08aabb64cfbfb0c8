"""The sandbox's Kubernetes API for the session, on each backend, and real clients configured from its kubeconfig.

`real` is kube-apiserver + kube-controller-manager + kube-scheduler on kine (built by `make testbed`), reached
through the sandbox's fault proxy exactly as `dr sandbox up` serves it; `emulated` is the fallback for machines
without Go. Tests of the API itself run on both, so the fallback cannot drift from what the real one does.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from dr.adapters import certs, sandbox_process
from dr.sandbox import backends


def _start(name: str, root: Path) -> backends.Emulated | backends.Real:
    if name == "real" and not sandbox_process.testbed_built():
        pytest.fail("the real control plane is not built: run `make testbed` (make test does)")
    ca = certs.CertificateAuthority(root / "ca")
    backend = backends.make(name, root, ca, secrets.token_urlsafe(32))
    backend.start()
    return backend


@pytest.fixture(scope="session", params=["real", "emulated"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[backends.Emulated | backends.Real]:
    backend = _start(request.param, tmp_path_factory.mktemp(f"api-{request.param}"))
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def real_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[backends.Real]:
    """The real control plane alone, for what only it does (RBAC, OpenAPI, controllers)."""
    backend = _start("real", tmp_path_factory.mktemp("api-real-only"))
    assert isinstance(backend, backends.Real)
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def kubeconfig(api: backends.Emulated | backends.Real, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    path.write_text(yaml.safe_dump(api.kubeconfig))
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
