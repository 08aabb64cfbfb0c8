"""The snapshot commands' use cases: save (with metrics and optional prune), list, verify, prune.

Configuration decides the store, the cluster name, Vault auth and the
retention policy; flags have already been folded into it by the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dr import config as config_mod
from dr import errors, logs
from dr.adapters import metrics, stores
from dr.ops import vault as vault_ops
from dr.snapshots import catalogue, retention, save

log = logs.get("dr.snapshot")


def open_catalogue(config: config_mod.Config, *, read_only: bool = False) -> catalogue.Catalogue:
    settings = config.snapshots
    store = stores.open_store(
        settings.store,
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
        s3_options=stores.S3Options(
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
            object_lock_days=settings.s3_object_lock_days,
            object_lock_mode=settings.s3_object_lock_mode,
        ),
        read_only=read_only,
    )
    return catalogue.Catalogue(store, config.cluster.name)


def policy(config: config_mod.Config, **overrides: int | None) -> retention.Policy:
    s = config.snapshots
    values = {
        "keep_last": s.keep_last,
        "keep_daily": s.keep_daily,
        "keep_weekly": s.keep_weekly,
        "keep_monthly": s.keep_monthly,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return retention.Policy(**values, min_age=timedelta(seconds=s.min_age))


def save_now(
    config: config_mod.Config, *, env: Mapping[str, str] | None = None, prune_after: bool = False
) -> tuple[save.Saved, PruneResult | None]:
    """Authenticate, save, record metrics either way, then prune if asked."""
    settings = config.snapshots
    labels = {"cluster": config.cluster.name}
    attempt = time.time()
    try:
        token = vault_ops.authenticate(config, env=env)
        cat = open_catalogue(config)
        saved = save.save(cat, vault_ops.cluster(config, token=token, env=env))
    except errors.DRError:
        if settings.metrics_textfile or settings.pushgateway:
            metrics.record(
                {"attempt_timestamp_seconds": attempt},
                labels=labels,
                ok=False,
                textfile=settings.metrics_textfile,
                pushgateway=settings.pushgateway,
            )
        raise
    if settings.metrics_textfile or settings.pushgateway:
        metrics.record(
            {
                "attempt_timestamp_seconds": attempt,
                "success_timestamp_seconds": time.time(),
                "duration_seconds": saved.duration_s,
                "size_bytes": float(saved.manifest.size),
            },
            labels=labels,
            ok=True,
            textfile=settings.metrics_textfile,
            pushgateway=settings.pushgateway,
        )
    pruned = prune(cat, policy(config), dry_run=False) if prune_after else None
    return saved, pruned


@dataclass
class PruneResult:
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, list[str]] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # Due for removal but under Object Lock: id or orphan key -> retained until (ISO).
    locked: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


def prune(
    cat: catalogue.Catalogue, rules: retention.Policy, *, dry_run: bool, now: datetime | None = None
) -> PruneResult:
    """Apply the retention policy; orphans older than the minimum age go too. Deletion errors are reported."""
    moment = now or datetime.now(UTC)
    entries, orphans, _ = cat.scan()
    decision = retention.decide(
        [retention.Item(e.manifest.id, e.manifest.created, e.good) for e in entries], rules, moment
    )
    result = PruneResult(kept=decision.keep, dry_run=dry_run)
    old_orphans = [o for o in orphans if moment - o.modified >= rules.min_age]
    targets = [(i, cat.locked_until, cat.delete, result.deleted) for i in decision.delete] + [
        (o.key, cat.store.locked_until, cat.store.delete, result.orphans) for o in old_orphans
    ]
    # What Object Lock retains is kept and reported with its date, in a dry run too, and is not a failure:
    # the store is doing what it was set up to do.
    for key, locked_until, delete, done in targets:
        try:
            # A dry run asks; a real run lets delete refuse (it checks the retention of every object first).
            until = locked_until(key) if dry_run else None
            if not dry_run:
                delete(key)
        except errors.ObjectLocked as exc:
            until = exc.until
        except errors.DRError as exc:  # keep going, say which and why
            result.failed[key] = str(exc)
            continue
        if until is None:
            done.append(key)
        else:
            result.locked[key] = until.isoformat()
    log.info(
        "snapshot_pruned",
        deleted=result.deleted,
        orphans=result.orphans,
        locked=result.locked,
        dry_run=dry_run,
        failed=list(result.failed),
    )
    return result


def verify_now(
    config: config_mod.Config, snapshot_id: str, *, restore_test: bool = False, env: Mapping[str, str] | None = None
) -> tuple[catalogue.Entry, catalogue.Verification]:
    from dr.snapshots import verify  # brings the local OpenBao launcher: only this command needs it

    cat = open_catalogue(config)
    entry = cat.get(snapshot_id)
    tester = None
    if restore_test:
        tester = verify.restore_tester(
            vault_ops.key_source(config, env=env),
            shares=config.vault.shares,
            threshold=config.vault.threshold,
            canary_path=config.snapshots.canary_path,
        )
    return entry, verify.verify(cat, entry, restore_test=tester)
