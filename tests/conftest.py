"""Shared fixtures: every test starts with clean global state (secret registry, logging)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog

from dr import secret


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
