"""Benchmark: the sandbox's emulated Kubernetes API, through the real kubernetes client over HTTPS.

Starts a sandbox (`dr sandbox up`) in a temporary directory, fills a namespace
with 1,000 ConfigMaps (half of them labelled), then measures with the
`kubernetes` client: requests per second and latency percentiles for a GET,
for a LIST of 1,000 objects with a label selector, and the fan-out of one
write to 20 concurrent watchers (time until every watcher has the event).
Target: the 1,000-object list in under 50 ms median, so that the sandbox
never dominates a recovery's timing.

    .venv/bin/python scripts/bench_sandbox_api.py [--objects 1000] [--rounds 50] [--watchers 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import kubernetes

from dr.adapters import sandbox_process


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))], ordered[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=20)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="dr-bench-sandbox-"))
    sandbox_process.up(directory)
    try:
        client = kubernetes.config.new_client_from_config(str(directory / "kubeconfig"))
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": "bench"}})
        for i in range(args.objects):
            labels = {"bench": "yes"} if i % 2 == 0 else {"bench": "no"}
            core.create_namespaced_config_map(
                "bench", {"metadata": {"name": f"cm-{i:05d}", "labels": labels}, "data": {"i": str(i)}}
            )
        rows = []
        for name, call in (
            ("get one object", lambda: core.read_namespaced_config_map("cm-00001", "bench")),
            (f"list {args.objects} objects", lambda: core.list_namespaced_config_map("bench")),
            (
                f"list {args.objects} with selector",
                lambda: core.list_namespaced_config_map("bench", label_selector="bench=yes"),
            ),
        ):
            call()  # warm the connection
            samples = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                call()
                samples.append(time.perf_counter() - start)
            p50, p95, worst = percentiles(samples)
            rows.append((name, 1 / statistics.mean(samples), p50, p95, worst))

        # Watch fan-out: N watchers from the current resourceVersion; one write; time until all saw it.
        samples = []
        for round_number in range(5):
            rv = core.list_namespaced_config_map("bench", limit=1).metadata.resource_version
            seen = threading.Barrier(args.watchers + 1, timeout=30)
            target = f"fanout-{round_number}"

            def watch(resource_version: str = rv, name: str = target, barrier: threading.Barrier = seen) -> None:
                w = kubernetes.watch.Watch()
                api = kubernetes.client.CoreV1Api(
                    kubernetes.config.new_client_from_config(str(directory / "kubeconfig"))
                )
                for event in w.stream(
                    api.list_namespaced_config_map, "bench", resource_version=resource_version, timeout_seconds=30
                ):
                    if event["object"].metadata.name == name:
                        w.stop()
                        barrier.wait()
                        return

            threads = [threading.Thread(target=watch, daemon=True) for _ in range(args.watchers)]
            for t in threads:
                t.start()
            time.sleep(1.0)  # let every watcher connect
            start = time.perf_counter()
            core.create_namespaced_config_map("bench", {"metadata": {"name": target}})
            seen.wait()
            samples.append(time.perf_counter() - start)
        p50, p95, worst = percentiles(samples)
        rows.append((f"watch fan-out to {args.watchers}", 1 / statistics.mean(samples), p50, p95, worst))

        print(f"{'operation':32} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, rps, p50, p95, worst in rows:
            print(f"{name:32} {rps:8.1f} {p50 * 1000:8.1f} {p95 * 1000:8.1f} {worst * 1000:8.1f}")
    finally:
        sandbox_process.down(directory)


if __name__ == "__main__":
    main()
