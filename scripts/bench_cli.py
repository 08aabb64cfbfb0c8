"""Benchmark: how fast `dr` starts, beside `bao version` and `kubectl version --client` in the same run.

Each command runs RUNS times as its own process, the commands taking turns so
that a machine slowing down mid-run slows them all; the table gives the best
and the median wall time and the peak RSS. Targets: `dr --version` and
`dr --help` within 3x of `bao version`; `dr plan` and `dr snapshot list`
(a file store) within 300 ms. Below the table, the top offenders of
`python -X importtime` for `dr plan`, summed by top-level package.

    .venv/bin/python scripts/bench_cli.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from proctime import timed

BIN = Path(sys.executable).parent
TARGET_RATIO = 3.0
TARGET_MS = 300.0


ROOT = Path(__file__).resolve().parents[1]
UV = ROOT / ".tools" / "bin" / "uv"
PROBE = (
    "import sys; sys.argv = ['dr', 'plan']\n"
    "import contextlib, dr.cli\nwith contextlib.suppress(SystemExit):\n    dr.cli.main()"
)


def runtime_env(where: Path) -> Path | None:
    """A venv with dr and its locked runtime dependencies only; None where uv is not installed (make install)."""
    if not UV.exists():
        return None
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(where), "UV_PYTHON": sys.executable}
    sync = [str(UV), "sync", "--frozen", "--no-dev", "--quiet", "--compile-bytecode"]
    subprocess.run(sync, cwd=ROOT, env=env, check=True)
    return where / "bin"


def commands(store: Path, envs: dict[str, Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for label, bin_dir in envs.items():
        dr = str(bin_dir / "dr")
        found |= {
            f"dr --version ({label})": [dr, "--version"],
            f"dr --help ({label})": [dr, "--help"],
            f"dr plan ({label})": [dr, "plan"],
            f"dr snapshot list, file store ({label})": [dr, "snapshot", "list", "--store", str(store)],
        }
    found["bao version"] = [str(BIN / "bao"), "version"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        found["kubectl version --client"] = [kubectl, "version", "--client"]
    return found


def offenders(python: Path, env: dict[str, str], cwd: Path, top: int = 8) -> list[tuple[str, float]]:
    """Self import time (ms) of `dr plan`, summed per top-level package, largest first."""
    argv = [str(python), "-X", "importtime", "-c", PROBE]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=True)
    per: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        per[name.strip().split(".")[0]] += int(own) / 1000
    return per.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dr-bench-cli-") as tmp:
        work = Path(tmp)  # no dr.yaml here: every dr command runs on the defaults
        store = work / "snapshots"
        store.mkdir()
        # Bytecode is written as on any user's machine (the warm-up writes dr's own .pyc files).
        env = {k: v for k, v in os.environ.items() if not k.startswith("DR_") and k != "PYTHONDONTWRITEBYTECODE"}
        envs = {"dev .venv": BIN}
        runtime = runtime_env(work / "runtime")
        if runtime:
            envs["runtime deps only"] = runtime
        todo = commands(store, envs)
        for cmd in todo.values():
            timed(cmd, env, work)  # warm-up: the page cache and .pyc files
        walls: dict[str, list[float]] = {name: [] for name in todo}
        peaks: dict[str, float] = dict.fromkeys(todo, 0.0)
        for _ in range(args.runs):
            for name, cmd in todo.items():
                wall, rss = timed(cmd, env, work)
                walls[name].append(wall * 1000)
                peaks[name] = max(peaks[name], rss)
        found = {label: offenders(bin_dir / "python", env, work) for label, bin_dir in envs.items()}

    bao = statistics.median(walls["bao version"])
    print(f"{args.runs} runs each, {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| command | best | median | peak RSS | target | met |\n|---|---|---|---|---|---|")
    for name, samples in walls.items():
        median = statistics.median(samples)
        if name.startswith(("dr --version", "dr --help")):
            target, met = f"<= {TARGET_RATIO:.0f}x bao ({median / bao:.1f}x)", median <= TARGET_RATIO * bao
        elif name.startswith("dr "):
            target, met = f"<= {TARGET_MS:.0f} ms", median <= TARGET_MS
        else:
            target, met = "baseline", None
        verdict = "" if met is None else ("yes" if met else "NO")
        print(f"| {name} | {min(samples):.0f} ms | {median:.0f} ms | {peaks[name]:.0f} MiB | {target} | {verdict} |")
    for label, top in found.items():
        print(f"\n`dr plan`'s imports ({label}), self time summed per top-level package:\n")
        print("| package | ms |\n|---|---|")
        for package, ms in top:
            print(f"| {package} | {ms:.0f} |")


if __name__ == "__main__":
    main()
