"""Benchmark: `dr snapshot save` against `bao operator raft snapshot save`, to a directory and to S3.

Fills a real local OpenBao (Raft) with incompressible KV data to each size,
then measures, each in its own process: wall time, throughput and peak RSS of

* `bao operator raft snapshot save` to a local file (the baseline);
* `dr snapshot save` to a file store;
* `dr snapshot save` to S3 (versitygw, a real S3 server, on loopback);
* the S3 baseline: the `bao` save above, then boto3's `upload_file` of that file.

Targets: dr's peak RSS grows by less than 32 MB between the sizes; file-store
throughput at least 0.9x the bao baseline; saving to S3 at most 0.8x the time
of save-then-upload (dr streams while bao writes; the baseline does one after
the other). Needs versitygw in .tools/bin (make testbed).

    .venv/bin/python scripts/bench_snapshot.py [--sizes 64 512] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import boto3
import hvac

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the S3 server's harness lives beside the tests

from proctime import timed

from dr.adapters import localbao
from tests import harness_s3

BIN = Path(sys.executable).parent


def fill(client: hvac.Client, target_mb: int, written: int) -> int:
    """Write 512 KiB incompressible values (Raft refuses entries over 1 MiB) until `target_mb` MiB are stored."""
    while written < target_mb * 2:
        client.secrets.kv.v2.create_or_update_secret(
            path=f"bench/{written}", secret={"v": os.urandom(256 * 1024).hex()}, mount_point="kv"
        )
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], help="KV data in MiB")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is kept")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dr-bench-"))
    cluster = localbao.BaoCluster(workdir / "bao", size=1).start()
    s3_proc, server = harness_s3.start(workdir / "s3")
    endpoint = server.endpoint
    try:
        address = cluster.addresses[0]
        client = hvac.Client(url=address)
        init = client.sys.initialize(1, 1)
        client.sys.submit_unseal_key(init["keys"][0])
        client.token = init["root_token"]
        while not isinstance(client.sys.read_health_status(method="GET"), dict):
            time.sleep(0.1)
        client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
        time.sleep(1)
        aws = server.env()
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=harness_s3.REGION,
        )
        bucket = f"bench-{secrets.token_hex(3)}"
        s3.create_bucket(Bucket=bucket)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},  # .pyc as on any machine
            **aws,
            "VAULT_ADDR": address,
            "BAO_ADDR": address,
            "VAULT_TOKEN": init["root_token"],
            "BAO_TOKEN": init["root_token"],
            "DR_CONFIG": "",
            "DR_LOG_FORMAT": "json",
        }
        rows = []
        written = 0
        for size in args.sizes:
            written = fill(client, size, written)
            snap = workdir / f"bao-{size}.snap"
            runs: dict[str, list[tuple[float, float]]] = {"bao": [], "file": [], "s3": [], "upload": []}
            for n in range(args.repeat):
                runs["bao"].append(timed([localbao.find_bao(), "operator", "raft", "snapshot", "save", str(snap)], env))
                store = workdir / f"store-{size}-{n}"
                runs["file"].append(timed([sys.executable, "-m", "dr", "snapshot", "save", "--store", str(store)], env))
                shutil.rmtree(store)
                runs["s3"].append(
                    timed(
                        [
                            sys.executable,
                            "-m",
                            "dr",
                            "snapshot",
                            "save",
                            "--store",
                            f"s3://{bucket}/dr-{size}-{n}",
                            "--s3-endpoint",
                            endpoint,
                        ],
                        env,
                    )
                )
                start = time.perf_counter()
                s3.upload_file(str(snap), bucket, f"baseline-{size}-{n}.snap")
                runs["upload"].append((time.perf_counter() - start, 0.0))
            best = {k: min(v, key=lambda r: r[0]) for k, v in runs.items()}
            mib = snap.stat().st_size / (1 << 20)
            rows.append((size, mib, best))
        print(
            f"{'data':>6} {'snapshot':>9} {'bao file':>9} {'dr file':>9} {'dr/bao':>7} {'bao+upload':>11} "
            f"{'dr s3':>8} {'s3 ratio':>9} {'RSS file':>9} {'RSS s3':>8}"
        )
        for size, mib, best in rows:
            bao_t, file_t, s3_t = best["bao"][0], best["file"][0], best["s3"][0]
            baseline_s3 = bao_t + best["upload"][0]
            print(
                f"{size:>4}MB {mib:>7.0f}MB {mib / bao_t:>6.0f}MB/s {mib / file_t:>6.0f}MB/s {bao_t / file_t:>6.2f}x "
                f"{baseline_s3:>10.2f}s {s3_t:>7.2f}s {s3_t / baseline_s3:>8.2f}x "
                f"{best['file'][1]:>7.0f}MB {best['s3'][1]:>6.0f}MB"
            )
        if len(rows) >= 2:
            grow_file = rows[-1][2]["file"][1] - rows[0][2]["file"][1]
            grow_s3 = rows[-1][2]["s3"][1] - rows[0][2]["s3"][1]
            print(f"peak RSS growth {rows[0][0]}MB → {rows[-1][0]}MB: file {grow_file:+.1f} MB, s3 {grow_s3:+.1f} MB")
    finally:
        harness_s3.stop(s3_proc)
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
