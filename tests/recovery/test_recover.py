"""`dr recover --cluster new --provider sandbox`: bootstrap, canary, snapshot, destroy, recover, verify.

One original platform per module (bootstrapped, canary written, snapshot
saved, destroyed); each test recovers it into a sandbox of its own. The
example platform runs 3 Vault replicas, so every recovery here is the
3-replica case: restore on the active node, stale seal configuration on the
others.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import kubernetes
import pytest
import yaml
from click.testing import CliRunner, Result

from dr import cli, secret
from dr.adapters import kube, sandbox_process, vault
from dr.engine import checkpoints
from dr.ops import lease
from tests.harness_vault import remember
from tests.polling import eventually
from tests.recovery import killing
from tests.recovery.test_bootstrap import vault_addresses, write_config
from tests.reliability import campaign

CANARY = "dr/canary"
SEVEN = ["cluster", "root-app", "argo-sync", "vault-unseal", "raft-restore", "eso-sync", "app-health"]


def dr(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.cli, ["--config", str(config), *args], env=env)


def kv(addresses: list[str], token: secret.Secret) -> Any:
    return hvac.Client(url=vault.VaultCluster(addresses).active().address, token=token.reveal()).secrets.kv.v2


def read(client: Any, path: str) -> dict[str, Any]:
    return client.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]  # type: ignore[no-any-return]


@dataclass
class Original:
    """What is left of the destroyed platform: its keys, its snapshot store, what it held."""

    keys: Path
    store: Path
    token: secret.Secret
    demo: str
    cluster_id: str

    def config(self, directory: Path, **extra: Any) -> Path:
        shares = sorted(str(p) for p in self.keys.glob("share-*"))[:3]
        settings: dict[str, Any] = {
            "snapshots": {"store": str(self.store), "canary_path": f"secret/data/{CANARY}"},
            "keys": {"source": "files", "files": shares, "token_file": str(self.keys / "root-token")},
        }
        return write_config(directory, **{**settings, **extra})


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    old = tmp_path_factory.mktemp("old")
    store = old / "store"
    first = write_config(old, snapshots={"store": str(store), "min_age": "1s"})
    try:
        built = dr(first, "bootstrap")
        assert 0 == built.exit_code, built.output
        keys_dir = old / "state" / "keys"
        token = secret.Secret((keys_dir / "root-token").read_text().strip())
        client = kubernetes.config.new_client_from_config(str(old / "state" / "sandbox" / "kubeconfig"))
        addresses = vault_addresses(client)
        kv(addresses, token).create_or_update_secret(
            path=CANARY, secret={"v": "from-the-old-cluster"}, mount_point="secret"
        )
        demo = read(kv(addresses, token), "workloads/demo-app")["api_key"]
        cluster_id = vault.VaultNode(addresses[0]).seal_status().cluster_id
        saver = write_config(old, snapshots={"store": str(store), "min_age": "1s"}, vault={"addresses": addresses})
        saved = dr(saver, "snapshot", "save", env={"VAULT_TOKEN": token.reveal()})
        assert 0 == saved.exit_code, saved.output
    finally:
        sandbox_process.down(old / "state" / "sandbox")
    shutil.rmtree(old / "state" / "sandbox")  # the cluster is gone; its keys and snapshots are not
    assert cluster_id is not None
    return Original(keys_dir, store, token, demo, cluster_id)


@pytest.fixture(autouse=True)
def _secrets(original: Original) -> None:
    remember(original.token, *(secret.Secret(p.read_text().strip()) for p in original.keys.glob("share-*")))


def _core(state: Path) -> tuple[Any, Any]:
    client = kubernetes.config.new_client_from_config(str(state / "sandbox" / "kubeconfig"))
    return client, kubernetes.client.CoreV1Api(client)


def _lease_holder(client: Any) -> str | None:
    live = kubernetes.client.CoordinationV1Api(client).read_namespaced_lease(lease.NAME, lease.NAMESPACE)
    return live.spec.holder_identity  # type: ignore[no-any-return]


def _cronjob(client: Any) -> Any:
    return kubernetes.client.BatchV1Api(client).read_namespaced_cron_job("dr-snapshot", "vault-admin")


def _stale_auth(addresses: list[str], token: secret.Secret) -> None:
    """What a restore brings back: Kubernetes auth pointing at a cluster that is gone."""
    client = hvac.Client(url=vault.VaultCluster(addresses).active().address, token=token.reveal())
    current = client.read("auth/kubernetes/config")["data"]
    client.write(
        "auth/kubernetes/config",
        kubernetes_host="https://127.0.0.1:1",
        kubernetes_ca_cert=current["kubernetes_ca_cert"],
    )


def _es_warnings(client: Any) -> list[str]:
    """What ESO reports of a failed sync: its condition says only "could not get secret data from provider"."""
    events = kubernetes.client.CoreV1Api(client).list_namespaced_event(
        "workloads", field_selector="involvedObject.name=demo-app-secret,type=Warning"
    )
    return [e.message for e in events.items]


def _es_condition(client: Any) -> dict[str, Any]:
    es = kubernetes.client.CustomObjectsApi(client).get_namespaced_custom_object(
        "external-secrets.io", "v1", "workloads", "externalsecrets", "demo-app-secret"
    )
    return next(c for c in es["status"]["conditions"] if c["type"] == "Ready")  # type: ignore[no-any-return]


def test_a_destroyed_platform_comes_back_from_its_snapshot_with_every_secret(
    original: Original, tmp_path: Path
) -> None:
    recovery = original.config(tmp_path)
    state = tmp_path / "state"
    try:
        result = dr(recovery, "recover", "--cluster", "new", "-o", "json")
        assert 0 == result.exit_code, result.output
        run = json.loads(result.stdout)
        states = {name: s["state"] for name, s in run["steps"].items()}
        assert ["snapshot", *SEVEN] == list(states)
        assert {"succeeded", "skipped"} >= set(states.values())
        assert "succeeded" == states["raft-restore"]
        client, core = _core(state)
        addresses = vault_addresses(client)
        assert 3 == len(addresses)
        # Every pod serves the restored cluster: the standbys took the restore or were restarted onto it.
        assert {original.cluster_id} == {vault.VaultNode(a).seal_status().cluster_id for a in addresses}
        restored = kv(addresses, original.token)  # the ORIGINAL root token works: the token store came back
        assert "from-the-old-cluster" == read(restored, CANARY)["v"]
        synced = core.read_namespaced_secret("demo-app-secret", "workloads").data
        assert original.demo == base64.b64decode(synced["api_key"]).decode()  # the restored value, not a new one
        assert not list((state / "runs").rglob("throwaway-init"))  # the throwaway init material is gone
        (downloaded,) = (state / "snapshots").glob("*.snap")
        assert 0o600 == downloaded.stat().st_mode & 0o777
        summary = run["summary"]
        assert summary["snapshot_id"] == run["steps"]["snapshot"]["outputs"]["id"]
        assert summary["rto_s"] > 0
        assert summary["rpo_s"] > 0
        assert summary["waited_s"] + summary["orchestration_s"] == pytest.approx(summary["steps_s"], abs=0.01)
        report = json.loads(dr(recovery, "report", run["run_id"], "--format", "json").output)  # in the history
        assert ("recover", "passed", summary["rto_s"]) == (report["type"], report["verdict"], report["rto"]["seconds"])
        assert report["versions"]["vault"] == vault.VaultNode(addresses[0]).seal_status().version
        assert not _lease_holder(client)  # released when the run ended
        cronjob = _cronjob(client)
        assert not cronjob.spec.suspend  # suspended during the run, given back after raft-restore verified
        assert "dr.dev/suspended-by-run" not in (cronjob.metadata.annotations or {})

        again = dr(recovery, "recover", "--cluster", "new", "-o", "json")
        assert 0 == again.exit_code, again.output
        assert {"skipped"} == {s["state"] for s in json.loads(again.stdout)["steps"].values()}, again.stdout

        # A second recovery into this cluster finds its Vault initialised and will not touch it without --force.
        _stale_auth(addresses, original.token)
        kubernetes.client.CustomObjectsApi(client).patch_namespaced_custom_object(
            "external-secrets.io",
            "v1",
            "workloads",
            "externalsecrets",
            "demo-app-secret",
            {"metadata": {"annotations": {"force-sync": str(time.time())}}},
        )
        eventually(lambda: any("Code: 403" in m for m in _es_warnings(client)), what="ESO's login refused", timeout=30)
        assert "SecretSyncedError" == _es_condition(client)["reason"]
        # `dr doctor` tells as much before a run: the target's Vault holds data; with --force, a warning.
        kubeconfig = str(state / "sandbox" / "kubeconfig")
        looked = dr(recovery, "doctor", "--cluster", "existing", "--kubeconfig", kubeconfig, "-o", "json")
        assert 1 == looked.exit_code, looked.output
        found = {c["name"]: c for c in json.loads(looked.stdout)["checks"]}
        assert "fail" == found["vault"]["status"], found
        assert "3 of 3 Vault pod(s) initialised (3 of 5)" in found["vault"]["detail"]
        forced_look = dr(recovery, "doctor", "--cluster", "existing", "--kubeconfig", kubeconfig, "--force")
        assert 0 == forced_look.exit_code, forced_look.output
        assert "vault        WARN" in forced_look.output
        refused = dr(recovery, "recover", "--cluster", "new")
        assert 1 == refused.exit_code
        assert "already initialised, and not by this run" in refused.output
        assert "unsealed, cluster " + original.cluster_id in refused.output  # what it found
        # Not latest(): run ids sort by the second, and the rerun above may have started in the same one.
        (run_id,) = [r.run_id for r in checkpoints.CheckpointStore(state).iter_runs() if r.status == "failed"]  # type: ignore[union-attr]
        assert f"dr recover --resume {run_id} --force" in refused.output
        forced = dr(recovery, "recover", "--resume", run_id, "--force", "-o", "json")
        assert 0 == forced.exit_code, forced.output
        steps = json.loads(forced.stdout)["steps"]
        assert steps["raft-restore"]["outputs"]["restored"]
        assert "True" == _es_condition(client)["status"]  # re-pointed at this cluster: ESO logs in again
        assert "from-the-old-cluster" == read(kv(addresses, original.token), CANARY)["v"]
    finally:
        sandbox_process.down(state / "sandbox")


def test_sigkill_inside_every_step_then_resume_reaches_the_same_end(original: Original, tmp_path: Path) -> None:
    """Kill `dr recover` in each of the seven steps in turn; a wrong share on the way is a clear, resumable stop."""
    good = original.config(tmp_path)
    shares = sorted(original.keys.glob("share-*"))
    raw = bytearray(base64.b64decode(shares[0].read_text().strip()))
    raw[-1] ^= 0xFF
    wrong = tmp_path / "wrong-share"
    wrong.write_text(base64.b64encode(bytes(raw)).decode())
    wrong.chmod(0o600)
    remember(secret.Secret(wrong.read_text()))
    state = tmp_path / "state"
    env = {**os.environ, "DR_LOG_FORMAT": "json"}
    log = (tmp_path / "runs.log").open("ab")

    def start(*args: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "dr", "--config", str(good), "recover", *args]
        return subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=tmp_path)

    try:
        proc = start("--cluster", "new")
        for name in SEVEN:
            if name == "raft-restore":
                # With one share wrong the restore happens, the unseal stops: a clear error, a resumable run.
                good.write_text(good.read_text().replace(str(shares[0]), str(wrong)))
            run = killing.await_running(state, name, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            done_before = killing.finished(run)
            if name == "raft-restore":
                assert 1 == start("--resume", run.run_id).wait(timeout=300)
                failed = killing.latest(state)
                assert failed is not None
                assert "failed" == failed.status
                error = failed.steps["raft-restore"].error or {}
                assert "was refused" in error["message"]
                assert "one of the shares is wrong" in error["hint"]
                assert failed.steps["raft-restore"].outputs.get("restored")
                client, _ = _core(state)
                assert _cronjob(client).spec.suspend  # no snapshot of a half-restored Vault meanwhile
                good.write_text(good.read_text().replace(str(wrong), str(shares[0])))
            proc = start("--resume", run.run_id)
            if name == SEVEN[-1]:
                assert 0 == proc.wait(timeout=300)
            killing.assert_not_redone(state, done_before)
        final = killing.latest(state)
        assert final is not None
        assert "succeeded" == final.status
        client, core = _core(state)
        assert "from-the-old-cluster" == read(kv(vault_addresses(client), original.token), CANARY)["v"]
        synced = core.read_namespaced_secret("demo-app-secret", "workloads").data
        assert original.demo == base64.b64decode(synced["api_key"]).decode()
        assert not _cronjob(client).spec.suspend
        log.close()
        events = [json.loads(line) for line in (tmp_path / "runs.log").read_text().splitlines() if line.startswith("{")]
        assert 1 == sum(e.get("event") == "vault_restored" for e in events)  # restored once, across every resume
        assert not list((state / "runs").rglob("throwaway-init"))
    finally:
        sandbox_process.down(state / "sandbox")


def test_a_full_disk_between_the_restore_and_its_checkpoint_resumes_without_restoring_again(
    original: Original, tmp_path: Path
) -> None:
    """Found by the fault campaign: the restore done, its checkpoint not written (ENOSPC; SIGKILL is the same
    window). The resume must see that Vault already holds the snapshot, not try the throwaway's token on it."""
    config = original.config(tmp_path)
    state = tmp_path / "state"
    runs = state / "runs"
    runs.mkdir(mode=0o700, parents=True)
    state.chmod(0o700)
    log = tmp_path / "run.log"
    with campaign.tmpfs(runs, "256k"):
        try:
            with log.open("ab") as out:
                argv = ["--config", str(config), "--log-format", "json", "recover", "--cluster", "new"]
                proc = subprocess.Popen([sys.executable, "-m", "dr", *argv], stdout=out, stderr=out, cwd=tmp_path)
                run = killing.await_running(state, "raft-restore", proc)
                # Once the restore is sent, the next checkpoint write is the one that records it.
                assert campaign.await_log(proc, log, "vault_restore_sent"), log.read_text()[-3000:]
                campaign.fill(runs)
                assert 1 == proc.wait(timeout=300)
            assert "No space left on device" in log.read_text()
            (runs / ".filler").unlink()
            stopped = checkpoints.CheckpointStore(state).load(run.run_id)
            assert not stopped.steps["raft-restore"].outputs.get("restored")  # the restore happened, unrecorded
            resumed = dr(config, "recover", "--resume", run.run_id, env={"DR_LOG_FORMAT": "json"})
            assert 0 == resumed.exit_code, resumed.output[-3000:]
            assert "vault_restore_found_done" in resumed.output
            assert "vault_restore_sent" not in resumed.output  # not restored twice
            client, _ = _core(state)
            assert "from-the-old-cluster" == read(kv(vault_addresses(client), original.token), CANARY)["v"]
        finally:
            sandbox_process.down(state / "sandbox")


