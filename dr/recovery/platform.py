"""The step bodies that build a platform on a cluster: six of the seven, shared by bootstrap and recovery.

Each step keeps to the engine's contract: `check` is cheap and changes
nothing (a rerun or a resume skips what holds), `run` is safe to repeat after
a crash at any line, and `verify` proves the end state. What later steps need
(the kubeconfig, the Vault pod addresses) goes to the checkpoint as outputs;
secrets never do: the new Vault's shares and root token go to the key sink
the moment `sys/init` returns them, and are read back from it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, Final

import click

from dr import config as config_mod
from dr import errors, secret, waiting
from dr.adapters import keys, kube, providers, sandbox_process, vault
from dr.engine import runner, step
from dr.ops import lease
from dr.ops import vault as ops_vault
from dr.recovery import vaultconfig

APP: Final = ("argoproj.io/v1alpha1", "Application")
ES: Final = ("external-secrets.io/v1", "ExternalSecret")
CSS: Final = ("external-secrets.io/v1", "ClusterSecretStore")
STORE: Final = ("external-secrets.io/v1", "SecretStore")
ESO_PODS: Final = "app.kubernetes.io/name=external-secrets"  # the chart's controller pods
ARGO_NS: Final = "argocd"
WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet")


def config_of(ctx: step.StepContext) -> config_mod.Config:
    assert isinstance(ctx.config, config_mod.Config)
    return ctx.config


def _repo(ctx: step.StepContext) -> Path:
    return config_of(ctx).platform.repo


_clients: dict[tuple[str, str | None, tuple[int, ...]], kube.Kube] = {}


def _client(kubeconfig: Path, context: str | None) -> kube.Kube:
    """One client per kubeconfig for the process: discovery once, and its port-forwards live with it.

    A rewritten kubeconfig (a cluster made again at the same path) gets a new client.
    """
    stamp = tuple(p.stat().st_mtime_ns for p in providers.kubeconfig_files(kubeconfig))
    key = (str(kubeconfig), context, stamp)
    if key not in _clients:
        _clients[key] = kube.Kube(kubeconfig, context)
    return _clients[key]


def cluster_of(ctx: step.StepContext) -> kube.Kube:
    """The run's cluster client, holding the run's Lease in that cluster."""
    out = ctx.outputs_of("cluster")
    if not out.get("kubeconfig"):
        raise errors.PermanentError("the cluster step has not recorded a kubeconfig", hint="resume the run")
    api = _client(Path(out["kubeconfig"]), out.get("context"))
    # Whatever step first reaches the cluster takes the run's Lease there, held until the run ends.
    holder = lease.Holder(ctx.run_id, runner.operator_identity(), ctx.plan or "recover")
    ctx.hold("lease", lambda: lease.held(lease.Lease(api, holder)))
    return api


def state_dir(ctx: step.StepContext) -> Path:
    return config_of(ctx).state_dir


def key_sink(ctx: step.StepContext) -> keys.KeySink:
    settings = config_of(ctx).keys
    if settings.sink == "aws-secretsmanager":
        assert settings.aws_secret_id is not None  # checked by the config model
        return keys.SecretsManagerSink(settings.aws_secret_id, settings.aws_region, settings.aws_endpoint_url)
    if settings.sink == "print":
        return keys.PrintSink(lambda line: click.echo(line, err=True))
    return keys.FileSink(state_dir(ctx) / "keys")


def until_none_pending(
    ctx: step.StepContext,
    pending: Callable[[], list[str]],
    *,
    what: str,
    hint: str | None = None,
    wake_on: tuple[kube.Kube, str, str] | None = None,
) -> list[str]:
    """Wait until `pending()` is empty, showing what is still pending; returns the last list seen."""
    last: list[str] = []

    def probe() -> bool | waiting.Pending:
        last[:] = pending()
        return True if not last else waiting.Pending(f"{len(last)} pending: " + "; ".join(last))

    try:
        sleep = None
        if wake_on is not None:
            api, api_version, kind = wake_on
            sleep = lambda seconds: api.sleep_on_watch(api_version, kind, None, seconds)  # noqa: E731
        ctx.wait_until(probe, what=what, interval=1.0, max_interval=3.0, sleep=sleep)
    except errors.DeadlineExceeded as exc:
        raise errors.DeadlineExceeded(
            f"step {ctx.step} timed out waiting for {what}; still pending: " + "; ".join(last),
            hint=hint or "fix the cause named for each, then resume the run",
            runbook=f"runbooks/{ctx.step}.md",
        ) from exc
    return last


def _ready(obj: dict[str, Any], kind: str = "Ready") -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


# -- cluster -----------------------------------------------------------------------------------


class Cluster(step.Step):
    name = "cluster"
    summary = "provision a fresh cluster (provider sandbox, kind, k3s) or take an existing kubeconfig"
    end_state = "the Kubernetes API answers through the run's kubeconfig and every node is Ready"
    default_timeout = 900.0

    def _known(self, ctx: step.StepContext) -> tuple[Path, str | None, str] | None:
        """The cluster this run (or an earlier one on this state dir) made, if its kubeconfig is there."""
        out = ctx.outputs_of("cluster")
        if out.get("kubeconfig"):
            return Path(out["kubeconfig"]), out.get("context"), str(out.get("provider"))
        settings = config_of(ctx).cluster
        provider = str(ctx.params.get("provider") or settings.provider)
        work = state_dir(ctx) / "clusters"
        if provider == "sandbox":
            info = sandbox_process.status(state_dir(ctx) / "sandbox")
            return (info.kubeconfig, None, provider) if info.healthy and info.kubeconfig else None
        if provider == "kind":
            return work / f"kind-{settings.name}.kubeconfig", f"kind-{settings.name}", provider
        if provider == "k3s":
            return work / "k3s.kubeconfig", None, provider
        return (settings.kubeconfig, settings.context, provider) if settings.kubeconfig else None

    def check(self, ctx: step.StepContext) -> bool:
        known = self._known(ctx)
        if known is None or not providers.kubeconfig_files(known[0]):
            return False
        try:
            ready = self._nodes_ready(_client(known[0], known[1]))
        except errors.DRError:
            return False
        if ready:
            self._record(ctx, providers.Cluster(known[2], known[0], known[1]))
            self._version(ctx, cluster_of(ctx))  # cluster_of: the run's Lease, from the moment the cluster answers
        return ready

    @staticmethod
    def _version(ctx: step.StepContext, api: kube.Kube) -> None:
        """The Kubernetes version, for the run's report; not knowing it fails nothing."""
        with contextlib.suppress(errors.DRError):
            ctx.set_output("kubernetes_version", api.version())

    @staticmethod
    def _record(ctx: step.StepContext, made: providers.Cluster) -> None:
        ctx.set_output("kubeconfig", str(made.kubeconfig))
        ctx.set_output("context", made.context)
        ctx.set_output("provider", made.provider)

    @staticmethod
    def _nodes_ready(api: kube.Kube) -> bool:
        nodes = api.objects("v1", "Node")
        return bool(nodes) and all(_ready(n) for n in nodes)

    def run(self, ctx: step.StepContext) -> None:
        settings = config_of(ctx).cluster
        provider = str(ctx.params.get("provider") or settings.provider)
        work = state_dir(ctx) / "clusters"
        # Provisioning is the platform's time (a process, kind or the K3s installer starting), not dr's.
        with ctx.platform_wait():
            if provider == "sandbox":
                # The sandbox's Argo CD reads the configured platform repo for the root app's repoURL.
                url = RootApp.root(ctx)["spec"]["source"]["repoURL"]
                made = providers.sandbox(state_dir(ctx), repos={url: str(_repo(ctx))})
            elif provider == "kind":
                made = providers.kind(settings.name, work, node_image=settings.kind_node_image, run_id=ctx.run_id)
            elif provider == "k3s":
                host = providers.K3sHost(
                    settings.k3s_host,
                    settings.ssh_user,
                    settings.ssh_key,
                    settings.k3s_version,
                    settings.k3s_airgap_dir,
                )
                made = providers.k3s(host, work)
            else:
                made = providers.existing(settings.kubeconfig, settings.context)
        self._record(ctx, made)
        api = _client(made.kubeconfig, made.context)
        ctx.wait_until(lambda: self._nodes_ready(api) or None, what="every node to be Ready", interval=1.0)
        self._version(ctx, cluster_of(ctx))


