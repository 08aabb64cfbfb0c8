"""The `dr drill` use case: a game day that measures RTO and RPO end to end, with evidence.

A drill builds a throwaway source platform (`dr bootstrap`), writes canary
secrets to its Vault before and after a snapshot, destroys it (scenario
`total-loss`: cluster and Vault data gone, only the keys and the snapshot
store survive, as they would off-site), recovers it into a new cluster with
`dr recover --cluster new`, and proves what came back: the canaries written
before the snapshot are in Vault and synced into Kubernetes Secrets, those
written after it are absent (so the RPO is measured, not assumed), and every
Application is Healthy. Everything it made is torn down whatever happens,
unless `keep` is set; `cleanup` removes what a crashed drill left.

Its workspace is `<state_dir>/drills/<id>/`: `drill.json` (what exists and
where, for cleanup), the source and target state dirs, the snapshot store,
and the report in every format. The report also goes to the history in the
state dir.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets as _random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from dr import config as config_mod
from dr import errors, files, logs, secret, views
from dr.adapters import kube, metrics, providers, sandbox_process, vault
from dr.drills import FAULTS, SCENARIOS
from dr.engine import checkpoints, runner
from dr.recovery import bootstrap, recover
from dr.reports import history, html, record, render
from dr.snapshots import service

RUNBOOK: Final = "runbooks/drill.md"
MARKER: Final = "drill.json"
APP: Final = ("argoproj.io/v1alpha1", "Application")
ES: Final = ("external-secrets.io/v1", "ExternalSecret")
SYNC_TIMEOUT: Final = 120.0

log = logs.get("dr.drill")


class Aborted(errors.PermanentError):
    """The recovery ran past the drill's stop condition (a multiple of the target RTO)."""


@dataclass(frozen=True)
class Options:
    provider: Literal["sandbox", "kind"] = "sandbox"
    scenario: str = "total-loss"
    target_rto: float | None = None  # seconds; None: config targets.rto
    target_rpo: float | None = None
    report_dir: Path | None = None
    keep: bool = False
    fault: str | None = None


@dataclass
class Result:
    report: dict[str, Any]
    workspace: Path
    written: list[Path]
    exit_code: int


@dataclass
class Canary:
    path: str  # under the KV mount, e.g. dr-drill/<id>/pre-1
    value: secret.Secret
    written_at: str
    before_snapshot: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class _State:
    """What the drill has made so far: the marker file `cleanup` reads."""

    id: str
    pid: int
    provider: str
    started_at: str
    status: str = "running"
    keep: bool = False
    clusters: list[dict[str, str]] = field(default_factory=list)  # {"role", "provider", "where"}


def _now() -> str:
    return checkpoints.timestamp(checkpoints.utcnow())


