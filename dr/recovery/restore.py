"""The recovery-only steps: the snapshot, a throwaway init of the new Vault, and the Raft restore.

The new cluster's Vault is empty. It is initialised with the ORIGINAL's
share settings (so that after the restore the cached seal configuration
matches) and that init material is throwaway: before the restore it protects
nothing, after it it opens nothing. It is kept 0600 in the run's dir so a
crash between init and restore is resumable, and deleted once the restore is
verified. After the force restore only the original cluster's shares unseal,
only the original's tokens work, and Kubernetes auth still points at the old
cluster: `raft-restore` unseals with the shares from the key source, takes
the DR token from the key source or generates a root token with the shares
(revoked at the end), points Kubernetes auth at this cluster and reads the
canary.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Final

from dr import errors, secret, waiting
from dr.adapters import keys, vault
from dr.engine import step
from dr.ops import vault as ops_vault
from dr.recovery import platform
from dr.snapshots import schedule, service, verify

RUNBOOK_RESTORE = "runbooks/raft-restore.md"


SUSPENDED_BY: Final = "dr.dev/suspended-by-run"
CRONJOB: Final = ("batch/v1", "CronJob")


def _throwaway(ctx: step.StepContext) -> keys.FileSink:
    return keys.FileSink(ctx.run_dir / "throwaway-init")


def _snapshot_cronjobs(api: Any) -> list[dict[str, Any]]:
    return list(api.objects(*CRONJOB, labels=f"app.kubernetes.io/name={schedule.NAME}"))


def suspend_snapshots(ctx: step.StepContext, api: Any) -> None:
    """Suspend the new cluster's snapshot CronJob until the restore is verified.

    A nightly run against the empty or half-restored Vault would store a snapshot of nothing as the
    newest good one, and its retention could prune the real ones. A CronJob its owners suspended
    (no annotation) is left alone; one an earlier, crashed run suspended is adopted, to be resumed.
    """
    for job in _snapshot_cronjobs(api):
        meta = job["metadata"]
        by = (meta.get("annotations") or {}).get(SUSPENDED_BY)
        if (job.get("spec") or {}).get("suspend") and by in (None, ctx.run_id):
            continue
        patch = {"metadata": {"annotations": {SUSPENDED_BY: ctx.run_id}}, "spec": {"suspend": True}}
        api.patch(*CRONJOB, meta["name"], patch, meta["namespace"])
        ctx.log.info("snapshot_cronjob_suspended", cronjob=f"{meta['namespace']}/{meta['name']}")


def _suspended_by_us(ctx: step.StepContext, api: Any) -> list[dict[str, Any]]:
    return [
        j for j in _snapshot_cronjobs(api) if (j["metadata"].get("annotations") or {}).get(SUSPENDED_BY) == ctx.run_id
    ]


def resume_snapshots(ctx: step.StepContext, api: Any) -> None:
    """Give the CronJob back to Git: `suspend` and the annotation removed, so the live object matches the repo."""
    for job in _suspended_by_us(ctx, api):
        meta = job["metadata"]
        patch = {"metadata": {"annotations": {SUSPENDED_BY: None}}, "spec": {"suspend": None}}
        api.patch(*CRONJOB, meta["name"], patch, meta["namespace"])
        ctx.log.info("snapshot_cronjob_resumed", cronjob=f"{meta['namespace']}/{meta['name']}")


class Snapshot(step.Step):
    name = "snapshot"
    summary = "choose the snapshot (the latest good one, or --snapshot ID) and download it, checksum verified"
    end_state = "the snapshot is in the state dir and matches its manifest's sha256"
    default_timeout = 3600.0

    def _entry(self, ctx: step.StepContext) -> Any:
        cat = service.open_catalogue(platform.config_of(ctx), read_only=True)  # the store is never written during a run
        return cat, cat.get(str(ctx.params.get("snapshot") or "latest"))

    def _path(self, ctx: step.StepContext, snapshot_id: str) -> Path:
        return platform.config_of(ctx).state_dir / "snapshots" / f"{snapshot_id}.snap"

    def check(self, ctx: step.StepContext) -> bool:
        """Already downloaded (by this run or an earlier one) and still matching its manifest."""
        _, entry = self._entry(ctx)
        path = self._path(ctx, entry.manifest.id)
        if not path.exists() or _sha256(path) != entry.manifest.sha256:
            return False
        self._record(ctx, entry, path)
        return True

    def run(self, ctx: step.StepContext) -> None:
        cat, entry = self._entry(ctx)
        path = self._path(ctx, entry.manifest.id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # Vault's data: owner only
        partial.chmod(0o600)
        verify.check(cat, entry, copy_to=partial)  # raises, naming the snapshot, before anything is restored
        partial.replace(path)
        self._record(ctx, entry, path)

    @staticmethod
    def _record(ctx: step.StepContext, entry: Any, path: Path) -> None:
        manifest = entry.manifest
        ctx.set_output("id", manifest.id)
        ctx.set_output("created_at", manifest.created_at)
        ctx.set_output("sha256", manifest.sha256)
        ctx.set_output("size", manifest.size)
        ctx.set_output("path", str(path))


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


class VaultUnseal(step.Step):
    name = "vault-unseal"
    requires = ("argo-sync",)
    summary = "initialise the fresh Vault with the original share settings, unseal and join every pod"
    end_state = "every Vault pod initialised, unsealed and a Raft voter; autopilot healthy"
    default_timeout = 600.0

    def check(self, ctx: step.StepContext) -> bool:
        # Only a Vault this run initialised (or was told to take with --force) counts as done: an
        # unsealed Vault found on the target is someone's data until the interlock in run() says otherwise.
        ours = _throwaway(ctx).source() is not None or ctx.outputs_of(self.name).get("forced")
        if not ours and not ctx.outputs_of("raft-restore").get("restored"):
            try:
                token = dr_token(ctx)
            except errors.DRError:
                return False  # the key source cannot tell; run() says what it found
            if restore_problem(ctx, token) is not None:
                return False  # a Vault this run did not make, and not (yet) what a recovery makes
        api = platform.cluster_of(ctx)
        try:
            addresses = platform.vault_addresses(ctx, api)
            states = vault.VaultCluster(addresses).states() if addresses else []
        except errors.DRError:
            return False
        done = bool(states) and all(s.seal is not None and s.seal.initialized and not s.seal.sealed for s in states)
        if done:
            ctx.set_output("addresses", addresses)
        return done

    def run(self, ctx: step.StepContext) -> None:
        api, settings = platform.cluster_of(ctx), platform.config_of(ctx)
        suspend_snapshots(ctx, api)  # before this Vault exists as far as anything in the cluster can tell
        addresses = platform.await_vault_pods(ctx, api)
        ctx.set_output("addresses", addresses)
        sink = _throwaway(ctx)
        first = vault.VaultNode(addresses[0])
        if not first.seal_status().initialized:
            with ctx.platform_wait():  # Vault generating its keys
                result = first.init(settings.vault.shares, settings.vault.threshold)
            sink.save(result.shares, result.root_token, encrypted=False)
        source = sink.source()
        cluster = vault.VaultCluster(addresses)
        if source is None:
            found = _found(cluster)
            if not ctx.params.get("force"):
                raise errors.PermanentError(
                    f"the target's Vault is already initialised, and not by this run, so it may hold data: {found}",
                    hint=f"to restore the snapshot over it, resume with `dr recover --resume {ctx.run_id} --force` "
                    "(dr unseals it with the original's shares from the key source, then restores); "
                    "or recover into a cluster whose Vault is empty",
                    runbook=self.runbook,
                )
            # --force: the Vault on the target is taken to be the original's (a damaged cluster recovered in
            # place); its own shares are the original's, so the key source unseals it, or nothing does.
            ctx.log.warning("vault_already_initialised_forced", found=found)
            ctx.set_output("forced", True)
            source = original_keys(ctx)
        with ctx.platform_wait():
            cluster.unseal_all(source.shares()[: settings.vault.threshold])
            cluster.await_healthy(timeout=ctx.remaining())


def _found(cluster: vault.VaultCluster) -> str:
    """What is on the target, pod by pod, for the interlock's message (no secret in seal status)."""
    parts = []
    for state in cluster.states():
        if state.seal is None:
            parts.append(f"{state.address} unreachable ({state.error})")
        else:
            seal = "sealed" if state.seal.sealed else f"unsealed, cluster {state.seal.cluster_id}"
            parts.append(f"{state.address} initialised ({state.seal.threshold} of {state.seal.shares} shares), {seal}")
    return "; ".join(parts)