# -- root app ------------------------------------------------------------------------------------


class RootApp(step.Step):
    name = "root-app"
    requires = ("cluster",)
    summary = "install Argo CD from pinned manifests and apply the root Application"
    end_state = "Argo CD CRDs Established, its controller ready, the root Application exists"
    default_timeout = 600.0

    @staticmethod
    def root(ctx: step.StepContext) -> dict[str, Any]:
        """The root Application, from `platform.root_app` in the platform repo."""
        platform = config_of(ctx).platform
        docs = kube.load_manifests(platform.root_app, base=platform.repo)
        apps = [d for d in docs if d["kind"] == "Application" and d["apiVersion"].startswith("argoproj.io/")]
        if len(apps) != 1 or not (apps[0].get("metadata") or {}).get("name"):
            kinds = ", ".join(f"{d['apiVersion']} {d['kind']}" for d in docs) or "nothing"
            raise errors.ConfigError(
                f"{platform.repo / platform.root_app}: the root app file must hold exactly one named Argo CD"
                f" Application (argoproj.io/v1alpha1), not {kinds}",
                hint="point platform.root_app at the app-of-apps Application of the platform repo",
                runbook="runbooks/root-app.md",
            )
        return apps[0]

    def check(self, ctx: step.StepContext) -> bool:
        api = cluster_of(ctx)
        root = self.root(ctx)
        return _argo_ready(api) and api.get(*APP, root["metadata"]["name"], ARGO_NS) is not None

    def run(self, ctx: step.StepContext) -> None:
        api = cluster_of(ctx)
        platform = config_of(ctx).platform
        docs = kube.load_manifests(platform.argocd, base=platform.repo, sha256=platform.argocd_sha256)
        applied = api.apply(docs, deadline=ctx.deadline)
        ctx.log.info("argocd_applied", objects=len(applied))
        ctx.wait_until(lambda: _argo_ready(api) or None, what="Argo CD's controller and server to be ready")
        root = self.root(ctx)
        api.apply_one(root)
        api.patch(
            *APP,
            root["metadata"]["name"],
            {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}},
            ARGO_NS,
        )