class Drill:
    def __init__(self, config: config_mod.Config, options: Options) -> None:
        if options.scenario not in SCENARIOS:
            raise errors.ConfigError(f"unknown scenario {options.scenario!r}; the scenarios are {', '.join(SCENARIOS)}")
        if options.fault is not None and (options.fault not in FAULTS or options.provider != "sandbox"):
            raise errors.ConfigError(
                f"--fault {options.fault!r}: the faults are {', '.join(FAULTS)}, on the sandbox provider only"
            )
        if options.provider == "kind":
            providers.require_kind()
        self.config = config
        self.options = options
        self.targets = record.Targets(
            options.target_rto or config.targets.rto, options.target_rpo or config.targets.rpo
        )
        self.id = checkpoints.new_run_id()
        state = checkpoints.ensure_private_dir(config.state_dir, what="state dir")  # before mkdir makes it 0755
        drills = checkpoints.ensure_private_dir(state / "drills", what="drills dir")
        self.root = checkpoints.ensure_private_dir(drills / self.id, what="drill workspace")
        self.state = _State(self.id, os.getpid(), options.provider, _now(), keep=options.keep)
        self.phases: list[record.Phase] = []
        self.canaries: list[Canary] = []
        self.token: secret.Secret | None = None
        self.snapshot: dict[str, Any] = {}
        self.disaster_at: str | None = None
        self.recovery: checkpoints.RunRecord | None = None
        self.verifications: list[record.Verification] = []
        self._source_run: checkpoints.RunRecord | None = None
        self._api: kube.Kube | None = None
        self._addresses: list[str] = []
        self._save_state()

    # -- layout ------------------------------------------------------------------------------------

    @property
    def source_dir(self) -> Path:
        return self.root / "source"

    @property
    def target_dir(self) -> Path:
        return self.root / "target"

    @property
    def store_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def cluster_name(self) -> str:
        # kind needs a name per drill; the source is deleted before the target is made, so they can share it.
        return f"dr-drill-{self.id[-6:]}" if self.options.provider == "kind" else self.config.cluster.name

    def _save_state(self) -> None:
        files.write_atomic(self.root / MARKER, json.dumps(self.state.__dict__, indent=2).encode())

    def _config(self, state_dir: Path, **sections: Any) -> config_mod.Config:
        """The user's configuration with the drill's own cluster, state dir and store."""
        base = self.config
        cluster = base.cluster.model_copy(update={"provider": self.options.provider, "name": self.cluster_name})
        snapshots = base.snapshots.model_copy(
            update={"store": str(self.store_dir), "s3_endpoint": None, "metrics_textfile": None, "pushgateway": None}
        )
        update: dict[str, Any] = {"state_dir": state_dir, "cluster": cluster, "snapshots": snapshots}
        update["keys"] = config_mod.KeysSettings()  # a throwaway Vault's keys go to files in its state dir
        update["vault"] = base.vault.model_copy(update={"addresses": [], "auth": config_mod.VaultAuthSettings()})
        for name, changes in sections.items():
            current = update.get(name, getattr(base, name))
            update[name] = current.model_copy(update=changes) if isinstance(changes, dict) else changes
        return base.model_copy(update=update)

    # -- phases ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[record.Phase]:
        current = record.Phase(name, _now())
        self.phases.append(current)
        log.info("drill_phase_started", drill=self.id, phase=name)
        try:
            yield current
        except KeyboardInterrupt:
            current.outcome = "interrupted"
            raise
        except BaseException as exc:
            current.outcome = "failed"
            current.detail = current.detail or secret.redact_text(str(exc))
            raise
        else:
            current.outcome = "succeeded"
        finally:
            current.ended_at = _now()
            log.info("drill_phase_finished", drill=self.id, phase=name, outcome=current.outcome)

    def run(self) -> Result:
        error: errors.DRError | None = None
        verdict: record.Verdict | None = None
        try:
            self._build()
            self._write_canaries(before_snapshot=True)
            self._take_snapshot()
            self._write_canaries(before_snapshot=False)
            self._destroy()
            self._recover()
            self._verify()
        except errors.Interrupted as exc:
            error, verdict = exc, "stopped"
        except Aborted as exc:
            error, verdict = exc, "aborted"
        except errors.DRError as exc:
            error = exc
        except KeyboardInterrupt:
            error = errors.Interrupted(
                f"drill {self.id} interrupted", hint="everything it made is being removed; run it again"
            )
            verdict = "stopped"
        except Exception as exc:  # a defect in dr: still tear down, still report, with the traceback in the log
            log.exception("drill_defect", drill=self.id)
            error = errors.PermanentError(
                f"drill {self.id} failed on an unexpected {type(exc).__name__}: {secret.redact_text(str(exc))}",
                hint="this is a bug in dr: the traceback is in the log; please report it",
                runbook=RUNBOOK,
            )
        finally:
            self._teardown()
        return self._report(error, verdict)

    def _build(self) -> None:
        with self.phase("build") as ph:
            self._track("source", self.source_dir)
            cfg = self._config(self.source_dir)
            store = checkpoints.CheckpointStore(self.source_dir)
            outcome = bootstrap.bootstrap(cfg, store, provider=self.options.provider)
            if outcome.status != "succeeded":
                raise _failed("building the source platform", outcome, store.state_dir)
            ph.detail = f"dr bootstrap run {outcome.run_id}"
            self.token = secret.Secret((self.source_dir / "keys" / "root-token").read_text().strip())
            self._source_run = store.load(outcome.run_id)

    def _vault(self, run: checkpoints.RunRecord) -> vault.VaultCluster:
        out = run.steps["cluster"].outputs
        api = kube.Kube(Path(out["kubeconfig"]), out.get("context"))
        settings = self.config.platform
        pods = api.objects("v1", "Pod", settings.vault_namespace, labels=settings.vault_selector)
        addresses = [api.pod_address(p, settings.vault_port) for p in sorted(pods, key=lambda p: p["metadata"]["name"])]
        self._api = api  # keeps any port-forward open while the drill uses the addresses
        self._addresses = addresses
        return vault.VaultCluster(addresses, token=self.token)

    def _write_canaries(self, *, before_snapshot: bool) -> None:
        label = "pre" if before_snapshot else "post"
        with self.phase(f"canaries-{'before' if before_snapshot else 'after'}") as ph:
            assert self._source_run is not None
            node = self._vault(self._source_run).active()
            prefix = self.config.drills.canary_prefix.strip("/")
            for i in range(1, self.config.drills.canaries + 1):
                canary = Canary(
                    f"{prefix}/{self.id}/{label}-{i}", secret.Secret(_random.token_urlsafe(18)), _now(), before_snapshot
                )
                data = {"value": canary.value.reveal(), "written_at": canary.written_at, "drill": self.id}
                node.write(f"{self.config.drills.kv_mount}/data/{canary.path}", {"data": data})
                self.canaries.append(canary)
            ph.detail = (
                f"{self.config.drills.canaries} canaries under {self.config.drills.kv_mount}/{prefix}/{self.id}/"
            )

    def _take_snapshot(self) -> None:
        with self.phase("snapshot") as ph:
            assert self._source_run is not None
            self._vault(self._source_run)  # the source's node addresses, into self._addresses
            cfg = self._config(self.source_dir, vault={"addresses": self._addresses})
            assert self.token is not None
            saved, _ = service.save_now(cfg, env={"VAULT_TOKEN": self.token.reveal()})
            m = saved.manifest
            self.snapshot = {"id": m.id, "created_at": m.created_at, "size": m.size, "sha256": m.sha256}
            ph.detail = f"snapshot {m.id}, {m.size} bytes"

    def _destroy(self) -> None:
        with self.phase("destroy") as ph:
            self.disaster_at = _now()
            self._remove("source")
            ph.detail = "the source cluster and its Vault data are gone; its keys and the snapshot store are kept"

    def _recover(self) -> None:
        """The recovery; raises unless it ended with every step verified."""
        with self.phase("recover") as ph:
            assert self.token is not None
            keys_dir = self.source_dir / "keys"
            threshold = self.config.vault.threshold
            key_settings = config_mod.KeysSettings(
                source="files",
                files=[keys_dir / f"share-{i}" for i in range(1, threshold + 1)],
                token_file=keys_dir / "root-token",
            )
            first = next(c for c in self.canaries if c.before_snapshot)
            cfg = self._config(
                self.target_dir,
                keys=key_settings,
                snapshots={"canary_path": f"{self.config.drills.kv_mount}/data/{first.path}"},
            )
            store = checkpoints.CheckpointStore(self.target_dir)
            self._track("target", self.target_dir)
            if self.options.fault == "eso-unavailable":
                sandbox_process.set_faults(self.target_dir / "sandbox", eso_failing=True)
            limit = self.config.drills.abort_after * (self.targets.rto_s or 0.0)
            started = time.monotonic()
            outcome = recover.recover(cfg, store, cluster="new", provider=self.options.provider, abort_after=limit)
            self.recovery = store.load(outcome.run_id)
            ph.detail = f"dr recover run {outcome.run_id}: {outcome.status}"
            if outcome.status == "succeeded":
                return
            if outcome.status == "stopped" and time.monotonic() - started >= limit:
                ph.detail += f"; aborted after {limit:.0f} s ({self.config.drills.abort_after:g} x the target RTO)"
                raise Aborted(
                    f"drill {self.id}: the recovery was aborted after {limit:.0f} s, "
                    f"{self.config.drills.abort_after:g} times the target RTO of {self.targets.rto_s:.0f} s",
                    hint="look at the slowest step in the report; raise drills.abort_after only if the target is wrong",
                    runbook=RUNBOOK,
                ) from None
            raise _failed("the recovery", outcome, store.state_dir)

    # -- verification ------------------------------------------------------------------------------

    def _verify(self) -> None:
        with self.phase("verify") as ph:
            assert self.recovery is not None
            cluster = self._vault(self.recovery)
            node = cluster.active().with_token(self.token)
            self.verifications.append(self._in_vault(node, before=True))
            self.verifications.append(self._in_vault(node, before=False))
            self.verifications.append(self._in_secrets())
            self.verifications.append(self._applications())
            failed = [v.name for v in self.verifications if not v.passed]
            ph.detail = f"{len(self.verifications) - len(failed)} of {len(self.verifications)} verifications passed"
            if failed:
                raise errors.VerificationError(
                    f"drill {self.id}: {', '.join(failed)} failed",
                    hint="the report lists the evidence",
                    runbook=RUNBOOK,
                )

    def _snapshot_time(self) -> str:
        return views.clock(self.snapshot.get("created_at"))

    def _in_vault(self, node: vault.VaultNode, *, before: bool) -> record.Verification:
        mount = self.config.drills.kv_mount
        evidence, ok = [], True
        for c in (c for c in self.canaries if c.before_snapshot == before):
            found = node.read(f"{mount}/data/{c.path}")
            data = (found or {}).get("data") or {}
            where = f"{mount}/{c.path} written {c.written_at}"
            if before:
                good = data.get("value") == c.value.reveal() and data.get("written_at") == c.written_at
                evidence.append(f"{where}: {'present, value matches' if good else 'MISSING or different'}")
            else:
                good = found is None
                evidence.append(f"{where}: {'absent' if good else 'PRESENT (written after the snapshot!)'}")
            ok = ok and good
        name = (
            f"canaries written before the snapshot ({self._snapshot_time()}) are in the recovered Vault"
            if before
            else "canaries written after the snapshot are absent from the recovered Vault"
        )
        return record.Verification(name, ok, evidence)

    def _external_secret(self, canary: Canary) -> dict[str, Any]:
        name = f"dr-drill-{canary.name}"
        settings = self.config.drills
        return {
            "apiVersion": ES[0],
            "kind": ES[1],
            "metadata": {"name": name, "namespace": settings.canary_namespace, "labels": {"dr.dev/drill": self.id}},
            "spec": {
                "refreshInterval": "1m",
                "secretStoreRef": {"name": settings.secret_store, "kind": settings.secret_store_kind},
                "target": {"name": name, "creationPolicy": "Owner"},
                "data": [{"secretKey": "value", "remoteRef": {"key": canary.path, "property": "value"}}],
            },
        }

    def _in_secrets(self) -> record.Verification:
        """An ExternalSecret per canary in the recovered cluster: ESO must copy the pre ones, fail on the post ones."""
        api = self._api
        assert api is not None
        docs = {c.name: self._external_secret(c) for c in self.canaries}
        ns = self.config.drills.canary_namespace
        for doc in docs.values():
            api.apply_one(doc)
        deadline = time.monotonic() + SYNC_TIMEOUT
        try:
            while True:
                evidence, settled = self._secret_evidence(api, docs, ns)
                if all(settled) or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        finally:
            for doc in docs.values():
                name = doc["metadata"]["name"]
                with contextlib.suppress(errors.DRError):
                    api.delete(*ES, name, ns)
                with contextlib.suppress(errors.DRError):
                    api.delete("v1", "Secret", name, ns)
        return record.Verification(
            f"canaries reach Kubernetes Secrets through External Secrets ({self.config.drills.secret_store_kind}"
            f" {self.config.drills.secret_store})",
            all(settled),
            evidence,
        )

    def _secret_evidence(
        self, api: kube.Kube, docs: dict[str, dict[str, Any]], ns: str
    ) -> tuple[list[str], list[bool]]:
        evidence, settled = [], []
        for c in self.canaries:
            name = docs[c.name]["metadata"]["name"]
            found = api.get("v1", "Secret", name, ns)
            raw = ((found or {}).get("data") or {}).get("value")
            value = base64.b64decode(raw).decode() if raw else None
            es = api.get(*ES, name, ns) or {}
            conditions = (es.get("status") or {}).get("conditions") or []
            ready: dict[str, Any] = next((x for x in conditions if x.get("type") == "Ready"), {})
            if c.before_snapshot:
                good = value == c.value.reveal()
                evidence.append(f"Secret {ns}/{name}: {'synced, value matches' if good else 'not synced (yet)'}")
            else:
                good = found is None and ready.get("status") == "False"
                state = "absent; ESO reports " + str(ready.get("reason")) if good else "not settled (yet)"
                evidence.append(f"Secret {ns}/{name}: {state}")
            settled.append(good)
        return evidence, settled

    def _applications(self) -> record.Verification:
        assert self._api is not None
        apps = self._api.objects(*APP)
        bad = []
        for app in apps:
            status = app.get("status") or {}
            health = (status.get("health") or {}).get("status")
            sync = (status.get("sync") or {}).get("status")
            if health != "Healthy" or sync != "Synced":
                bad.append(f"{app['metadata']['name']}: {health}/{sync}")
        evidence = [f"{len(apps) - len(bad)} of {len(apps)} Applications Healthy and Synced", *bad]
        return record.Verification("every Application is Healthy and Synced", bool(apps) and not bad, evidence)

    # -- teardown ----------------------------------------------------------------------------------

    def _track(self, role: str, state_dir: Path) -> None:
        where = str(state_dir / "sandbox") if self.options.provider == "sandbox" else self.cluster_name
        self.state.clusters.append({"role": role, "provider": self.options.provider, "where": where})
        self._save_state()

    def _remove(self, role: str) -> None:
        for entry in [c for c in self.state.clusters if c["role"] == role]:
            destroy(entry)
            self.state.clusters.remove(entry)
            self._save_state()

    def _teardown(self) -> None:
        with self.phase("teardown") as ph:
            if self.options.keep and self.recovery is not None:
                ph.detail = f"kept: the recovered platform (state dir {self.target_dir}) and its keys"
                self._remove("source")
                self.state.status = "kept"
            else:
                for role in ("source", "target"):
                    self._remove(role)
                # A throwaway platform's keys and snapshots are worth nothing after the drill and must not linger.
                shutil.rmtree(self.source_dir / "keys", ignore_errors=True)
                shutil.rmtree(self.store_dir, ignore_errors=True)
                ph.detail = "every cluster the drill made is gone; its keys and snapshots are deleted"
                self.state.status = "finished"
            self._save_state()

    # -- report ------------------------------------------------------------------------------------

    def _report(self, error: errors.DRError | None, verdict: record.Verdict | None) -> Result:
        if error is not None and verdict is None:
            verdict = "failed"
        report = record.build(
            self.recovery,
            kind="drill",
            report_id=self.id,
            scenario=self.options.scenario,
            provider=self.options.provider,
            operator=runner.operator_identity(),
            started_at=self.state.started_at,
            ended_at=_now(),
            disaster_at=self.disaster_at,
            targets=self.targets,
            verifications=self.verifications,
            phases=self.phases,
            verdict=verdict,
            error=error.to_dict() if error is not None else None,
            snapshot_extra=self.snapshot,
        )
        earlier = history.remember(self.config.state_dir, report, type_="drill")
        written = publish(report, earlier, self.root, self.options.report_dir)
        settings = self.config.drills
        if settings.metrics_textfile or settings.pushgateway:
            metrics.record_drill(report, textfile=settings.metrics_textfile, pushgateway=settings.pushgateway)
        code = errors.EXIT_OK if report["verdict"] == "passed" else errors.EXIT_FAILED
        if error is not None:
            code = error.exit_code if error.exit_code != errors.EXIT_OK else errors.EXIT_FAILED
        log.info("drill_finished", drill=self.id, verdict=report["verdict"], rto=report["rto"]["seconds"])
        return Result(report, self.root, written, code)


