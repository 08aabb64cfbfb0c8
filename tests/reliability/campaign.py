"""The fault campaign: recoveries and snapshot saves with faults injected at seeded random points.

Each trial runs `dr` as a real process, injects one fault, and classifies
what happened:

- `completed`: the run finished and its result checks out (a recovery's
  canary and synced Secret hold the original values; a saved snapshot
  verifies);
- `resumed-then-completed`: it stopped with a readable checkpoint and a
  reason, and a resume (a recovery) or a second save, with the fault gone,
  finished and checks out;
- `stopped-cleanly`: it stopped with a readable checkpoint and a reason,
  and so did the second attempt;
- `lost-data`: anything else: an unreadable checkpoint, a run that says it
  succeeded but restored the wrong data, a snapshot listed without its
  manifest or failing its checksum. Must be 0.

Faults: SIGKILL and SIGTERM of dr; Kubernetes API latency, 5xx and dropped
watches (the sandbox's knobs); the Vault node killed mid-restore and
mid-snapshot; S3 errors and throttling (`S3FaultProxy` in front of a real
S3 server, versitygw); the state dir's (or the store's) disk full (a small tmpfs).

Used by `tests/reliability/test_fault_campaign.py` (a small fixed seed) and
`scripts/fault_campaign.py` (long runs).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import kubernetes
import yaml
from click.testing import CliRunner

from dr import cli, secret
from dr.adapters import localbao, sandbox_process, vault
from dr.engine import checkpoints
from tests import harness_s3
from tests.drills.test_drill import one_replica

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CANARY = "dr/canary"
RECOVER_FAULTS = ("sigkill", "sigterm", "api-5xx", "api-latency", "drop-watches", "vault-kill-mid-restore", "disk-full")
SAVE_FAULTS = ("sigkill", "sigterm", "vault-kill-mid-snapshot", "s3-errors", "s3-throttle", "disk-full")


@dataclass
class Trial:
    number: int
    target: str
    fault: str
    point: float
    outcome: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Results:
    trials: list[Trial] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        outcomes = collections.Counter(t.outcome for t in self.trials)
        return {
            "trials": len(self.trials),
            "faults": dict(collections.Counter(f"{t.target}/{t.fault}" for t in self.trials)),
            "completed": outcomes["completed"],
            "resumed-then-completed": outcomes["resumed-then-completed"],
            "stopped-cleanly": outcomes["stopped-cleanly"],
            "lost-data": outcomes["lost-data"],
        }

    def table(self) -> str:
        lines = ["| # | target | fault | at | outcome | took | detail |", "|---|---|---|---|---|---|---|"]
        for t in self.trials:
            lines.append(
                f"| {t.number} | {t.target} | {t.fault} | {t.point:.1f} s | {t.outcome} | {t.seconds:.0f} s"
                f" | {t.detail} |"
            )
        s = self.summary()
        lines += [
            "",
            f"trials {s['trials']}; completed {s['completed']}, resumed-then-completed {s['resumed-then-completed']},"
            f" stopped-cleanly {s['stopped-cleanly']}, lost-data {s['lost-data']}",
            "faults: " + ", ".join(f"{k} {v}" for k, v in sorted(s["faults"].items())),
        ]
        return "\n".join(lines)


def _dr(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [PYTHON, "-m", "dr", "--log-format", "json", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "dr", "--log-format", "json", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small filesystem at `path` (mode 0700), so that a disk-full is real ENOSPC."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Fill the filesystem holding `path` to the last byte."""
    with contextlib.suppress(OSError), (path / ".filler").open("wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


# -- S3 faults ---------------------------------------------------------------------------------------------------


class S3FaultProxy:
    """An HTTP proxy to the S3 server that answers a share of requests with S3's 500 or 503 SlowDown."""

    def __init__(self, upstream: str, rng: random.Random) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.rng = rng
        self.rate = 0.0
        self.status = 500
        self.injected = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _any(self) -> None:
                body = self._body()
                if proxy.rate and proxy.rng.random() < proxy.rate:
                    proxy.injected += 1
                    code, text = (503, "SlowDown") if proxy.status == 503 else (500, "InternalError")
                    payload = f"<Error><Code>{text}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                skip = ("connection", "transfer-encoding", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                # A HEAD answer has no body but the object's length: pass that on as it is.
                length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-request (a killed dr) is part of the campaign

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# -- the campaign ------------------------------------------------------------------------------------------------


class Campaign:
    """One original platform (for recoveries) and one OpenBao cluster with S3 (for saves), then the trials."""

    def __init__(self, work: Path, seed: int) -> None:
        self.work = work
        self.rng = random.Random(seed)  # noqa: S311 - reproducible fault points, not secrets
        self.results = Results()
        self._cleanups: list[Any] = []

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()

    # -- set-up ---------------------------------------------------------------------------------------------

    def build_original(self) -> None:
        """Bootstrap, canary, snapshot, destroy: what every recovery trial restores."""
        self.repo = one_replica(self.work)  # the campaign is about dr's failure handling, not Raft replication
        old = self.work / "original"
        old.mkdir(mode=0o700)
        self.store = self.work / "store"
        config = self._write(
            old / "dr.yaml", state_dir=str(old / "state"), snapshots={"store": str(self.store), "min_age": "1s"}
        )
        built = _run("--config", str(config), "bootstrap")
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        self.keys = old / "state" / "keys"
        self.token = secret.Secret((self.keys / "root-token").read_text().strip())
        api = kubernetes.config.new_client_from_config(str(old / "state" / "sandbox" / "kubeconfig"))
        pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod("vault", label_selector="component=server")
        addresses = [f"http://{p.status.pod_ip}:8200" for p in pods.items]
        client = hvac.Client(url=vault.VaultCluster(addresses).active().address, token=self.token.reveal())
        client.secrets.kv.v2.create_or_update_secret(path=CANARY, secret={"v": "before-the-loss"}, mount_point="secret")
        demo = client.secrets.kv.v2.read_secret_version(
            path="workloads/demo-app", mount_point="secret", raise_on_deleted_version=True
        )
        self.demo = demo["data"]["data"]["api_key"]
        saver = self._write(
            old / "saver.yaml",
            state_dir=str(old / "state"),
            snapshots={"store": str(self.store)},
            vault={"addresses": addresses},
        )
        saved = _run("--config", str(saver), "snapshot", "save", env={"VAULT_TOKEN": self.token.reveal()})
        assert saved.returncode == 0, saved.stdout[-3000:]
        sandbox_process.down(old / "state" / "sandbox")
        shutil.rmtree(old / "state" / "sandbox")

    def start_vault(self) -> None:
        """A 3-node OpenBao with some data, versitygw and the fault proxy in front of it."""
        procs = localbao.BaoCluster(self.work / "bao", size=3).start()
        self._cleanups.append(procs.destroy)
        first = vault.VaultNode(procs.addresses[0])
        init = first.init(5, 3)
        self.bao, self.bao_init = procs, init
        cluster = vault.VaultCluster(procs.addresses, token=init.root_token)
        cluster.unseal_all(init.shares[:3])
        cluster.await_healthy(timeout=90)
        client = hvac.Client(url=cluster.active().address, token=init.root_token.reveal())
        client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
        for i in range(500):  # incompressible values: a 1 MB snapshot, bigger than the disk-full trial's tmpfs
            for _ in range(50):
                try:
                    value = {"v": os.urandom(1000).hex()}
                    client.secrets.kv.v2.create_or_update_secret(path=f"s/{i}", secret=value, mount_point="kv")
                    break
                except hvac.exceptions.InvalidPath:
                    time.sleep(0.1)
        s3_proc, self.s3 = harness_s3.start(self.work / "s3")
        self._cleanups.append(lambda: harness_s3.stop(s3_proc))
        self.proxy = S3FaultProxy(self.s3.endpoint, self.rng)
        self._cleanups.append(self.proxy.close)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            aws_access_key_id=self.s3.access_key,
            aws_secret_access_key=self.s3.secret_key,
            region_name=harness_s3.REGION,
        )
        s3.create_bucket(Bucket="campaign")

    @staticmethod
    def _write(path: Path, **config: Any) -> Path:
        base = {"cluster": {"provider": "sandbox"}}
        path.write_text(yaml.safe_dump({**base, **config}))
        return path

    # -- recovery trials ------------------------------------------------------------------------------------

    def recover_trial(self, number: int, fault: str) -> Trial:
        point = round(self.rng.uniform(1.0, 25.0), 1)
        trial = Trial(number, "recover", fault, point)
        started = time.monotonic()
        state = self.work / f"trial-{number}"
        state.mkdir(mode=0o700)
        shares = sorted(str(p) for p in self.keys.glob("share-*"))[:3]
        config = self._write(
            self.work / f"trial-{number}.yaml",
            state_dir=str(state),
            platform={"repo": str(self.repo)},
            snapshots={"store": str(self.store), "canary_path": f"secret/data/{CANARY}"},
            keys={"source": "files", "files": shares, "token_file": str(self.keys / "root-token")},
        )
        sandbox = state / "sandbox"
        stack = contextlib.ExitStack()
        try:
            if fault == "api-5xx":
                sandbox_process.set_faults(sandbox, api_error_rate=0.15)
            elif fault == "api-latency":
                sandbox_process.set_faults(sandbox, api_latency_ms=50)
            elif fault == "drop-watches":
                sandbox_process.set_faults(sandbox, drop_watches=True)
            elif fault == "disk-full":
                stack.enter_context(tmpfs(state / "runs", "256k"))
            log = state.parent / f"trial-{number}.log"
            proc = _dr("--config", str(config), "recover", "--cluster", "new", log=log)
            self._inject_recover(proc, fault, point, state)
            code = proc.wait(timeout=600)
            trial.outcome, trial.detail = self._judge_recovery(code, state, config, fault, log)
        finally:
            sandbox_process.down(sandbox)
            stack.close()
            trial.seconds = round(time.monotonic() - started, 1)
        return trial

    def _inject_recover(self, proc: subprocess.Popen[bytes], fault: str, point: float, state: Path) -> None:
        if fault in ("sigkill", "sigterm"):
            if not _sleep_unless_done(proc, point):
                proc.send_signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
        elif fault == "vault-kill-mid-restore":
            if _await_step(proc, state, "raft-restore") and not _sleep_unless_done(proc, point % 3):
                sandbox_process.pod_fault(state / "sandbox", "vault/vault-0", kill=True)
        elif fault == "disk-full" and not _sleep_unless_done(proc, point):
            fill(state / "runs")

    def _judge_recovery(self, code: int, state: Path, config: Path, fault: str, log: Path) -> tuple[str, str]:
        try:
            run = checkpoints.CheckpointStore(state).latest()
        except Exception as exc:
            return "lost-data", f"checkpoint unreadable after exit {code}: {exc}"
        if run is None and code < 0:  # killed before its first checkpoint: nothing to resume, so start again
            again = _run("--config", str(config), "recover", "--cluster", "new", timeout=600)
            fresh = checkpoints.CheckpointStore(state).latest()
            if again.returncode != 0 or fresh is None:
                return "stopped-cleanly", f"killed before the first checkpoint; the new run exit {again.returncode}"
            problem = self._canary_problem(state, fresh)
            return ("lost-data", problem) if problem else ("resumed-then-completed", "killed before any checkpoint")
        if run is None:
            return "lost-data", f"no checkpoint after exit {code}"
        if code == 0:
            problem = self._canary_problem(state, run)
            return ("lost-data", problem) if problem else ("completed", f"exit 0 ({fault} absorbed)")
        # The reason: in the checkpoint, or (when the checkpoint itself cannot be written: a full disk) in the
        # error dr printed, or the signal that killed it.
        reason = (run.error or {}).get("message") or _failure(log) or ("killed: status running" if code < 0 else "")
        if not reason:
            return "lost-data", f"exit {code} without a reason in the checkpoint (status {run.status})"
        first = f"exit {code}: {reason[:90]}"
        # The fault is gone: knobs off, space back.
        sandbox_process.set_faults(state / "sandbox", api_error_rate=0, api_latency_ms=0, drop_watches=False)
        with contextlib.suppress(OSError):
            (state / "runs" / ".filler").unlink()
        again = _run("--config", str(config), "recover", "--resume", run.run_id, timeout=600)
        try:
            after = checkpoints.CheckpointStore(state).load(run.run_id)
        except Exception as exc:
            return "lost-data", f"{first}; checkpoint unreadable after the resume: {exc}"
        if again.returncode != 0:
            why = (after.error or {}).get("message") or again.stderr[-200:]
            return "stopped-cleanly", f"{first}; resume exit {again.returncode}: {why[:90]}"
        problem = self._canary_problem(state, after)
        return ("lost-data", f"{first}; resumed, but {problem}") if problem else ("resumed-then-completed", first)

    def _canary_problem(self, state: Path, run: checkpoints.RunRecord) -> str | None:
        """What a completed recovery got wrong: the canary in Vault and the demo app's synced Secret."""
        api = kubernetes.config.new_client_from_config(str(state / "sandbox" / "kubeconfig"))
        pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod("vault", label_selector="component=server")
        addresses = [f"http://{p.status.pod_ip}:8200" for p in pods.items]
        client = hvac.Client(url=vault.VaultCluster(addresses).active().address, token=self.token.reveal())
        value = client.secrets.kv.v2.read_secret_version(
            path=CANARY, mount_point="secret", raise_on_deleted_version=True
        )
        value = value["data"]["data"]["v"]
        if value != "before-the-loss":
            return f"the canary reads {value!r}"
        synced = kubernetes.client.CoreV1Api(api).read_namespaced_secret("demo-app-secret", "workloads").data
        if base64.b64decode(synced["api_key"]).decode() != self.demo:
            return "the demo app's Secret is not the restored value"
        return None

    # -- snapshot trials ------------------------------------------------------------------------------------

    def save_trial(self, number: int, fault: str) -> Trial:
        point = round(self.rng.uniform(0.0, 0.3), 2)  # after `snapshot_started`: while the snapshot streams
        trial = Trial(number, "snapshot-save", fault, point)
        started = time.monotonic()
        s3 = fault.startswith("s3-")
        store = f"s3://campaign/trial-{number}" if s3 else str(self.work / f"store-{number}")
        stack = contextlib.ExitStack()
        try:
            if fault == "disk-full":
                stack.enter_context(tmpfs(Path(store), "128k"))
            saver = self._write(self.work / "saver.yaml", vault={"addresses": self.bao.addresses})
            args = ["snapshot", "save", "--store", store, "--cluster", "c"]
            if s3:
                args += ["--s3-endpoint", self.proxy.url]
                self.proxy.rate, self.proxy.status = 0.3, 503 if fault == "s3-throttle" else 500
            env = {"VAULT_TOKEN": self.bao_init.root_token.reveal(), "DR_CONFIG": str(saver), **self.s3.env()}
            log = self.work / f"trial-{number}.log"
            proc = _dr(*args, env=env, log=log)
            streaming = await_log(proc, log, "snapshot_started")
            if fault in ("sigkill", "sigterm") and streaming and not _sleep_unless_done(proc, point):
                proc.send_signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
            elif fault == "vault-kill-mid-snapshot" and streaming and not _sleep_unless_done(proc, point):
                self._kill_active()
            code = proc.wait(timeout=300)
            trial.outcome, trial.detail = self._judge_save(code, args, env, fault, log)
        finally:
            self.proxy.rate = 0.0
            stack.close()
            trial.seconds = round(time.monotonic() - started, 1)
        return trial

    def _kill_active(self) -> None:
        cluster = vault.VaultCluster(self.bao.addresses)
        active = cluster.active().address
        self.killed = self.bao.addresses.index(active)
        self.bao.kill(self.killed)

    def _heal_vault(self) -> None:
        index = getattr(self, "killed", None)
        if index is None:
            return
        self.bao.restart(index)
        vault.VaultNode(self.bao.addresses[index]).unseal(self.bao_init.shares[:3], join_timeout=30)
        vault.VaultCluster(self.bao.addresses, token=self.bao_init.root_token).await_healthy(timeout=90)
        self.killed = None

    def _listed_problem(self, args: list[str], env: dict[str, str]) -> str | None:
        """Every snapshot the store lists has its manifest and passes its checksum and archive check.

        In this process (no fault here, and no interpreter start-up per check)."""
        where = args[2:]
        listing = CliRunner().invoke(cli.cli, ["snapshot", "list", *where, "-o", "json"], env=env)
        if listing.exit_code != 0:
            return f"snapshot list failed: {listing.output[-200:]}"
        for entry in json.loads(listing.stdout)["snapshots"]:
            checked = CliRunner().invoke(cli.cli, ["snapshot", "verify", entry["id"], *where], env=env)
            if checked.exit_code != 0:
                return f"listed snapshot {entry['id']} fails verify: {checked.output[-200:]}"
        return None

    def _judge_save(self, code: int, args: list[str], env: dict[str, str], fault: str, log: Path) -> tuple[str, str]:
        problem = self._listed_problem(args, env)
        if problem:
            return "lost-data", problem
        if code == 0:
            return "completed", f"exit 0 ({fault} absorbed; {self.proxy.injected} S3 faults injected so far)"
        reason = _failure(log)
        if code > 0 and not reason:
            return "lost-data", f"exit {code} without an error line"
        first = f"exit {code}" + (f": {reason[:80]}" if reason else " (killed)")
        self._heal_vault()
        if fault == "disk-full":
            subprocess.run(["mount", "-o", "remount,size=16m", args[3]], check=True)
        again = _run(*args, env=env)
        problem = self._listed_problem(args, env)
        if problem:
            return "lost-data", f"{first}; then {problem}"
        if again.returncode != 0:
            return "stopped-cleanly", f"{first}; second save exit {again.returncode}"
        return "resumed-then-completed", first

    # -- running ----------------------------------------------------------------------------------------------

    def _draw(self, kinds: tuple[str, ...], count: int, only: tuple[str, ...]) -> list[str]:
        """`count` fault kinds, every kind once (in a seeded order) before any comes again."""
        pool = [k for k in kinds if not only or k in only] or list(kinds)
        drawn: list[str] = []
        while len(drawn) < count:
            batch = list(pool)
            self.rng.shuffle(batch)
            drawn += batch
        return drawn[:count]

    def run(self, recoveries: int, saves: int, only: tuple[str, ...] = ()) -> Results:
        """`only` limits the draw to those fault kinds."""
        plan = [("recover", f) for f in self._draw(RECOVER_FAULTS, recoveries, only)]
        plan += [("snapshot-save", f) for f in self._draw(SAVE_FAULTS, saves, only)]
        if recoveries:
            self.build_original()
        if saves:
            self.start_vault()
        for number, (target, fault) in enumerate(plan, start=1):
            trial = self.recover_trial(number, fault) if target == "recover" else self.save_trial(number, fault)
            self.results.trials.append(trial)
            print(f"trial {number}: {target} {fault} at {trial.point} s: {trial.outcome} ({trial.detail})", flush=True)
        return self.results