def _argo_ready(api: kube.Kube) -> bool:
    sts = api.get("apps/v1", "StatefulSet", "argocd-application-controller", ARGO_NS)
    server = api.get("apps/v1", "Deployment", "argocd-server", ARGO_NS)
    return bool(
        sts
        and server
        and int((sts.get("status") or {}).get("readyReplicas") or 0) >= 1
        and int((server.get("status") or {}).get("availableReplicas") or 0) >= 1
    )


# -- argo sync -------------------------------------------------------------------------------------


def app_tree(api: kube.Kube, root: str) -> dict[str, dict[str, Any] | None]:
    """Every Application reachable from the root through `status.resources` (None: listed but not there yet)."""
    apps = {a["metadata"]["name"]: a for a in api.objects(*APP, ARGO_NS)}
    tree: dict[str, dict[str, Any] | None] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in tree:
            continue
        app = apps.get(name)
        tree[name] = app
        for row in ((app or {}).get("status") or {}).get("resources") or []:
            if row.get("kind") == "Application":
                todo.append(row["name"])
    return tree


def _app_state(app: dict[str, Any] | None) -> tuple[str, str, str]:
    """(sync, health, Argo's own words on why) for one Application."""
    if app is None:
        return "Missing", "Missing", "not created yet by its parent"
    status = app.get("status") or {}
    sync, health = (
        (status.get("sync") or {}).get("status", "Unknown"),
        (status.get("health") or {}).get("status", "Unknown"),
    )
    reasons = [c.get("message", "") for c in status.get("conditions") or []]
    op = status.get("operationState") or {}
    if op.get("phase") not in (None, "Succeeded") and op.get("message"):
        reasons.append(f"sync {op['phase']}: {op['message']}")
    for row in status.get("resources") or []:
        row_health = row.get("health") or {}
        if row_health.get("status") not in (None, "Healthy"):
            words = f": {row_health['message']}" if row_health.get("message") else ""
            reasons.append(f"{row['kind']} {row.get('namespace', '')}/{row['name']} {row_health['status']}{words}")
    return str(sync), str(health), "; ".join(r for r in reasons if r)


