"""The run's Lease in the target cluster: one recovery at a time on a cluster, from any machine.

The state-dir lock stops two runs on one machine; two operators on two
laptops recovering the same cluster share nothing but the cluster. So a run
holds a `coordination.k8s.io/v1` Lease there from the moment the cluster
answers until the run ends, renewed in the background. A second run finds it
and stops, saying who holds it. A holder that died (SIGKILL, a closed laptop)
stops renewing and its lease expires after `DURATION` seconds; a resumed run
is the same holder (the run id) and takes its lease back at once.

Expiry compares the lease's renewTime with this machine's clock, as an
operator reading `kubectl get lease` would: clock skew between the two
machines shortens or lengthens the wait by the skew.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from dr import errors, logs
from dr.adapters import kube

NAME: Final = "dr-run"
NAMESPACE: Final = "kube-system"
DURATION: Final = 60
API: Final = ("coordination.k8s.io/v1", "Lease")
RUNBOOK: Final = "runbooks/lease.md"

log = logs.get("dr.lease")


@dataclass(frozen=True)
class Holder:
    """Who holds the lease: the run (its identity), who started it, and which plan."""

    run_id: str
    operator: str
    plan: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the API's MicroTime


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class Lease:
    """Acquire, renew and release the run lease with optimistic concurrency (resourceVersion)."""

    def __init__(
        self,
        api: kube.Kube,
        holder: Holder,
        *,
        duration: int = DURATION,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self.api = api
        self.holder = holder
        self.duration = duration
        self._clock = clock

    def _live(self) -> dict[str, Any] | None:
        return self.api.get(*API, NAME, NAMESPACE)

    def _annotations(self) -> dict[str, str]:
        return {"dr.dev/operator": self.holder.operator, "dr.dev/plan": self.holder.plan}

    def acquire(self) -> None:
        """Take the lease, or raise `LockHeldError` naming the run that holds it."""
        for _ in range(5):  # each pass loses only to another writer; five in a row is not a race, it is a fight
            live = self._live()
            now = _micro(self._clock())
            spec = {
                "holderIdentity": self.holder.run_id,
                "leaseDurationSeconds": self.duration,
                "acquireTime": now,
                "renewTime": now,
            }
            try:
                if live is None:
                    self.api.create(
                        {
                            "apiVersion": API[0],
                            "kind": API[1],
                            "metadata": {"name": NAME, "namespace": NAMESPACE, "annotations": self._annotations()},
                            "spec": spec,
                        }
                    )
                    return
                current = (live.get("spec") or {}).get("holderIdentity")
                if current == self.holder.run_id:
                    spec.pop("acquireTime")  # ours already: a resumed run
                elif current:
                    left = self._left(live)
                    if left > 0:
                        raise self._refusal(live, left)
                    log.warning("lease_taken_over", lease=f"{NAMESPACE}/{NAME}", previous=current)
                self._write(live, spec)
                return
            except kube.Conflict:
                continue
        raise errors.TransientError(f"the lease {NAMESPACE}/{NAME} kept changing while dr tried to take it")

    def renew(self) -> bool:
        """Push the renewTime on; False when the lease is no longer ours (expired and taken)."""
        live = self._live()
        if live is None or (live.get("spec") or {}).get("holderIdentity") != self.holder.run_id:
            return False
        self._write(live, {"renewTime": _micro(self._clock())})
        return True

    def release(self) -> None:
        """Give the lease up so that the next run need not wait for it to expire."""
        live = self._live()
        if live is not None and (live.get("spec") or {}).get("holderIdentity") == self.holder.run_id:
            self._write(live, {"holderIdentity": None, "renewTime": None})

    def _write(self, live: dict[str, Any], spec: dict[str, Any]) -> None:
        meta = {"resourceVersion": live["metadata"]["resourceVersion"], "annotations": self._annotations()}
        self.api.patch(*API, NAME, {"metadata": meta, "spec": spec}, NAMESPACE)

    def _left(self, live: dict[str, Any]) -> float:
        spec = live.get("spec") or {}
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        if renewed is None:
            return 0.0
        seconds = int(spec.get("leaseDurationSeconds") or self.duration)
        return (renewed + datetime.timedelta(seconds=seconds) - self._clock()).total_seconds()

    def _refusal(self, live: dict[str, Any], left: float) -> errors.LockHeldError:
        spec, notes = live.get("spec") or {}, (live["metadata"].get("annotations") or {})
        holder, plan, expires = spec.get("holderIdentity"), notes.get("dr.dev/plan", "recover"), max(1, round(left))
        return errors.LockHeldError(
            f"another {plan} run holds this cluster: run {holder}, started by "
            f"{notes.get('dr.dev/operator', 'an unknown operator')} at {spec.get('acquireTime')}; its lease "
            f"{NAMESPACE}/{NAME} expires in {expires} s unless renewed",
            hint=f"if that run is yours, resume it (`dr {plan} --resume {holder}`) on the machine that started it; "
            f"if its machine is gone, retry after the lease expires ({expires} s); "
            f"only if you are sure nothing is running: `kubectl -n {NAMESPACE} delete lease {NAME}`",
            runbook=RUNBOOK,
        )


@contextlib.contextmanager
def held(lease: Lease, *, every: float | None = None) -> Iterator[Lease]:
    """Hold `lease` while the block runs: acquired on entry, renewed in a thread, released on exit."""
    lease.acquire()
    log.info("lease_acquired", lease=f"{NAMESPACE}/{NAME}", run_id=lease.holder.run_id)
    done = threading.Event()
    interval = every if every is not None else lease.duration / 3

    def renew() -> None:
        while not done.wait(interval):
            try:
                if not lease.renew():
                    log.error(
                        "lease_lost",
                        lease=f"{NAMESPACE}/{NAME}",
                        hint="another run took the cluster's lease after this one failed to renew it in time",
                    )
                    return
            except errors.DRError as exc:  # an API blip: the next tick tries again, well inside the duration
                log.warning("lease_renew_failed", error=exc.message)

    thread = threading.Thread(target=renew, name="dr-lease", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        done.set()
        thread.join(timeout=5)
        try:
            lease.release()
            log.info("lease_released", lease=f"{NAMESPACE}/{NAME}")
        except errors.DRError as exc:
            log.warning("lease_release_failed", error=exc.message, hint=f"it expires by itself in {lease.duration} s")