def _failure(log: Path) -> str:
    """The message of the `command_failed` line a failed dr printed, if any."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if '"command_failed"' in line:
            with contextlib.suppress(ValueError):
                return str(json.loads(line).get("message") or "")
    return ""


def _sleep_unless_done(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Sleep; True when the process ended first (the fault came too late to matter)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.02)
    return proc.poll() is not None


def await_log(proc: subprocess.Popen[bytes], log: Path, event: str, timeout: float = 60) -> bool:
    """Wait for `event` in a JSON log; False when the process ended first."""
    deadline = time.monotonic() + timeout
    needle = f'"event": "{event}"'.encode()
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if needle in log.read_bytes():
                return True
        time.sleep(0.005)
    return False


def _await_step(proc: subprocess.Popen[bytes], state: Path, name: str, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(Exception):
            run = checkpoints.CheckpointStore(state).latest()
            if run and run.steps.get(name) and run.steps[name].state == "running":
                return True
        time.sleep(0.05)
    return False


def campaign(seed: int, recoveries: int, saves: int, work: Path | None = None, only: tuple[str, ...] = ()) -> Results:
    directory = work or Path(tempfile.mkdtemp(prefix="dr-campaign-"))
    run = Campaign(directory, seed)
    try:
        return run.run(recoveries, saves, only)
    finally:
        run.close()