def _tree_pending(api: kube.Kube, root: str, may_wait: set[str]) -> list[str]:
    pending = []
    for name, app in sorted(app_tree(api, root).items()):
        sync, health, why = _app_state(app)
        ok = sync == "Synced" and (health == "Healthy" or (name in may_wait and health in ("Progressing", "Degraded")))
        if not ok:
            pending.append(f"{name}: {sync}/{health}" + (f" ({why})" if why else ""))
    return pending


class ArgoSync(step.Step):
    name = "argo-sync"
    requires = ("root-app",)
    summary = "wait for the whole app-of-apps tree to sync"
    end_state = "every Application Synced; Healthy except those that wait for Vault"
    default_timeout = 1200.0
    strict = False  # app-health reuses this with no Application excused

    def _may_wait(self, ctx: step.StepContext) -> set[str]:
        return set() if self.strict else set(config_of(ctx).platform.waits_for_vault)

    def _root_name(self, ctx: step.StepContext) -> str:
        return str(RootApp.root(ctx)["metadata"]["name"])

    def check(self, ctx: step.StepContext) -> bool:
        return not _tree_pending(cluster_of(ctx), self._root_name(ctx), self._may_wait(ctx))

    def run(self, ctx: step.StepContext) -> None:
        api, root, may_wait = cluster_of(ctx), self._root_name(ctx), self._may_wait(ctx)
        until_none_pending(
            ctx,
            lambda: _tree_pending(api, root, may_wait),
            what="every Application to be Synced and Healthy",
            hint="see them with `kubectl -n argocd get applications`; fix each named reason, then resume",
            wake_on=(api, *APP),
        )


# -- vault (bootstrap: a new, empty Vault) ----------------------------------------------------------


def vault_pods(ctx: step.StepContext, api: kube.Kube) -> list[dict[str, Any]]:
    platform = config_of(ctx).platform
    pods = api.objects("v1", "Pod", platform.vault_namespace, labels=platform.vault_selector)
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def vault_addresses(ctx: step.StepContext, api: kube.Kube) -> list[str]:
    port = config_of(ctx).platform.vault_port
    return [api.pod_address(p, port) for p in vault_pods(ctx, api)]


def kubernetes_auth(ctx: step.StepContext, api: kube.Kube) -> dict[str, Any]:
    """Kubernetes auth as the Vault pods must reach this cluster's API: directly for the sandbox (its pods run
    on the host), through `kubernetes.default.svc` with the pod's own CA and token in a real cluster."""
    if ctx.outputs_of("cluster").get("provider") == "sandbox":
        return {"kubernetes_host": api.server, "kubernetes_ca_cert": api.ca_pem or "", "disable_local_ca_jwt": True}
    return {"kubernetes_host": "https://kubernetes.default.svc:443", "disable_local_ca_jwt": False}


