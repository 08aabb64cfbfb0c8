"""`dr doctor`: would a recovery (or the nightly snapshot) start here? Each thing it needs, checked before it runs.

A recovery that finds a missing permission at step four has already built a cluster and spent ten minutes;
the operator at 3 a.m. wants the wrong context, the missing verb, the unreadable key file and the empty store
named before the first step, each with what to fix. The checks only read: nothing is created, no share is
submitted, no lock is taken. `dr recover` runs the recovery checks first (`--skip-preflight` to go without).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from dr import config as config_mod
from dr import errors
from dr.adapters import kube, providers, vault
from dr.ops import lease
from dr.ops import vault as ops_vault
from dr.recovery import platform, recover
from dr.snapshots import catalogue, service
from dr.snapshots import verify as verify_mod

RUNBOOK: Final = "runbooks/doctor.md"
Status = Literal["ok", "warn", "fail", "skip"]
Purpose = Literal["recover", "snapshot"]


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table: what was checked, how it stands, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    runbook: str = ""
    exit_code: int = errors.EXIT_FAILED  # of the error behind a failure: 2 when it is a configuration mistake


@dataclass
class Report:
    purpose: Purpose
    checks: list[Check] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """True when nothing failed: a warning is worth reading, not worth stopping for."""
        return all(c.status != "fail" for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "ready": self.ready, "checks": [asdict(c) for c in self.checks]}


# What the recovery steps do to the cluster, as (verb, resource, group, namespace): a SelfSubjectAccessReview
# each. Argo CD's own ClusterRoles grant everything, so installing them takes `escalate` and `bind` (or
# holding every permission, as cluster-admin does).
_ARGO, _VAULT = platform.ARGO_NS, "vault"
PERMISSIONS: Final[dict[str, list[tuple[str, str, str, str | None]]]] = {
    "cluster": [("list", "nodes", "", None), ("create", "leases", "coordination.k8s.io", lease.NAMESPACE)],
    "root-app": [
        ("create", "namespaces", "", None),
        ("patch", "customresourcedefinitions", "apiextensions.k8s.io", None),
        ("escalate", "clusterroles", "rbac.authorization.k8s.io", None),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", None),
        ("patch", "deployments", "apps", _ARGO),
        ("patch", "applications", "argoproj.io", _ARGO),
    ],
    "argo-sync": [("watch", "applications", "argoproj.io", _ARGO)],
    "vault-unseal": [
        ("list", "pods", "", _VAULT),
        ("create", "pods/portforward", "", _VAULT),
        ("delete", "pods", "", _VAULT),
        ("patch", "cronjobs", "batch", None),
    ],
    "eso-sync": [
        ("patch", "externalsecrets", "external-secrets.io", None),
        ("patch", "clustersecretstores", "external-secrets.io", None),
        ("list", "events", "", None),
    ],
    "app-health": [("list", "deployments", "apps", None), ("list", "statefulsets", "apps", None)],
}


@contextlib.contextmanager
def _checking(report: Report, name: str, on_error: Status = "fail") -> Iterator[Callable[..., None]]:
    """Run one check; a `DRError` on the way is that check's verdict, with the error's own hint and runbook."""
    recorded: list[Check] = []

    def record(status: Status, detail: str, fix: str = "", runbook: str = "") -> None:
        recorded.append(Check(name, status, detail, fix, runbook))

    try:
        yield record
    except errors.DRError as exc:
        recorded[:] = [Check(name, on_error, exc.message, exc.hint, exc.runbook, exc.exit_code)]
    report.checks.extend(recorded)


def diagnose(
    config: config_mod.Config,
    *,
    purpose: Purpose = "recover",
    cluster: recover.ClusterMode = "new",
    provider: str | None = None,
    snapshot: str | None = None,
    force: bool = False,
    read_snapshot: bool = True,
) -> Report:
    """Every check for `purpose`; never raises a `DRError` for what it finds (bad config still raises, exit 2).

    `read_snapshot`: read the chosen snapshot's bytes against its checksum (`dr doctor`), or only its manifest
    (the preflight of `dr recover`, whose snapshot step reads the bytes while the cluster is built).
    """
    report = Report(purpose)
    if purpose == "snapshot":
        _snapshot_vault(report, config)
        _store(report, config, None, read_snapshot=False)
        return report
    chosen = recover.run_params(config, cluster, provider)["provider"]
    api = _cluster(report, config, chosen)
    if api is not None and _permissions(report, api):
        _target_vault(report, config, api, force)
    elif api is not None:
        report.checks.append(Check("vault", "skip", "not checked without the permissions above"))
    else:
        why = "no cluster to ask" if chosen == "kubeconfig" else f"the run creates the cluster (provider {chosen})"
        report.checks += [Check("permissions", "skip", why), Check("vault", "skip", why)]
    _keys(report, config)
    _store(report, config, snapshot, read_snapshot=read_snapshot)
    return report


# -- the cluster --------------------------------------------------------------------------------------


def _cluster(report: Report, config: config_mod.Config, chosen: str) -> kube.Kube | None:
    settings = config.cluster
    if chosen != "kubeconfig":
        host = providers.K3sHost(
            settings.k3s_host, settings.ssh_user, settings.ssh_key, settings.k3s_version, settings.k3s_airgap_dir
        )
        with _checking(report, "provider") as record:
            record("ok", providers.ready(chosen, host))
        return None
    made: providers.Cluster | None = None
    with _checking(report, "kubeconfig") as record:
        found = providers.existing(settings.kubeconfig, settings.context)
        server = kube.client_configuration(found.kubeconfig, found.context).host
        record("ok", f"{found.kubeconfig}, context {found.context or '(current)'}: server {server}")
        made = found
    if made is None:
        report.checks.append(Check("api", "skip", "no usable kubeconfig"))
        return None
    with _checking(report, "api") as record:
        api = kube.Kube(made.kubeconfig, made.context)
        record("ok", f"{api.server} answers: Kubernetes {api.version()}")
        return api
    return None  # the check failed, and says why


def _permissions(report: Report, api: kube.Kube) -> bool:
    """Whether every permission is granted."""
    with _checking(report, "permissions") as record:
        missing = [
            f"{verb} {resource}{'.' + group if group else ''}{' in ' + ns if ns else ''} ({step})"
            for step, needs in PERMISSIONS.items()
            for verb, resource, group, ns in needs
            if not api.can_i(verb, resource, group=group, namespace=ns)
        ]
        total = sum(len(n) for n in PERMISSIONS.values())
        if missing:
            record(
                "fail",
                f"{len(missing)} of {total} permissions the steps use are denied: " + "; ".join(missing),
                "use a kubeconfig with cluster-admin (a recovery installs CRDs and ClusterRoles), or grant these",
                RUNBOOK,
            )
        else:
            record("ok", f"all {total} permissions the steps use are granted (SelfSubjectAccessReview)")
    return report.checks[-1].status == "ok"


def _target_vault(report: Report, config: config_mod.Config, api: kube.Kube, force: bool) -> None:
    """The Vault already on the target, if any: a recovery restores into an empty one (or, --force, over one)."""
    settings = config.platform
    with _checking(report, "vault") as record:
        pods = api.objects("v1", "Pod", settings.vault_namespace, labels=settings.vault_selector)
        if not pods:
            record("ok", f"no Vault pods in {settings.vault_namespace} yet: argo-sync deploys them")
            return
        addresses = [api.pod_address(p, settings.vault_port) for p in pods]
        states = vault.VaultCluster(addresses).states()
        unreachable = [f"{s.address} ({s.error})" for s in states if s.seal is None]
        initialised = [s for s in states if s.seal is not None and s.seal.initialized]
        if unreachable:
            record("fail", "Vault pods do not answer: " + "; ".join(unreachable), "see the pods' logs", RUNBOOK)
        elif not initialised:
            record("ok", f"{len(states)} Vault pod(s), empty (not initialised): ready for the restore")
        else:
            seal = initialised[0].seal
            assert seal is not None
            found = f"{len(initialised)} of {len(states)} Vault pod(s) initialised ({seal.threshold} of {seal.shares})"
            if force:
                record("warn", found + ": --force restores the snapshot over their data", "", RUNBOOK)
            else:
                record(
                    "fail",
                    found + ": the target's Vault may hold data, and vault-unseal stops there",
                    "recover into a cluster whose Vault is empty, or pass --force to replace its data",
                    "runbooks/vault-unseal.md",
                )


# -- keys and snapshots ---------------------------------------------------------------------------------


def _keys(report: Report, config: config_mod.Config) -> None:
    threshold = config.vault.threshold
    with _checking(report, "keys") as record:
        source = config.keys.source
        if source in ("prompt", "stdin"):
            record("ok", f"source {source}: the {threshold} shares are asked for at vault-unseal, not now")
            return
        keysource = ops_vault.key_source(config)
        shares, token = keysource.shares(), keysource.token()
        if len(shares) < threshold:
            record(
                "fail",
                f"source {source} holds {len(shares)} share(s); the threshold is {threshold}",
                "give the key source at least the threshold of the ORIGINAL cluster's shares",
                "runbooks/vault-unseal.md",
            )
            return
        note = "" if token else "; no DR token: the restored Vault is checked by this run's word only"
        record("ok" if token else "warn", f"source {source}: {len(shares)} share(s), threshold {threshold}{note}")


def _store(report: Report, config: config_mod.Config, snapshot: str | None, *, read_snapshot: bool) -> None:
    with _checking(report, "store") as record:
        cat = service.open_catalogue(config, read_only=True)
        entries = cat.entries()
        if report.purpose == "snapshot":  # the job only writes: an empty store is a first night
            newest = f", newest {entries[0].manifest.id}" if entries else ""
            record("ok", f"{cat.store.url} answers: {len(entries)} snapshot(s) of {config.cluster.name}{newest}")
            return
        if snapshot is None and not entries:
            where = catalogue.elsewhere(cat.other_clusters()) or "point snapshots.store and cluster.name at them"
            record("fail", f"{cat.store.url} holds no snapshot of cluster {config.cluster.name}", where, RUNBOOK)
            return
        entry = cat.get(snapshot or "latest")
        manifest = entry.manifest
        if read_snapshot:
            verify_mod.check(cat, entry)
            how = f"bytes match its sha256 ({manifest.size} bytes)"
        else:
            how = "its manifest is there (the snapshot step checks the bytes)"
        record("ok", f"{cat.store.url}: snapshot {manifest.id} ({entry.state}); {how}")


def _snapshot_vault(report: Report, config: config_mod.Config) -> None:
    """The Vault the nightly job reads: every node reachable, initialised, unsealed, one active; a token."""
    with _checking(report, "vault") as record:
        addresses = config_mod.vault_addresses(config)
        if not addresses:
            record("fail", "no Vault address", "set vault.addresses, or BAO_ADDR / VAULT_ADDR", RUNBOOK)
            return
        health = ops_vault.cluster(config).health(with_token=False)
        if not health.healthy:
            sealed = any(n.role == "sealed" for n in health.nodes)
            fix = "unseal it: `dr vault unseal --all`" if sealed else "see `dr vault status`"
            record("fail", "; ".join(health.problems), fix, "runbooks/vault-unseal.md")
            return
        record("ok", f"{len(health.nodes)} node(s) unsealed, active {health.active}")
    with _checking(report, "auth") as record:
        token = ops_vault.authenticate(config)
        node = ops_vault.cluster(config, token=token).active()
        info = node.lookup_self()
        record("ok", f"vault.auth.method {config.vault.auth.method}: a token with policies {info.get('policies')}")