def original_keys(ctx: step.StepContext) -> keys.KeySource:
    """The ORIGINAL cluster's shares and DR token: after the restore they are the only ones that work."""
    return ops_vault.key_source(platform.config_of(ctx))


def dr_token(ctx: step.StepContext) -> secret.Secret | None:
    """The key source's DR token, if a key source is configured and holds one."""
    return original_keys(ctx).token() if platform.config_of(ctx).keys.source else None


def restore_problem(ctx: step.StepContext, token: secret.Secret | None) -> str | None:
    """What keeps Vault from the recovery's end state (every pod unsealed and a Raft voter, autopilot healthy,
    the original's token and canary working, Kubernetes auth pointing at this cluster), or None once it holds.
    An error on the way, like an election in progress, is the problem; so is having no DR token to tell with."""
    settings = platform.config_of(ctx)
    if token is None:
        return "no DR token in the key source to read the restored Vault with"
    try:
        api = platform.cluster_of(ctx)
        cluster = vault.VaultCluster(platform.vault_addresses(ctx, api), token=token)
        states = cluster.states()
        if not states:
            return "no Vault pods found"
        sealed = [s.address for s in states if s.seal is None or s.seal.sealed]
        if sealed:
            return "sealed or unreachable: " + ", ".join(sealed)
        # A restarted standby rejoins as a non-voter until autopilot promotes it: until then the recovered Vault
        # survives no further loss (failure tolerance 0), so it is not recovered yet.
        health = cluster.health(with_token=True)
        if not health.healthy:
            return "; ".join(health.problems) or "the Raft cluster is not healthy"
        node = cluster.active()
        canary = settings.snapshots.canary_path
        if canary and node.read(canary) is None:
            return f"the canary {canary} is not in Vault"
        wanted = str(platform.kubernetes_auth(ctx, api)["kubernetes_host"])
        host = str(node.read_kubernetes_auth().get("kubernetes_host"))
        return None if host == wanted else f"Kubernetes auth points at {host}, not at this cluster ({wanted})"
    except errors.DRError as exc:
        return exc.message


