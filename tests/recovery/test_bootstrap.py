"""`dr bootstrap --provider sandbox`: from nothing to a healthy platform, rerun, crashes, and a stuck app.

One bootstrapped platform per module (the expensive part); the crash test
builds its own, killing the run inside every step in turn.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import kubernetes
import pytest
import yaml
from click.testing import CliRunner, Result

from dr import cli, secret
from dr.adapters import sandbox_process, vault
from tests.harness_vault import remember
from tests.polling import eventually
from tests.recovery import killing

REPO = Path(__file__).resolve().parents[2]
STEPS = ["cluster", "root-app", "argo-sync", "vault-unseal", "eso-sync", "app-health"]


def write_config(directory: Path, **extra: Any) -> Path:
    config = {
        "state_dir": str(directory / "state"),
        "cluster": {"provider": "sandbox"},
        "platform": {"repo": str(REPO / "examples" / "platform")},
        **extra,
    }
    path = directory / "dr.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def bootstrap(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli.cli, ["--config", str(config), "bootstrap", "-o", "json", *args])


def run_of(result: Result) -> dict[str, Any]:
    return json.loads(result.stdout)  # type: ignore[no-any-return]


class Built:
    def __init__(self, directory: Path, config: Path, first: Result) -> None:
        self.directory, self.config, self.first = directory, config, first
        self.state = directory / "state"
        self.client = kubernetes.config.new_client_from_config(str(self.state / "sandbox" / "kubeconfig"))
        self.keys = sorted((self.state / "keys").glob("share-*"))
        self.token = secret.Secret((self.state / "keys" / "root-token").read_text().strip())
        self.shares = [secret.Secret(p.read_text().strip()) for p in self.keys]
        remember(self.token, *self.shares)

    def apps(self) -> dict[str, dict[str, Any]]:
        items = kubernetes.client.CustomObjectsApi(self.client).list_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "argocd", "applications"
        )["items"]
        return {a["metadata"]["name"]: a.get("status") or {} for a in items}

    def vault_addresses(self) -> list[str]:
        return vault_addresses(self.client)


def vault_addresses(client: kubernetes.client.ApiClient) -> list[str]:
    pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod("vault", label_selector="component=server")
    return sorted(f"http://{p.status.pod_ip}:8200" for p in pods.items)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    directory = tmp_path_factory.mktemp("bootstrap")
    config = write_config(directory)
    first = bootstrap(config)
    try:
        assert 0 == first.exit_code, first.output
        yield Built(directory, config, first)
    finally:
        sandbox_process.down(directory / "state" / "sandbox")


def test_bootstrap_builds_a_healthy_platform_with_keys_only_in_the_sink(built: Built) -> None:
    run = run_of(built.first)
    assert "succeeded" == run["status"]
    states = {name: s["state"] for name, s in run["steps"].items()}
    assert STEPS == list(states)
    assert {"succeeded"} == {states[s] for s in STEPS[:4]}  # a fresh cluster: these had work to do
    # ESO and the workloads may already be there by the time their check runs: then the step verifies and skips.
    assert {states["eso-sync"], states["app-health"]} <= {"succeeded", "skipped"}
    apps = built.apps()
    assert 10 == len(apps)
    assert {"Healthy"} == {a["health"]["status"] for a in apps.values()}
    assert {"Synced"} == {a["sync"]["status"] for a in apps.values()}
    for address in built.vault_addresses():
        status = vault.VaultNode(address).seal_status()
        assert status.initialized
        assert not status.sealed
    # The demo app's Secret is what Vault holds (generated at bootstrap, since a first install has none).
    admin = hvac.Client(url=vault.VaultCluster(built.vault_addresses()).active().address, token=built.token.reveal())
    stored = admin.secrets.kv.v2.read_secret_version(
        path="workloads/demo-app", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    synced = kubernetes.client.CoreV1Api(built.client).read_namespaced_secret("demo-app-secret", "workloads").data
    assert stored["api_key"] == base64.b64decode(synced["api_key"]).decode()
    # Keys: five shares and the token, 0600 in a 0700 dir, and in no other file of the state dir.
    assert 5 == len(built.keys)
    assert 0o700 == (built.state / "keys").stat().st_mode & 0o777
    assert {0o600} == {(p.stat().st_mode & 0o777) for p in [*built.keys, built.state / "keys" / "root-token"]}
    values = [s.reveal().encode() for s in [built.token, *built.shares]]
    for path in built.state.rglob("*"):
        if path.is_file() and "keys" not in path.relative_to(built.state).parts:
            data = path.read_bytes()
            assert not any(v in data for v in values), f"a key is in {path}"
    assert not any(v.decode() in built.first.output for v in values)


def test_rerunning_a_finished_bootstrap_skips_every_step(built: Built) -> None:
    again = bootstrap(built.config)
    assert 0 == again.exit_code, again.output
    steps = run_of(again)["steps"]
    assert {s: "skipped" for s in STEPS} == {name: s["state"] for name, s in steps.items()}


def test_argo_sync_times_out_naming_the_stuck_app_and_argos_reason(built: Built) -> None:
    sandbox = built.state / "sandbox"
    sandbox_process.set_faults(sandbox, fail=("observability/kube-prometheus-stack-grafana",))
    try:
        eventually(
            lambda: built.apps()["kube-prometheus-stack"]["health"]["status"] == "Progressing", "grafana unavailable"
        )
        config = write_config(built.directory, steps={"argo-sync": {"timeout": "4s"}})
        stuck = bootstrap(config)
        assert 1 == stuck.exit_code
        message = run_of(stuck)["steps"]["argo-sync"]["error"]["message"]
        assert "kube-prometheus-stack: Synced/Progressing" in message
        reason = "Waiting for rollout to finish: 0 of 1 updated replicas are available..."
        assert f"Deployment observability/kube-prometheus-stack-grafana Progressing: {reason}" in message
        assert "Traceback" not in stuck.output
    finally:
        sandbox_process.set_faults(sandbox, heal=("observability/kube-prometheus-stack-grafana",))
        write_config(built.directory)
    eventually(lambda: built.apps()["kube-prometheus-stack"]["health"]["status"] == "Healthy", "healed")


def test_sigkill_inside_every_step_then_resume_reaches_the_same_end_without_redoing_work(tmp_path: Path) -> None:
    """Kill the run as soon as each step is running, resume, repeat: every step killed once, Vault inited once."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    env = {**os.environ, "DR_LOG_FORMAT": "json"}
    log = (tmp_path / "runs.log").open("ab")
    killed: list[str] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "dr", "--config", str(config), "bootstrap", *args]
        return subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=tmp_path)

    try:
        proc, run_id = start(), None
        for name in STEPS:
            run = killing.await_running(state, name, proc, timeout=180)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed.append(name)
            run_id = run.run_id
            done_before = killing.finished(run)
            proc = start("--resume", run_id)
            if name == STEPS[-1]:
                assert 0 == proc.wait(timeout=300)
            killing.assert_not_redone(state, done_before)
        final = killing.latest(state)
        assert final is not None
        assert "succeeded" == final.status
        assert STEPS == killed
        log.close()
        events = [json.loads(line) for line in (tmp_path / "runs.log").read_text().splitlines() if line.startswith("{")]
        assert 1 == sum(e.get("event") == "vault_initialised" for e in events)
        remember(*[secret.Secret(p.read_text().strip()) for p in (state / "keys").iterdir()])
    finally:
        sandbox_process.down(state / "sandbox")


