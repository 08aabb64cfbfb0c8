"""Shared fixtures: every test starts with clean global state (secret registry, logging)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from dr import secret
from dr.adapters import localbao as bao

# Real OpenBao clusters (session-scoped) and the leak scan; a real S3 server (versitygw); for every test directory.
pytest_plugins = ["tests.harness_vault", "tests.harness_s3"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No DR_* variable of the developer's shell, and a cwd with no dr.yaml or .dr/ in it."""
    for name in list(os.environ):
        if name.startswith("DR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _clean_globals() -> Iterator[None]:
    """Forget registered secrets and logging config between tests."""
    secret.forget_all()
    structlog.reset_defaults()
    yield
    secret.forget_all()
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server mode on a free loopback port: a real HTTP AWS API that boto3 talks to unmodified."""
    port = bao.free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.05)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials and region for moto (Secrets Manager, SSM; S3 tests use `s3_env`, a real server)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint
