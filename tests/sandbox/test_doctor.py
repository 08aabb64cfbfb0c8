"""`dr doctor` on the real control plane and real OpenBao: green when a recovery could start, and each check
broken in turn (a wrong context, a ServiceAccount without the verbs, a sealed Vault, an empty store) fails
with what to fix. `dr recover` refuses to start on the same findings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import kubernetes
import pytest
import yaml
from click.testing import CliRunner, Result

from dr import cli
from dr.adapters import localbao as bao
from dr.recovery import doctor
from dr.sandbox import backends
from tests.harness_vault import KNOWN_SECRETS, Original, init_and_unseal, remember

TOTAL = sum(len(needs) for needs in doctor.PERMISSIONS.values())


def dr(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli.cli, ["--config", str(config), "doctor", *args], env=env)
    for value in KNOWN_SECRETS:
        assert value not in result.output, "a share or token reached the doctor's output"
    return result


def checks(result: Result) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


@pytest.fixture(scope="module")
def saved(original: Original, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one real snapshot of the session's OpenBao, for cluster `prod`."""
    where = tmp_path_factory.mktemp("doctor-store")
    config = where / "save.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {"name": "prod"},
                "vault": {"addresses": original.procs.addresses},
                "snapshots": {"store": str(where / "store")},
            }
        )
    )
    done = CliRunner().invoke(
        cli.cli, ["--config", str(config), "snapshot", "save"], env={"VAULT_TOKEN": original.token.reveal()}
    )
    assert 0 == done.exit_code, done.output
    return where / "store"


def write(tmp_path: Path, original: Original, store: Path, kubeconfig: Path, **extra: Any) -> Path:
    files = []
    for i, share in enumerate(original.shares[:3]):
        files.append(tmp_path / f"share-{i}")
        files[-1].write_text(share.reveal())
        files[-1].chmod(0o600)
    (tmp_path / "token").write_text(original.token.reveal())
    (tmp_path / "token").chmod(0o600)
    config = {
        "state_dir": str(tmp_path / "state"),
        "cluster": {"name": "prod", "provider": "kubeconfig", "kubeconfig": str(kubeconfig)},
        "keys": {"source": "files", "files": [str(f) for f in files], "token_file": str(tmp_path / "token")},
        "snapshots": {"store": str(store)},
        **extra,
    }
    path = tmp_path / "dr.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def admin(real_api: backends.Real, tmp_path: Path) -> Path:
    path = tmp_path / "admin.kubeconfig"
    path.write_text(yaml.safe_dump(real_api.kubeconfig))
    path.chmod(0o600)
    return path


def test_green_when_a_recovery_could_start_then_a_wrong_context_and_an_empty_store_fail(
    original: Original, saved: Path, admin: Path, tmp_path: Path
) -> None:
    config = write(tmp_path, original, saved, admin)
    green = dr(config, "--cluster", "existing", "-o", "json")
    assert 0 == green.exit_code, green.output
    found = checks(green)
    assert {"ok"} == {c["status"] for c in found.values()}, found
    assert "Kubernetes v1." in found["api"]["detail"]
    assert f"all {TOTAL} permissions" in found["permissions"]["detail"]
    assert "no Vault pods" in found["vault"]["detail"]
    assert "3 share(s), threshold 3" in found["keys"]["detail"]
    assert "bytes match its sha256" in found["store"]["detail"]
    assert "ready: a recovery could start" in dr(config, "--cluster", "existing").output

    wrong = dr(config, "--cluster", "existing", "--context", "no-such-context")
    assert 1 == wrong.exit_code
    assert "kubeconfig   FAIL" in wrong.output
    assert "no-such-context" in wrong.output
    assert "not ready: 1 check(s) failed" in wrong.output

    other = write(tmp_path, original, saved, admin, cluster={"name": "staging", "provider": "kubeconfig"})
    empty = dr(other, "--cluster", "existing", "--kubeconfig", str(admin), "-o", "json")
    assert 1 == empty.exit_code
    store = checks(empty)["store"]
    assert ("fail", f"file://{saved} holds no snapshot of cluster staging") == (store["status"], store["detail"])
    assert "prod" in store["fix"]  # what the store does hold


def test_a_service_account_without_the_verbs_is_told_which_are_missing(
    original: Original, saved: Path, real_api: backends.Real, admin: Path, tmp_path: Path
) -> None:
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(admin)))
    core.create_namespace({"metadata": {"name": "doctor"}})
    core.create_namespaced_service_account("doctor", {"metadata": {"name": "reader"}})
    issued = core.create_namespaced_service_account_token("reader", "doctor", {"spec": {"expirationSeconds": 600}})
    remember(issued.status.token)
    limited = dict(real_api.kubeconfig)
    limited["users"] = [{"name": "reader", "user": {"token": issued.status.token}}]
    limited["contexts"] = [{"name": "reader", "context": {"cluster": limited["clusters"][0]["name"], "user": "reader"}}]
    limited["current-context"] = "reader"
    path = tmp_path / "reader.kubeconfig"
    path.write_text(yaml.safe_dump(limited))
    config = write(tmp_path, original, saved, path)

    result = dr(config, "--cluster", "existing", "-o", "json")
    assert 1 == result.exit_code, result.output
    found = checks(result)
    assert "ok" == found["api"]["status"]
    denied = found["permissions"]
    assert "fail" == denied["status"]
    assert f"{TOTAL} of {TOTAL} permissions the steps use are denied" in denied["detail"]
    assert "create namespaces (root-app)" in denied["detail"]
    assert "create pods/portforward in vault (vault-unseal)" in denied["detail"]
    assert "cluster-admin" in denied["fix"]
    assert "skip" == found["vault"]["status"]  # not asked with the permissions missing

    # dr recover checks the same first, and starts nothing.
    refused = CliRunner().invoke(cli.cli, ["--config", str(config), "recover", "--cluster", "existing"])
    assert 1 == refused.exit_code
    assert "preflight: 1 check(s) failed (permissions); nothing was started" in refused.output
    assert not (tmp_path / "state" / "runs").exists()


def test_the_snapshot_job_check_fails_on_a_sealed_vault_and_passes_when_unsealed(
    make_bao: Callable[..., bao.BaoCluster], tmp_path: Path
) -> None:
    procs = make_bao(1)
    _, result = init_and_unseal(procs, 1, 1)
    config = tmp_path / "dr.yaml"
    config.write_text(
        yaml.safe_dump({"vault": {"addresses": procs.addresses}, "snapshots": {"store": str(tmp_path / "store")}})
    )
    env = {"VAULT_TOKEN": result.root_token.reveal()}
    unsealed = dr(config, "--for", "snapshot", "-o", "json", env=env)
    assert 0 == unsealed.exit_code, unsealed.output
    found = checks(unsealed)
    assert ("ok", "ok") == (found["vault"]["status"], found["auth"]["status"]), found
    assert "0 snapshot(s)" in found["store"]["detail"]

    hvac.Client(url=procs.addresses[0], token=result.root_token.reveal()).sys.seal()
    sealed = dr(config, "--for", "snapshot", env=env)
    assert 1 == sealed.exit_code
    assert "vault  FAIL" in sealed.output
    assert "sealed" in sealed.output
    assert "dr vault unseal --all" in sealed.output
