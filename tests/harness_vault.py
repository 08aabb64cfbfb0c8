"""Real OpenBao Raft clusters for the Vault tests, started once per session and always torn down.

Cluster A is the "original": 3 nodes, init 5/3, a few hundred KV secrets.
Tests that restore into a cluster get a fresh one of their own. Every share
and token these clusters produce is remembered, and a hook fails any test
whose captured output or failure text contains one of them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import certifi
import hvac
import pytest

from dr import secret
from dr.adapters import localbao as bao
from dr.adapters import vault

KNOWN_SECRETS: set[str] = set()
SECRET_COUNT = 300
OLD_KUBE_HOST = "https://old-cluster.example:6443"
CANARY = "dr/canary"  # KV v2 at kv/: API path kv/data/dr/canary


def remember(*values: secret.Secret | str) -> None:
    """Add values (and their base64/hex spellings) to the leak scan."""
    for value in values:
        raw = value.reveal() if isinstance(value, secret.Secret) else value
        KNOWN_SECRETS.update({raw, base64.b64encode(raw.encode()).decode().rstrip("="), raw.encode().hex()})
        try:
            KNOWN_SECRETS.add(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).hex())
        except ValueError:
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail a test whose captured output or error text shows a share or a token."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not KNOWN_SECRETS:
        return
    texts = [content for _, content in report.sections] + [report.longreprtext or ""]
    leaked = sorted({s[:6] + "…" for s in KNOWN_SECRETS for t in texts if s and s in t})
    if leaked:
        report.outcome = "failed"
        report.longrepr = f"secret material leaked into test output (prefixes: {', '.join(leaked)})"


@dataclass
class Original:
    """Cluster A: the cluster whose snapshot is restored elsewhere."""

    procs: bao.BaoCluster
    cluster: vault.VaultCluster
    init: vault.InitResult
    secrets: dict[str, str]

    @property
    def shares(self) -> tuple[secret.Secret, ...]:
        return self.init.shares

    @property
    def token(self) -> secret.Secret:
        return self.init.root_token

    def hvac(self, index: int = 0) -> hvac.Client:
        return hvac.Client(url=self.procs.addresses[index], token=self.token.reveal())


def wait_active(node: vault.VaultNode, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while node.health_code() != 200:
        if time.monotonic() > end:
            raise TimeoutError(f"{node.address} never became active")
        time.sleep(0.05)


def init_and_unseal(procs: bao.BaoCluster, shares: int, threshold: int) -> tuple[vault.VaultCluster, vault.InitResult]:
    first = vault.VaultNode(procs.addresses[0])
    result = first.init(shares, threshold)
    remember(result.root_token, *result.shares)
    first.unseal(result.shares[:threshold])
    wait_active(first)
    return vault.VaultCluster(procs.addresses, token=result.root_token), result


@pytest.fixture(scope="session")
def make_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., bao.BaoCluster]]:
    """Start OpenBao clusters on free loopback ports; all of them are destroyed at the end."""
    made: list[bao.BaoCluster] = []

    def make(size: int = 1, **kwargs: bool) -> bao.BaoCluster:
        procs = bao.BaoCluster(tmp_path_factory.mktemp("bao"), size=size, **kwargs)
        made.append(procs)
        return procs.start()

    yield make
    for procs in made:  # signal every cluster before waiting for any
        for node in procs.nodes:
            if node.process is not None and node.running:
                node.process.terminate()
    for procs in made:
        procs.destroy()


@pytest.fixture(scope="session")
def original(make_bao: Callable[..., bao.BaoCluster]) -> Original:
    """Cluster A: 3 nodes, init 5/3, all unsealed and voters, KV v2 at kv/ with SECRET_COUNT secrets."""
    procs = make_bao(3)
    cluster, result = init_and_unseal(procs, 5, 3)
    cluster.unseal_all(result.shares[1:4])
    cluster.await_healthy(timeout=90)
    client = hvac.Client(url=procs.addresses[0], token=result.root_token.reveal())
    client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    values = {f"app/secret-{i:03d}": f"value-{i:03d}-{'x' * (i % 40)}" for i in range(SECRET_COUNT)}
    values[CANARY] = "canary-value-from-cluster-a"
    for path, value in values.items():
        for _ in range(50):  # the mount becomes writable a moment after it is enabled
            try:
                client.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": value}, mount_point="kv")
                break
            except hvac.exceptions.InvalidPath:
                time.sleep(0.1)
    # Kubernetes auth as the original cluster had it: it comes back with the snapshot and points at the old API.
    client.sys.enable_auth_method("kubernetes", path="kubernetes")
    old_config = {
        "kubernetes_host": OLD_KUBE_HOST,
        "kubernetes_ca_cert": Path(certifi.where()).read_text().split("-----END CERTIFICATE-----")[0]
        + "-----END CERTIFICATE-----\n",
        "disable_local_ca_jwt": True,
        "issuer": "https://old-cluster.example",
    }
    vault.VaultNode(procs.addresses[0], token=result.root_token).write_kubernetes_auth(old_config)
    return Original(procs, cluster, result, values)


def read_all(client: hvac.Client, paths: list[str]) -> dict[str, str]:
    return {
        p: client.secrets.kv.v2.read_secret_version(path=p, mount_point="kv", raise_on_deleted_version=True)["data"][
            "data"
        ]["v"]
        for p in paths
    }