class VaultBootstrap(step.Step):
    name = "vault-unseal"
    requires = ("argo-sync",)
    summary = "initialise the new Vault, hand its keys to the key sink, unseal every pod, configure it for the platform"
    end_state = (
        "every Vault pod initialised, unsealed and a Raft voter; autopilot healthy;"
        " the platform's mounts, policies and auth in place"
    )
    default_timeout = 600.0

    def _token(self, ctx: step.StepContext) -> secret.Secret | None:
        """The root token from the sink; with a sink dr cannot read (printed, encrypted), BAO_TOKEN/VAULT_TOKEN."""
        source = key_sink(ctx).source()
        return (source.token() if source is not None else None) or ops_vault.env_token()

    def check(self, ctx: step.StepContext) -> bool:
        api = cluster_of(ctx)
        addresses = vault_addresses(ctx, api)
        if not addresses:
            return False
        token = self._token(ctx)
        if token is None:
            return False
        cluster = vault.VaultCluster(addresses, token=token)
        try:
            if not cluster.health(with_token=True).healthy:
                return False
            spec = vaultconfig.load(_repo(ctx) / config_of(ctx).platform.vault_config)
            active = cluster.active()
            mounts, auths = active.mounted("mounts"), active.mounted("auth")
        except errors.DRError:
            return False
        wanted_auth = {spec.kubernetes_auth.mount} if spec.kubernetes_auth else set()
        ctx.set_output("addresses", addresses)
        return {kv.path.strip("/") for kv in spec.kv} <= mounts and wanted_auth <= auths

    def run(self, ctx: step.StepContext) -> None:
        api = cluster_of(ctx)
        settings = config_of(ctx)
        addresses = await_vault_pods(ctx, api)
        ctx.set_output("addresses", addresses)
        first = vault.VaultNode(addresses[0])
        sink = key_sink(ctx)
        if not first.seal_status().initialized:
            pgp = [Path(p).read_text() for p in settings.keys.pgp_keys] or None
            root_pgp = settings.keys.root_token_pgp_key.read_text() if settings.keys.root_token_pgp_key else None
            with ctx.platform_wait():  # Vault generating and encrypting its keys
                result = first.init(
                    settings.vault.shares, settings.vault.threshold, pgp_keys=pgp, root_token_pgp_key=root_pgp
                )
            where = sink.save(result.shares, result.root_token, encrypted=result.pgp_encrypted)
            ctx.log.info("vault_keys_saved", sink=sink.description, where=where)
        source = sink.source()
        token = self._token(ctx)
        if token is None:
            raise errors.PermanentError(
                f"Vault is initialised but neither the key sink ({sink.description}) nor BAO_TOKEN/VAULT_TOKEN gives"
                " this run its root token: was it initialised by another run, did a run crash between init and"
                " saving the keys, or are the keys printed (encrypted) for custodians?",
                hint="with printed keys: custodians unseal (`dr vault unseal --all`), export VAULT_TOKEN with the"
                " decrypted root token, then resume; if nobody holds the keys, delete the Vault PVCs and pods so"
                " that it starts empty, then resume",
                runbook=self.runbook,
            )
        shares = source.shares() if source is not None else []
        cluster = vault.VaultCluster(addresses, token=token)
        if shares:
            with ctx.platform_wait():
                cluster.unseal_all(shares[: settings.vault.threshold])
        elif any(state.role == "sealed" for state in cluster.states()):
            raise errors.PermanentError(
                f"Vault is sealed and the key sink ({sink.description}) gives this run no shares it can use",
                hint="custodians decrypt their shares and run `dr vault unseal --all`; then resume",
                runbook=self.runbook,
            )
        ctx.check_stop()
        with ctx.platform_wait():
            cluster.await_healthy(timeout=ctx.remaining())
        spec = vaultconfig.load(_repo(ctx) / settings.platform.vault_config)
        changed = vaultconfig.apply(cluster.active(), spec, kubernetes_auth(ctx, api))
        ctx.log.info("vault_configured", changed=changed)


def await_vault_pods(ctx: step.StepContext, api: kube.Kube) -> list[str]:
    """The Vault pods' addresses, once every one of them answers (sealed or not)."""
    found: list[str] = ctx.wait_until(
        lambda: ((a := vault_addresses(ctx, api)) and all(answers(x) for x in a) and a) or None,
        what="the Vault pods to answer",
    )
    return found


def answers(address: str) -> bool:
    try:
        vault.VaultNode(address).health_code()
        return True
    except errors.DRError:
        return False


# -- ESO ------------------------------------------------------------------------------------------


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Nudge:
    """ESO's `force-sync` annotation, put on what is not Ready yet, again every `every` seconds while it is not.

    ESO reconciles a store or an ExternalSecret at once when its metadata changes; left alone it retries a
    failure on its own back-off, which doubles up to many minutes (and a store that failed validates again
    only then: until it does, ESO syncs none of its ExternalSecrets). After a restore or a late Vault that
    back-off, not Vault, would set the recovery time.
    """

    def __init__(self, api: kube.Kube, every: float = 10.0) -> None:
        self.api, self.every = api, every
        self.last: dict[str, float] = {}

    def __call__(self, kind: tuple[str, str], objs: list[dict[str, Any]]) -> None:
        now, stamp = time.monotonic(), str(time.time_ns())
        due = [o for o in objs if now - self.last.get(o["metadata"]["uid"], -self.every) >= self.every]

        def force(obj: dict[str, Any]) -> None:
            meta = obj["metadata"]
            patch = {"metadata": {"annotations": {"force-sync": stamp}}}
            self.api.patch(*kind, meta["name"], patch, meta.get("namespace"))
            self.last[meta["uid"]] = now

        # One patch per object is unavoidable; eight in flight keep hundreds of them to a second or two.
        with futures.ThreadPoolExecutor(8, thread_name_prefix="dr-force-sync") as pool:
            list(pool.map(force, due))


