"""A real S3 server on loopback: versitygw (built by `make testbed`), for the tests and the benchmarks.

moto's S3 is a Python imitation that shares the test's CPU and skips what
matters to a backup (Object Lock on versioned deletes, conditional writes,
checksums verified against the bytes); versitygw is an S3 gateway written to
serve real clients, over a directory with a versioning directory beside it.
moto stays for what versitygw does not serve: Secrets Manager and SSM.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dr.adapters import localbao, sandbox_process

BINARY = sandbox_process.TESTBED_BIN / "versitygw"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    root: Path

    def env(self) -> dict[str, str]:
        """The AWS variables a child process (`dr`, a benchmark) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def start(workdir: Path, *, timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], S3Server]:
    """versitygw's posix backend with versioning, on a free loopback port, ready when this returns."""
    if not BINARY.is_file():
        raise RuntimeError(f"{BINARY} is missing: the S3 tests need versitygw; build it with: make testbed")
    data, versions = workdir / "data", workdir / "versions"
    data.mkdir(parents=True, exist_ok=True)
    versions.mkdir(exist_ok=True)
    port = localbao.free_port()
    server = S3Server(f"http://127.0.0.1:{port}", f"dr{secrets.token_hex(6)}", secrets.token_hex(16), data)
    log = (workdir / "versitygw.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BINARY),
            "--port",
            f"127.0.0.1:{port}",
            "--quiet",
            "--keep-alive",
            "posix",
            "--versioning-dir",
            str(versions),
            str(data),
        ],
        # Credentials by environment, not argv: `ps` shows argv to every user of the machine.
        env={**os.environ, "ROOT_ACCESS_KEY_ID": server.access_key, "ROOT_SECRET_ACCESS_KEY": server.secret_key},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, server
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                tail = (workdir / "versitygw.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"versitygw did not start on 127.0.0.1:{port}: {tail}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    proc, server = start(tmp_path_factory.mktemp("versitygw"))
    yield server
    stop(proc)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The S3 server's credentials in this test's environment; returns its endpoint."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server.endpoint
