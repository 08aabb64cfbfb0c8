"""Benchmark: `dr recover --cluster new` on the sandbox, step by step, with 1 or 3 Vault replicas and N ExternalSecrets.

For each scenario: a copy of examples/platform with the Vault replica count
set and N more ExternalSecrets (each its own Secret, all from the demo app's
Vault path); `dr bootstrap`; `dr snapshot save`; the sandbox destroyed; then
`dr recover --cluster new --provider sandbox` in this process, metered.

Then, on the recovered platform, what `eso-sync` buys: Vault's Kubernetes
auth is pointed at a cluster that is gone (what a restore brings back), ESO
is left to fail on it for as long as it failed during the recovery, the auth
is re-pointed (what `raft-restore` does), and the time to every
ExternalSecret synced is measured twice: with ESO left alone (its own
back-off decides) and with dr's nudge (`force-sync` on the stores, then on
the ExternalSecrets, as the step does).

Per step it reports the duration, the time spent waiting on the platform
(`waited`: probes, backoff and Vault's own settling), dr's own time (the
rest), the Kubernetes API requests dr made and its wait ticks. Targets:
dr's own time under 5% of the RTO; API requests per wait tick that do not
grow with N (one list per tick, not one request per object); the snapshot
step done before `cluster` is (hidden behind provisioning).

    .venv/bin/python scripts/bench_recover.py [--replicas 1 3] [--secrets 10 100 500] [--backend real emulated]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from click.testing import CliRunner

from dr import cli, secret
from dr.adapters import kube, sandbox_process, vault
from dr.engine import checkpoints, runner, step
from dr.recovery import platform

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "platform"


class Meter:
    """Counts Kubernetes API requests and wait ticks per step (by the thread the step runs on)."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.ticks: collections.Counter[str] = collections.Counter()
        self._local = threading.local()
        request = kubernetes.client.rest.RESTClientObject.request
        attempt = runner.Runner._attempt
        wait_until = step.StepContext.wait_until
        meter = self

        def counted_request(client: Any, *args: Any, **kwargs: Any) -> Any:
            worker = threading.current_thread().name.startswith("dr-force-sync")  # eso-sync's patch pool
            meter.requests[getattr(meter._local, "step", None) or ("eso-sync" if worker else "(outside steps)")] += 1
            return request(client, *args, **kwargs)

        def named_attempt(run: Any, record: Any, s: step.Step, ctx: step.StepContext) -> Any:
            meter._local.step = s.name
            try:
                return attempt(run, record, s, ctx)
            finally:
                meter._local.step = None

        def ticking(ctx: step.StepContext, probe: Any, **kwargs: Any) -> Any:
            def counted() -> Any:
                meter.ticks[ctx.step] += 1
                return probe()

            return wait_until(ctx, counted, **kwargs)

        kubernetes.client.rest.RESTClientObject.request = counted_request  # type: ignore[method-assign]
        runner.Runner._attempt = named_attempt  # type: ignore[assignment,method-assign]
        step.StepContext.wait_until = ticking  # type: ignore[assignment,method-assign]

    def reset(self) -> None:
        self.requests.clear()
        self.ticks.clear()


def platform_copy(directory: Path, replicas: int, secrets: int) -> Path:
    repo = directory / "platform"
    shutil.copytree(EXAMPLES, repo)
    app = repo / "infrastructure/platform/vault/app.yaml"
    doc = yaml.safe_load(app.read_text())
    doc["spec"]["source"]["helm"]["valuesObject"]["server"]["ha"]["replicas"] = replicas
    app.write_text(yaml.safe_dump(doc, sort_keys=False))
    demo = repo / "infrastructure/workloads/demo-app"
    template = yaml.safe_load((demo / "external-secret.yaml").read_text())
    bench = []
    for i in range(secrets):
        es = json.loads(json.dumps(template))
        es["metadata"]["name"] = es["spec"]["target"]["name"] = f"bench-{i:03d}"
        bench.append(es)
    (demo / "bench-secrets.yaml").write_text(yaml.safe_dump_all(bench, sort_keys=False))
    kustomization = yaml.safe_load((demo / "kustomization.yaml").read_text())
    kustomization["resources"].append("bench-secrets.yaml")
    (demo / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return repo


def dr(config: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli.cli, ["--config", str(config), "--log-format", "json", *args], env=env)
    if result.exit_code != 0:
        raise SystemExit(f"dr {' '.join(args)} failed ({result.exit_code}):\n{result.output[-3000:]}")
    return result


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def scenario(meter: Meter, replicas: int, secrets: int) -> tuple[dict[str, Any], dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="dr-bench-recover-"))
    repo = platform_copy(work, replicas, secrets)
    store = work / "store"
    base = {"cluster": {"provider": "sandbox"}, "platform": {"repo": str(repo)}}
    old = write(work / "old.yaml", {**base, "state_dir": str(work / "old"), "snapshots": {"store": str(store)}})
    try:
        dr(old, "bootstrap")
        keys = work / "old" / "keys"
        token = (keys / "root-token").read_text().strip()
        client = kubernetes.config.new_client_from_config(str(work / "old" / "sandbox" / "kubeconfig"))
        pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod("vault", label_selector="component=server")
        addresses = [f"http://{p.status.pod_ip}:8200" for p in pods.items]
        saver = write(
            work / "saver.yaml",
            {
                **base,
                "state_dir": str(work / "old"),
                "snapshots": {"store": str(store)},
                "vault": {"addresses": addresses},
            },
        )
        dr(saver, "snapshot", "save", env={"VAULT_TOKEN": token})
    finally:
        sandbox_process.down(work / "old" / "sandbox")
    shares = sorted(str(p) for p in keys.glob("share-*"))[:3]
    new = write(
        work / "new.yaml",
        {
            **base,
            "state_dir": str(work / "new"),
            "snapshots": {"store": str(store)},
            "keys": {"source": "files", "files": shares, "token_file": str(keys / "root-token")},
        },
    )
    meter.reset()
    try:
        result = dr(new, "recover", "--cluster", "new", "-o", "json")
        run = json.loads(result.stdout)
        failing_for = sum(run["steps"][s]["duration_s"] for s in ("vault-unseal", "raft-restore"))
        api = kube.Kube(work / "new" / "sandbox" / "kubeconfig")
        run["summary"]["eso"] = {
            how: eso_resync(api, token, failing_for, nudged=how == "dr") for how in ("alone", "dr")
        }
    finally:
        sandbox_process.down(work / "new" / "sandbox")
    requests, ticks = dict(meter.requests), dict(meter.ticks)
    shutil.rmtree(work, ignore_errors=True)
    rows = {}
    for name, rec in run["steps"].items():
        waited = rec["wait_s"] + rec["retry_wait_s"]
        rows[name] = {
            "duration": rec["duration_s"],
            "waited": waited,
            "own": max(0.0, rec["duration_s"] - waited),
            "requests": requests.get(name, 0),
            "ticks": ticks.get(name, 0),
            "ended": rec["ended_at"],
        }
    return run["summary"], rows