def _why(obj: dict[str, Any]) -> str:
    """The object's Ready condition's message, as ESO wrote it, cut to its first line."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    message = next((str(c.get("message") or "") for c in conditions if c.get("type") == "Ready"), "")
    first = " ".join(message.split())[:300]
    return f" ({first})" if first else " (no status from ESO yet)"


def _warnings(api: kube.Kube) -> dict[str, str]:
    """The latest Warning event per object uid: where ESO puts the provider's own error (a 403 from Vault, a
    name that does not resolve, a missing path), while the condition says only "unable to create client" or
    "could not get secret data from provider". One list for all of them, however many are pending."""
    latest: dict[str, tuple[str, str]] = {}
    for event in api.objects("v1", "Event", fields="type=Warning"):
        uid = str((event.get("involvedObject") or {}).get("uid") or "")
        when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
        if uid and when >= latest.get(uid, ("", ""))[0]:
            latest[uid] = (when, " ".join(str(event.get("message") or "").split())[:300])
    return {uid: f"; last event: {message}" for uid, (_, message) in latest.items()}


class EsoSync(step.Step):
    name = "eso-sync"
    requires = ("vault-unseal",)
    summary = "make ESO validate every secret store and sync every ExternalSecret now; check each Secret against Vault"
    end_state = "every secret store Ready, every ExternalSecret Ready, every target Secret present and equal to Vault"
    default_timeout = 600.0

    def _stores(self, api: kube.Kube) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        found = [(CSS, s) for s in api.objects(*CSS)]
        with contextlib.suppress(errors.DRError):  # SecretStores are optional; the CRD always comes with ESO
            found += [(STORE, s) for s in api.objects(*STORE)]
        return found

    def _operator(self, api: kube.Kube) -> list[str]:
        """What is wrong with ESO's own pods, as the API reports them (none Ready, a crash loop, restarts)."""
        pods = api.objects("v1", "Pod", labels=ESO_PODS)
        if not pods:
            return ["no External Secrets Operator pod (label app.kubernetes.io/name=external-secrets) exists"]
        problems = []
        for pod in pods:
            meta, status = pod["metadata"], pod.get("status") or {}
            (container,) = (status.get("containerStatuses") or [{}])[:1] or [{}]
            if container.get("ready"):
                continue
            waiting_for = ((container.get("state") or {}).get("waiting") or {}).get("reason") or status.get("phase")
            restarts = container.get("restartCount", 0)
            problems.append(f"ESO pod {meta['namespace']}/{meta['name']} not ready: {waiting_for}, {restarts} restarts")
        return problems

    def _pending_stores(self, api: kube.Kube, nudge: Nudge) -> list[str]:
        stores = [(kind, s) for kind, s in self._stores(api) if not _ready(s)]
        for kind in (CSS, STORE):
            nudge(kind, [s for k, s in stores if k == kind])
        events = _warnings(api) if stores else {}
        pending = [f"{k[1]} {_name(s)}{_why(s)}{events.get(s['metadata']['uid'], '')}" for k, s in stores]
        return pending + self._operator(api) if pending else []

    def _pending(self, ctx: step.StepContext, api: kube.Kube, nudge: Nudge | None = None) -> list[str]:
        pending = [f"{k[1]} {_name(s)}{_why(s)}" for k, s in self._stores(api) if not _ready(s)]
        unsynced = [es for es in api.objects(*ES) if not _ready(es)]
        if nudge is not None:
            nudge(ES, unsynced)
        events = _warnings(api) if unsynced else {}
        pending += [f"ExternalSecret {_name(es)}{_why(es)}{events.get(es['metadata']['uid'], '')}" for es in unsynced]
        return pending + self._operator(api) if pending else []

    def check(self, ctx: step.StepContext) -> bool:
        api = cluster_of(ctx)
        return not self._pending(ctx, api) and not self._mismatches(ctx, api)

    def vault_token(self, ctx: step.StepContext) -> secret.Secret | None:
        return VaultBootstrap()._token(ctx)

    def _mismatches(self, ctx: step.StepContext, api: kube.Kube) -> list[str]:
        """ExternalSecrets whose Secret differs from Vault (compared as SHA-256; no value is logged)."""
        token = self.vault_token(ctx)
        addresses = ctx.outputs_of("vault-unseal").get("addresses") or vault_addresses(ctx, api)
        if token is None or not addresses:
            ctx.log.warning("secrets_not_compared", reason="no Vault token (set keys.token_file or VAULT_TOKEN)")
            return []
        node = vault.VaultCluster(list(addresses), token=token).active()
        wrong = []
        in_cluster = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in api.objects("v1", "Secret")}
        stores = {}
        for found in api.objects(*CSS):
            provider = ((found.get("spec") or {}).get("provider") or {}).get("vault") or {}
            stores[found["metadata"]["name"]] = (str(provider.get("path") or "secret"), provider.get("version", "v2"))
        reads: dict[str, dict[str, Any]] = {}  # one read per Vault path, however many ExternalSecrets use it
        for es in api.objects(*ES):
            meta, spec = es["metadata"], es.get("spec") or {}
            mount, version = stores.get(((spec.get("secretStoreRef") or {}).get("name")) or "", ("secret", "v2"))
            target = (spec.get("target") or {}).get("name") or meta["name"]
            data = (in_cluster.get((meta["namespace"], target)) or {}).get("data") or {}
            for entry in spec.get("data") or []:
                remote = entry["remoteRef"]
                path = f"{mount}/data/{remote['key']}" if version == "v2" else f"{mount}/{remote['key']}"
                if path not in reads:
                    reads[path] = node.read(path) or {}
                reply = reads[path]
                stored = (reply.get("data") or {}) if version == "v2" else reply
                want = stored.get(remote.get("property")) if remote.get("property") else json.dumps(stored)
                have = data.get(entry["secretKey"])
                if want is None or have is None or _digest(base64.b64decode(have).decode()) != _digest(str(want)):
                    wrong.append(f"{meta['namespace']}/{target}.{entry['secretKey']}")
        return wrong

    def run(self, ctx: step.StepContext) -> None:
        api = cluster_of(ctx)
        nudge = Nudge(api)
        hint = "the messages are ESO's own; `kubectl get clustersecretstores,externalsecrets -A` and the ESO pod's log"
        stores = lambda: self._pending_stores(api, nudge)  # noqa: E731
        until_none_pending(ctx, stores, what="every secret store Ready", hint=hint, wake_on=(api, *CSS))
        nudge(ES, api.objects(*ES))  # every one, Ready or not: a Ready one may hold what Vault held before a restore
        until_none_pending(
            ctx,
            lambda: self._pending(ctx, api, nudge) or self._mismatches(ctx, api),
            what="every ExternalSecret Ready and equal to Vault",
            hint=hint,
            wake_on=(api, *ES),
        )