def _failed(what: str, outcome: runner.Outcome, state_dir: Path) -> errors.DRError:
    err = outcome.error
    if outcome.status == "stopped":
        return errors.Interrupted(
            f"drill stopped by a signal during {what}", hint="everything it made is removed; run the drill again"
        )
    where = f"{', '.join(outcome.failed_steps)}" if outcome.failed_steps else outcome.status
    message = f"{what} failed in {where}: {err.message if err else 'no error recorded'}"
    hint = (
        err.hint if err else ""
    ) + f" (the run's checkpoints, kept after the teardown: {state_dir}, run {outcome.run_id})"
    return errors.PermanentError(message, hint=hint.strip(), runbook=err.runbook if err else RUNBOOK)


def publish(report: dict[str, Any], past: list[dict[str, Any]], *dirs: Path | None) -> list[Path]:
    """report.json, .md, .html (with `past`, oldest first, ending with this report) and junit.xml into each
    directory given; returns the directories."""
    out = {
        "report.json": json.dumps(report, indent=2) + "\n",
        "report.md": render.markdown(report),
        "report.html": html.page(report, past),
        "junit.xml": render.junit(report),
    }
    written = []
    for directory in dict.fromkeys(d for d in dirs if d is not None):
        Path(directory).mkdir(parents=True, exist_ok=True)
        for name, text in out.items():
            files.write_atomic(Path(directory) / name, text.encode(), mode=0o644)
        written.append(Path(directory))
    return written