def _restore_found(addresses: list[str], throwaway: keys.KeySource) -> bool:
    """Whether a node already holds other data than the throwaway Vault: the restore happened.

    Vault itself is asked: a sealed node that refuses the throwaway's shares (but not for a stale seal
    configuration) is sealed under another barrier, the snapshot's; an unsealed node where the throwaway's
    root token is unknown has the snapshot's token store.
    """
    token, shares = throwaway.token(), throwaway.shares()
    for address in addresses:
        node = vault.VaultNode(address)
        try:
            status = node.seal_status()
            if not status.initialized:
                continue  # a standby that has not joined: not evidence either way
            if status.sealed:
                node.unseal(shares, settle_timeout=15)  # the throwaway, restarted: open again, as vault-unseal did
            elif token is not None:
                node.with_token(token).lookup_self()
        except errors.SealConfigStale:
            continue  # a standby with the throwaway's configuration: not evidence either way
        except errors.PermanentError:
            return True
        except errors.DRError:
            continue  # unreachable or electing: the other nodes may tell
    return False


class RaftRestore(step.Step):
    name = "raft-restore"
    requires = ("vault-unseal", "snapshot")
    summary = "force-restore the chosen snapshot on the active node and unseal with the ORIGINAL shares"
    end_state = (
        "snapshot restored, every pod unsealed with the original shares and a Raft voter, autopilot healthy,"
        " Kubernetes auth points at this cluster"
    )
    default_timeout = 900.0

    def _problem(self, ctx: step.StepContext) -> str | None:
        if _throwaway(ctx).source() is not None:
            return "the throwaway init is still there: it is deleted only once the restore verified"
        if ctx.outputs_of("vault-unseal").get("forced") and not ctx.outputs_of(self.name).get("restored"):
            return "--force: the target's own data is there until the snapshot replaces it"
        if _suspended_by_us(ctx, platform.cluster_of(ctx)):
            return "the snapshot CronJob is still suspended by this run"
        token = dr_token(ctx)
        if token is None:
            # Without a DR token the restored Vault cannot be read from outside: this run's word is the proof.
            return None if ctx.outputs_of(self.name).get("verified") else "not restored by this run"
        return restore_problem(ctx, token)

    def check(self, ctx: step.StepContext) -> bool:
        return self._problem(ctx) is None

    def verify(self, ctx: step.StepContext) -> None:
        """The end state, given a moment: right after the restore an election or a busy pod may still answer."""
        last: list[str] = []

        def probe() -> bool | waiting.Pending:
            problem = self._problem(ctx)
            last[:] = [problem] if problem else []
            return True if problem is None else waiting.Pending(problem)

        try:
            ctx.wait_until(probe, what="the restored Vault to verify", timeout=min(60.0, ctx.remaining()))
        except errors.DeadlineExceeded:
            raise errors.VerificationError(
                f"step {self.name} ran but its end state does not hold: {last[0] if last else self.end_state}",
                runbook=RUNBOOK_RESTORE,
            ) from None

    def run(self, ctx: step.StepContext) -> None:
        api, settings = platform.cluster_of(ctx), platform.config_of(ctx)
        addresses = list(ctx.output("vault-unseal", "addresses"))
        throwaway = _throwaway(ctx).source()
        original = original_keys(ctx)
        shares = original.shares()
        suspend_snapshots(ctx, api)  # again: the CronJob may have come after vault-unseal, or been healed by Argo
        forced = bool(ctx.outputs_of("vault-unseal").get("forced"))
        if (
            throwaway is not None
            and not ctx.outputs_of(self.name).get("restored")
            and _restore_found(addresses, throwaway)
        ):
            # The run stopped (SIGKILL, a full disk) after the restore and before its checkpoint said so.
            ctx.log.warning("vault_restore_found_done", snapshot=ctx.output("snapshot", "id"))
            ctx.set_output("restored", True)
        if (throwaway is not None or forced) and not ctx.outputs_of(self.name).get("restored"):
            if throwaway is not None:
                token = throwaway.token()
            else:  # --force: the target is unsealed with the original's shares, so its tokens are the original's
                first = vault.VaultCluster(addresses)
                token = original.token() or first.active().generate_root(shares[: settings.vault.threshold])
            cluster = vault.VaultCluster(addresses, token=token)
            with Path(ctx.output("snapshot", "path")).open("rb") as source:
                try:
                    with ctx.platform_wait():
                        cluster.restore(source, timeout=60)
                except errors.DeadlineExceeded as exc:
                    # A standby may neither seal nor take the restored data (OPENBAO-FACTS: never assume);
                    # `_unseal` restarts whatever still serves the old cluster.
                    ctx.log.warning("vault_restore_unsettled", detail=exc.message)
            ctx.set_output("restored", True)  # a resumed run unseals and re-points, it does not restore twice
            ctx.log.info("vault_restored", snapshot=ctx.output("snapshot", "id"))
        cluster = vault.VaultCluster(addresses)
        self._unseal(ctx, api, cluster, shares[: settings.vault.threshold])
        with ctx.platform_wait():
            cluster.await_active(timeout=ctx.remaining())
        token, generated = original.token(), False
        if token is None:
            token, generated = cluster.active().generate_root(shares[: settings.vault.threshold]), True
        node = cluster.active().with_token(token)
        node.write_kubernetes_auth(self._auth(ctx, api, node))
        canary = settings.snapshots.canary_path
        if canary and node.read(canary) is None:
            raise errors.VerificationError(f"the canary {canary} is not in the restored Vault", runbook=RUNBOOK_RESTORE)
        if generated:
            node.revoke_self()
        shutil.rmtree(ctx.run_dir / "throwaway-init", ignore_errors=True)
        ctx.set_output("vault_version", node.seal_status().version)
        ctx.set_output("verified", True)
        resume_snapshots(ctx, api)

    def _auth(self, ctx: step.StepContext, api: Any, node: vault.VaultNode) -> dict[str, Any]:
        """The restored config, re-pointed at this cluster (a write replaces the whole config)."""
        current = node.read_kubernetes_auth()
        kept = {k: v for k, v in current.items() if k in ("issuer", "disable_iss_validation", "pem_keys")}
        return {**kept, **platform.kubernetes_auth(ctx, api)}

    def _unseal(
        self, ctx: step.StepContext, api: Any, cluster: vault.VaultCluster, shares: list[secret.Secret]
    ) -> None:
        """Unseal every pod with the original shares.

        A pod is restarted (its StatefulSet makes it again on the same data) when it still has the
        pre-restore seal configuration ("invalid key size"), or when it is unsealed but serves another
        cluster than the restored one: a standby that did not take the restore.
        """
        restored: str | None = None
        for node in sorted(cluster.nodes, key=lambda n: not n.seal_status().sealed):  # the sealed ones first
            status = node.seal_status()
            if not status.sealed and restored is not None and status.cluster_id != restored:
                self._restart_pod(ctx, api, node.address, "a standby that did not take the restore")
                status = node.seal_status()
            if status.sealed:
                try:
                    with ctx.platform_wait():
                        status = node.unseal(shares)
                except errors.SealConfigStale:
                    self._restart_pod(ctx, api, node.address, "stale seal configuration after the restore")
                    with ctx.platform_wait():
                        status = node.unseal(shares)
            restored = restored or status.cluster_id

    def _restart_pod(self, ctx: step.StepContext, api: Any, address: str, reason: str) -> None:
        """Delete the pod behind `address`; its StatefulSet makes it again, on the same data, with a fresh process."""
        port = platform.config_of(ctx).platform.vault_port
        pods = {f"{(p.get('status') or {}).get('podIP')}:{port}": p for p in platform.vault_pods(ctx, api)}
        pod = next((p for key, p in pods.items() if address.endswith(key)), None)
        if pod is None:
            raise errors.PermanentError(f"no Vault pod behind {address} to restart", runbook=RUNBOOK_RESTORE)
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        api.delete("v1", "Pod", name, pod["metadata"]["namespace"])
        ctx.log.info("vault_pod_restarted", pod=name, reason=reason)

        def back() -> bool | None:
            again = next((p for p in platform.vault_pods(ctx, api) if p["metadata"]["name"] == name), None)
            return bool(again and again["metadata"]["uid"] != uid and platform.answers(address)) or None

        ctx.wait_until(back, what=f"pod {name} to be back", interval=0.5)