def _name(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


# -- app health --------------------------------------------------------------------------------------


class AppHealth(ArgoSync):
    name = "app-health"
    requires = ("eso-sync",)
    summary = "wait for every Application and workload to be healthy"
    end_state = "every Application Synced and Healthy, every workload ready"
    default_timeout = 1200.0
    strict = True

    def check(self, ctx: step.StepContext) -> bool:
        return super().check(ctx) and not self._workloads_pending(ctx)

    def _workloads_pending(self, ctx: step.StepContext) -> list[str]:
        api = cluster_of(ctx)
        namespaces = set()
        for app in app_tree(api, self._root_name(ctx)).values():
            for row in ((app or {}).get("status") or {}).get("resources") or []:
                if row.get("namespace"):
                    namespaces.add(row["namespace"])
        pending = []
        for kind in WORKLOAD_KINDS:  # one LIST per kind, whatever the number of namespaces
            for obj in api.objects("apps/v1", kind):
                ns = obj["metadata"]["namespace"]
                if ns in namespaces:
                    status, want = obj.get("status") or {}, (obj.get("spec") or {}).get("replicas", 1)
                    ready = status.get("numberReady" if kind == "DaemonSet" else "readyReplicas") or 0
                    want = status.get("desiredNumberScheduled", 1) if kind == "DaemonSet" else want
                    if int(ready) < int(want):
                        pending.append(f"{kind} {ns}/{obj['metadata']['name']} {ready}/{want} ready")
        return pending

    def run(self, ctx: step.StepContext) -> None:
        super().run(ctx)
        until_none_pending(ctx, lambda: self._workloads_pending(ctx), what="every workload ready")