def test_printed_pgp_keys_custodians_unseal_then_the_run_resumes(tmp_path: Path) -> None:
    """keys.sink print: shares and root token are printed once, encrypted; dr keeps none, stops sealed, and
    resumes to a healthy platform once custodians unsealed and VAULT_TOKEN carries the decrypted root token."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "custodian <c@test>", "rsa2048", "encr", "never"], check=True, capture_output=True
    )
    public = base64.b64encode(subprocess.run([*gpg, "--export", "custodian"], check=True, capture_output=True).stdout)
    key_file = tmp_path / "custodian.asc.b64"
    key_file.write_bytes(public)
    config = write_config(
        tmp_path,
        vault={"shares": 3, "threshold": 2},
        keys={"sink": "print", "pgp_keys": [str(key_file)] * 3, "root_token_pgp_key": str(key_file)},
    )
    state = tmp_path / "state"

    def decrypt(text: str) -> secret.Secret:
        out = subprocess.run([*gpg, "--decrypt"], input=base64.b64decode(text), check=True, capture_output=True)
        value = secret.Secret(out.stdout.decode().strip())
        remember(value)
        return value

    try:
        first = bootstrap(config)
        assert 1 == first.exit_code
        assert "neither the key sink (print) nor BAO_TOKEN/VAULT_TOKEN gives this run its root token" in first.stderr
        assert "custodians unseal (`dr vault unseal --all`), export VAULT_TOKEN" in first.stderr
        printed = [line.split(": ", 1)[1] for line in first.stderr.splitlines() if "(PGP-encrypted, base64)" in line]
        assert 4 == len(printed)  # three shares and the root token, once
        assert not (state / "keys").exists()
        shares, token = [decrypt(p) for p in printed[:3]], decrypt(printed[3])
        run_id = run_of(first)["run_id"]
        addresses = vault_addresses(kubernetes.config.new_client_from_config(str(state / "sandbox" / "kubeconfig")))
        vault.VaultCluster(addresses).unseal_all(shares[:2])  # what `dr vault unseal --all` does for custodians
        resumed = CliRunner().invoke(
            cli.cli,
            ["--config", str(config), "bootstrap", "--resume", run_id, "-o", "json"],
            env={"VAULT_TOKEN": token.reveal()},
        )
        assert 0 == resumed.exit_code, resumed.output
        assert "succeeded" == run_of(resumed)["status"]
        assert not any(s.reveal() in resumed.output for s in [token, *shares])
    finally:
        sandbox_process.down(state / "sandbox")
