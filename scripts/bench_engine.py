"""Benchmark: the step engine's own cost per step, and checkpoint write latency.

Runs plans of no-op steps (a chain, and a fan-out that exercises the parallel
path) against a fresh state dir and prints a table: wall time per step,
checkpoint writes per step, write latency percentiles (each write is
tmp + fsync + rename + directory fsync) and the process's peak RSS.
This is the floor every recovery pays on top of waiting for the platform.

    .venv/bin/python scripts/bench_engine.py [--steps 7 50 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from dr import logs
from dr.engine import checkpoints, plan, runner, step


class Noop(step.Step):
    """Does nothing; check() is false so every step really runs, then verify passes."""

    def __init__(self, name: str, requires: tuple[str, ...]) -> None:
        super().__init__(name=name, requires=requires)
        self.done = False

    def check(self, ctx: step.StepContext) -> bool:
        return self.done

    def run(self, ctx: step.StepContext) -> None:
        self.done = True

    def verify(self, ctx: step.StepContext) -> None:
        return None


def build(n: int, shape: str) -> plan.Plan:
    if shape == "chain":
        steps = [Noop(f"s{i}", (f"s{i - 1}",) if i else ()) for i in range(n)]
    else:  # fan-out: one root, n-2 parallel children, one join
        children = [Noop(f"c{i}", ("root",)) for i in range(n - 2)]
        steps = [Noop("root", ()), *children, Noop("join", tuple(c.name for c in children))]
    return plan.Plan(f"bench-{shape}-{n}", steps)


def measure(n: int, shape: str) -> dict[str, float]:
    latencies: list[float] = []
    real_save = checkpoints.CheckpointStore.save

    def timed_save(self: checkpoints.CheckpointStore, run: checkpoints.RunRecord) -> None:
        start = time.perf_counter()
        real_save(self, run)
        latencies.append(time.perf_counter() - start)

    checkpoints.CheckpointStore.save = timed_save  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = checkpoints.CheckpointStore(Path(tmp) / "state")
            r = runner.Runner(build(n, shape), store, handle_signals=False, max_parallel=4)
            start = time.perf_counter()
            outcome = r.start()
            wall = time.perf_counter() - start
            size = store.path(outcome.run_id).stat().st_size
    finally:
        checkpoints.CheckpointStore.save = real_save  # type: ignore[method-assign]
    assert outcome.status == "succeeded", outcome
    lat = sorted(latencies)
    return {
        "wall_ms_per_step": 1000 * wall / n,
        "writes_per_step": len(lat) / n,
        "write_p50_ms": 1000 * statistics.median(lat),
        "write_p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
        "checkpoint_kb": size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[7, 50, 200])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with Path(os.devnull).open("w") as quiet:
        logs.configure("json", stream=quiet)
        print(
            f"{'shape':8} {'steps':>5} {'ms/step':>8} {'writes/step':>11} {'write p50':>10} "
            f"{'write p95':>10} {'ckpt KB':>8}"
        )
        for shape in ("chain", "fanout"):
            for n in args.steps:
                runs = [measure(n, shape) for _ in range(args.repeat)]
                best = min(runs, key=lambda r: r["wall_ms_per_step"])
                print(
                    f"{shape:8} {n:5d} {best['wall_ms_per_step']:8.2f} {best['writes_per_step']:11.1f} "
                    f"{best['write_p50_ms']:8.2f}ms {best['write_p95_ms']:8.2f}ms {best['checkpoint_kb']:8.1f}"
                )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