def eso_resync(api: kube.Kube, token: str, failing_for: float, *, nudged: bool, limit: float = 900.0) -> float:
    """Seconds from Vault's auth re-pointed to every ExternalSecret synced again (`limit` if it never is)."""
    pods = api.objects("v1", "Pod", "vault", labels="component=server")
    node = vault.VaultCluster([api.pod_address(p, 8200) for p in pods], token=secret.Secret(token)).active()
    good = node.read_kubernetes_auth()
    node.write_kubernetes_auth({**good, "kubernetes_host": "https://127.0.0.1:1"})
    nudge = platform.Nudge(api, every=0.0)
    nudge(platform.ES, api.objects(*platform.ES))  # every ExternalSecret tries, fails, and backs off from now
    nudge(platform.CSS, api.objects(*platform.CSS))
    time.sleep(failing_for)
    node.write_kubernetes_auth(good)
    started = time.monotonic()
    nudge = platform.Nudge(api)
    while time.monotonic() - started < limit:
        stores, secrets = api.objects(*platform.CSS), api.objects(*platform.ES)
        if nudged:
            nudge(platform.CSS, [s for s in stores if not synced(s)])
            if all(synced(s) for s in stores):
                nudge(platform.ES, [e for e in secrets if not synced(e, since=started)])
        if all(synced(s) for s in stores) and all(synced(e, since=started) for e in secrets):
            return time.monotonic() - started
        time.sleep(0.5)
    return limit


def synced(obj: dict[str, Any], since: float | None = None) -> bool:
    """Ready, and (with `since`) refreshed after that monotonic instant."""
    status = obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    if not ready or since is None:
        return ready
    refreshed = datetime.datetime.fromisoformat(status.get("refreshTime") or "1970-01-01T00:00:00Z").timestamp()
    return refreshed >= time.time() - (time.monotonic() - since) - 1.0  # refreshTime has whole seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--secrets", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--backend", nargs="+", default=["real"], choices=["real", "emulated"])
    args = parser.parse_args()
    meter = Meter()
    print(
        "| backend | Vault pods | ExternalSecrets | step | duration | waited | dr's own | API requests | wait ticks"
        " | req/tick |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = []
    for backend in args.backend:
        os.environ["DR_SANDBOX_BACKEND"] = backend  # every sandbox the scenario starts
        for replicas in args.replicas:
            for secrets in args.secrets:
                summary, rows = scenario(meter, replicas, secrets)
                for name, r in rows.items():
                    per = f"{r['requests'] / r['ticks']:.1f}" if r["ticks"] else "–"
                    print(
                        f"| {backend} | {replicas} | {secrets} | {name} | {r['duration']:.1f} s | {r['waited']:.1f} s"
                        f" | {r['own']:.1f} s | {r['requests']} | {r['ticks']} | {per} |",
                        flush=True,
                    )
                snap_end = checkpoints.parse_timestamp(rows["snapshot"]["ended"])
                cluster_end = checkpoints.parse_timestamp(rows["cluster"]["ended"])
                totals.append((backend, replicas, secrets, summary, snap_end <= cluster_end))
    print()
    print(
        "| backend | Vault pods | ExternalSecrets | RTO | dr's own time | share of RTO"
        " | snapshot hidden behind cluster |"
    )
    print("|---|---|---|---|---|---|---|")
    for backend, replicas, secrets, s, hidden in totals:
        share = 100 * s["orchestration_s"] / s["rto_s"]
        print(
            f"| {backend} | {replicas} | {secrets} | {s['rto_s']:.1f} s | {s['orchestration_s']:.1f} s | {share:.1f}% |"
            f" {'yes' if hidden else 'no'} |"
        )
    print()
    print("| backend | Vault pods | ExternalSecrets | all synced after the re-point: ESO alone | with dr's nudge |")
    print("|---|---|---|---|---|")
    for backend, replicas, secrets, s, _ in totals:
        eso = s["eso"]
        print(f"| {backend} | {replicas} | {secrets} | {eso['alone']:.1f} s | {eso['dr']:.1f} s |")
    print(f"\n(measured {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
