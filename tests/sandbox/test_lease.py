"""The run Lease against the sandbox API with the real kubernetes client: one holder, expiry, resume, release."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

from dr import errors
from dr.adapters import kube
from dr.ops import lease

A = lease.Holder("run-a", "alice@laptop", "recover")
B = lease.Holder("run-b", "bob@desk", "recover")


@pytest.fixture
def cluster(kubeconfig: Path) -> Iterator[kube.Kube]:
    client = kube.Kube(kubeconfig)
    yield client
    client.delete(*lease.API, lease.NAME, lease.NAMESPACE)


def test_a_second_run_is_refused_naming_the_holder_and_gets_it_once_released(cluster: kube.Kube) -> None:
    with lease.held(lease.Lease(cluster, A)):
        live = cluster.get(*lease.API, lease.NAME, lease.NAMESPACE)
        assert live is not None
        assert live["spec"]["holderIdentity"] == "run-a"
        with pytest.raises(errors.LockHeldError) as caught:
            lease.Lease(cluster, B).acquire()
        assert caught.value.exit_code == errors.EXIT_LOCKED
        assert "run run-a, started by alice@laptop" in caught.value.message
        assert "dr recover --resume run-a" in (caught.value.hint or "")
        lease.Lease(cluster, A).acquire()  # the same run (a resume) takes its own lease back at once
    released = cluster.get(*lease.API, lease.NAME, lease.NAMESPACE)
    assert released is not None
    assert not released["spec"].get("holderIdentity")
    lease.Lease(cluster, B).acquire()


def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew(cluster: kube.Kube) -> None:
    lease.Lease(cluster, A, duration=60).acquire()
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=61)
    taker = lease.Lease(cluster, B, clock=lambda: later)
    taker.acquire()
    assert not lease.Lease(cluster, A).renew()
    assert taker.renew()


def test_a_lost_race_to_create_is_a_refusal_not_a_crash(cluster: kube.Kube) -> None:
    """Both saw no lease; the second create gets a 409 and re-reads the winner's lease."""
    first, second = lease.Lease(cluster, A), lease.Lease(cluster, B)
    real_live = second._live
    calls = iter([None])
    second._live = lambda: next(calls, None) or real_live()  # type: ignore[method-assign]
    first.acquire()
    with pytest.raises(errors.LockHeldError, match="run run-a"):
        second.acquire()
