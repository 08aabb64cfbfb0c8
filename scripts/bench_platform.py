"""Benchmark: how long the sandbox platform takes to come up, phase by phase, and what it costs.

Runs the README's sandbox walk-through `--rounds` times on fresh directories:
`dr sandbox up`, kubectl applies Argo CD and the root app, then times until
every Application is Synced, until the three Vault pods' OpenBao answer,
init + unseal through dr's Vault adapter until the vault app is Healthy, and
until ESO has delivered the demo secret. Reports the median of each phase,
and the sandbox process's CPU time and peak RSS (its OpenBao children apart).
Target: the whole platform Synced in under 30 s, so that drills and tests on
the sandbox spend their time on the recovery, not on the stand-in.

On the real control plane `sandbox CPU s` and `peak RSS` are the sandbox
process's (node agent, Argo CD, ESO, fault proxy); the control plane's
processes are measured apart (`control plane peak RSS MB`, their sum).

    .venv/bin/python scripts/bench_platform.py [--rounds 3] [--backend real emulated]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import kubernetes

from dr.adapters import sandbox_process, vault

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "platform"


def until(probe: Callable[[], Any], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("phase did not finish")
        time.sleep(0.1)


def one_round(backend: str) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="dr-bench-platform-")) / "sb"
    marks: dict[str, float] = {}
    start = time.monotonic()
    info = sandbox_process.up(directory, backend=backend)
    marks["sandbox up"] = time.monotonic() - start
    try:
        validate = ["--validate=false"] if backend == "emulated" else []  # the emulator serves no OpenAPI
        kubectl = ["kubectl", "--kubeconfig", str(directory / "kubeconfig"), "apply", *validate]
        subprocess.run(
            [*kubectl, "--server-side", "-k", str(EXAMPLES / "bootstrap" / "argo-cd")], check=True, capture_output=True
        )
        crds = ["crd/applications.argoproj.io", "crd/appprojects.argoproj.io"]
        if backend == "real":  # the emulator establishes a CRD at once (and kubectl wait cannot read it there)
            subprocess.run(
                [
                    "kubectl",
                    "--kubeconfig",
                    str(directory / "kubeconfig"),
                    "wait",
                    "--for=condition=Established",
                    *crds,
                ],
                check=True,
                capture_output=True,
            )
        subprocess.run([*kubectl, "-f", str(EXAMPLES / "root-app.yaml")], check=True, capture_output=True)
        client = kubernetes.config.new_client_from_config(str(directory / "kubeconfig"))
        custom, core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)

        def apps() -> dict[str, dict[str, Any]]:
            items = custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications")["items"]
            return {a["metadata"]["name"]: a.get("status") or {} for a in items}

        until(
            lambda: len(a := apps()) == 10 and all((s.get("sync") or {}).get("status") == "Synced" for s in a.values())
        )
        marks["10 apps Synced"] = time.monotonic() - start
        pods = lambda: [p.status.pod_ip for p in core.list_namespaced_pod("vault").items if p.status.pod_ip]  # noqa: E731
        until(lambda: len(pods()) == 3)
        addresses = [f"http://{ip}:8200" for ip in pods()]
        until(lambda: all(_answers(a) for a in addresses))
        marks["OpenBao pods answer"] = time.monotonic() - start
        init = vault.VaultNode(addresses[0]).init(5, 3)
        cluster = vault.VaultCluster(addresses, token=init.root_token)
        cluster.unseal_all(init.shares[:3])
        until(lambda: (apps()["vault"].get("health") or {}).get("status") == "Healthy")
        marks["vault app Healthy"] = time.monotonic() - start
        admin = hvac.Client(url=cluster.active().address, token=init.root_token.reveal())
        admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        until(lambda: _put(admin))
        admin.sys.create_or_update_policy("eso", 'path "secret/data/*" { capabilities = ["read"] }')
        admin.sys.enable_auth_method("kubernetes")
        admin.write_data(
            "auth/kubernetes/config",
            data={
                "kubernetes_host": info.url,
                "kubernetes_ca_cert": (directory / "ca" / "ca.crt").read_text(),
                "disable_local_ca_jwt": True,
            },
        )
        admin.write_data(
            "auth/kubernetes/role/external-secrets",
            data={
                "bound_service_account_names": ["external-secrets"],
                "bound_service_account_namespaces": ["external-secrets"],
                "token_policies": ["eso"],
            },
        )
        until(lambda: _secret(core))
        marks["demo secret delivered"] = time.monotonic() - start
        marks.update(_usage(int(info.pid or 0)))
        marks["control plane peak RSS MB"] = _control_plane_rss(directory)
    finally:
        sandbox_process.down(directory)
    return marks


def _answers(address: str) -> bool:
    try:
        return vault.VaultNode(address).health_code() > 0
    except Exception:
        return False


def _put(admin: hvac.Client) -> bool:
    try:
        admin.secrets.kv.v2.create_or_update_secret(
            path="workloads/demo-app", secret={"api_key": "k"}, mount_point="secret"
        )
        return True
    except hvac.exceptions.InvalidPath:
        return False


def _secret(core: kubernetes.client.CoreV1Api) -> bool:
    try:
        return bool(core.read_namespaced_secret("demo-app-secret", "workloads").data)
    except kubernetes.client.ApiException:
        return False


def _usage(pid: int) -> dict[str, float]:
    """The sandbox process's own CPU seconds and peak RSS (MB), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = float(os.sysconf("SC_CLK_TCK"))
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "sandbox CPU s": (int(fields[11]) + int(fields[12])) / ticks,
        "sandbox peak RSS MB": int(status["VmHWM"].split()[0]) / 1024,
    }


def _control_plane_rss(directory: Path) -> float:
    """The summed peak RSS (MB) of the sandbox's kine and kube-* processes; 0 on the emulator."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if str(directory).encode() in argv and (b"/kine" in argv or b"/kube-" in argv):
            hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            total += int(hwm.split()[1]) / 1024
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", nargs="+", default=["real", "emulated"], choices=["real", "emulated"])
    args = parser.parse_args()
    print(f"| backend | phase (from `dr sandbox up`) | median of {args.rounds} | min | max |")
    print("|---|---|---|---|---|")
    for backend in args.backend:
        rounds = [one_round(backend) for _ in range(args.rounds)]
        for key in rounds[0]:
            values = [r[key] for r in rounds]
            unit = "" if "MB" in key or "CPU" in key else " s"
            print(
                f"| {backend} | {key} | {statistics.median(values):.1f}{unit} | {min(values):.1f}{unit}"
                f" | {max(values):.1f}{unit} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