def test_bad_input_stops_with_a_clear_error_and_a_resumable_run(original: Original, tmp_path: Path) -> None:
    """A missing --snapshot id, a corrupt snapshot, a missing root app, another run's lease: each named, exit != 0."""
    state = tmp_path / "state"
    config = original.config(tmp_path)
    try:
        missing = dr(config, "recover", "--cluster", "new", "--snapshot", "20260101T000000Z-nope00")
        assert 2 == missing.exit_code  # refused before anything is built: nothing to resume
        assert "no committed snapshot '20260101T000000Z-nope00'" in missing.output
        assert "dr snapshot list" in missing.output
        assert "Traceback" not in missing.output
        store = checkpoints.CheckpointStore(state)
        assert store.latest() is None
        assert not (state / "sandbox").exists()

        corrupt = tmp_path / "corrupt-store"
        shutil.copytree(original.store, corrupt)
        (snap,) = [p for p in corrupt.rglob("*") if p.is_file() and p.suffix == ".snap"]
        data = bytearray(snap.read_bytes())
        data[len(data) // 2] ^= 0xFF
        snap.write_bytes(bytes(data))
        bad = original.config(tmp_path, snapshots={"store": str(corrupt), "canary_path": f"secret/data/{CANARY}"})
        refused = dr(bad, "recover", "--cluster", "new")
        assert 1 == refused.exit_code
        assert snap.stem in refused.output  # names the snapshot
        assert "sha256" in refused.output
        run = store.latest()
        assert run is not None
        assert "pending" == run.steps["raft-restore"].state  # stopped before anything was restored
        assert not list((state / "snapshots").glob("*.snap"))  # no half-checked copy left to restore from

        no_root = original.config(tmp_path, platform={"repo": str(tmp_path / "empty"), "root_app": "root-app.yaml"})
        (tmp_path / "empty").mkdir()
        lost = dr(no_root, "recover", "--cluster", "new")
        assert lost.exit_code != 0
        assert "root-app.yaml" in lost.output
        assert "Traceback" not in lost.output

        client, _ = _core(state)
        other = lease.Lease(
            kube.Kube(state / "sandbox" / "kubeconfig"), lease.Holder("other-run", "bob@desk", "recover")
        )
        other.acquire()
        try:
            second = dr(config, "recover", "--cluster", "new")
            assert 3 == second.exit_code
            assert "run other-run, started by bob@desk" in second.output
        finally:
            other.release()
        assert "other-run" != _lease_holder(client)
    finally:
        sandbox_process.down(state / "sandbox")


def test_an_unreachable_cluster_is_a_clear_error_and_a_resumable_run(original: Original, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "gone",
            }
        )
    )
    config = original.config(tmp_path, cluster={"provider": "kubeconfig", "kubeconfig": str(kubeconfig)})
    checked = dr(config, "recover", "--cluster", "existing")  # the preflight finds it first, and starts nothing
    assert (1, None) == (checked.exit_code, checkpoints.CheckpointStore(tmp_path / "state").latest())
    assert "api          FAIL    " in checked.output
    result = dr(config, "recover", "--cluster", "existing", "--skip-preflight")
    assert result.exit_code == 1, result.output
    assert "127.0.0.1:1" in result.output
    assert "Traceback" not in result.output
    run = checkpoints.CheckpointStore(tmp_path / "state").latest()
    assert run is not None
    assert "failed" == run.steps["cluster"].state
    assert f"dr recover --resume {run.run_id}" in result.output