def destroy(entry: dict[str, str]) -> None:
    """Remove one cluster a drill made: a sandbox (its processes and its data) or a kind cluster."""
    if entry["provider"] == "sandbox":
        sandbox_process.down(Path(entry["where"]))
        shutil.rmtree(entry["where"], ignore_errors=True)
    elif entry["provider"] == "kind":
        providers.delete_kind(entry["where"])


def cleanup(config: config_mod.Config) -> list[str]:
    """Remove what crashed or kept drills left (their clusters, keys and snapshots); returns what was removed."""
    root = config.state_dir / "drills"
    removed: list[str] = []
    busy: set[str] = set()  # clusters of drills still running: their own teardown removes them
    if not root.is_dir():
        return removed
    for marker in sorted(root.glob(f"*/{MARKER}")):
        try:
            state = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            log.warning("drill_marker_unreadable", path=str(marker), error=str(exc))
            continue
        if state.get("status") == "running" and sandbox_process.alive(int(state.get("pid", 0))):
            log.info("drill_still_running", drill=state.get("id"), pid=state.get("pid"))
            busy.update(c["where"] for c in state.get("clusters") or [])
            continue  # its own teardown will run
        for entry in state.get("clusters") or []:
            destroy(entry)
            removed.append(f"{state.get('id')}: {entry['role']} {entry['provider']} {entry['where']}")
        shutil.rmtree(marker.parent / "source" / "keys", ignore_errors=True)
        shutil.rmtree(marker.parent / "snapshots", ignore_errors=True)
        if state.get("clusters") or state.get("status") != "finished":
            state.update(clusters=[], status="cleaned")
            files.write_atomic(marker, json.dumps(state, indent=2).encode())
    if shutil.which("kind"):
        for name in providers.kind_clusters(prefix="dr-drill-"):
            if name not in busy and not any(name in r for r in removed):
                providers.delete_kind(name)
                removed.append(f"kind cluster {name} (by name)")
    return removed
