"""The shape every simulated controller shares: watches wake a level-triggered reconcile.

Like a controller-runtime reconciler, a controller here never trusts an
event's content: a watch event (or the resync period passing) only marks the
world dirty, and `reconcile()` then lists what it needs and drives it toward
the desired state. A dropped watch, a 5xx from the fault knobs or a crash in
one pass therefore costs a retry, never a missed change.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from dr.sandbox import kube

log = logging.getLogger("dr.sandbox")


def go_duration(text: str | None, default: float) -> float:
    """A Go duration as Argo CD and ESO take them ("5s", "3m", "1h30m"); "0" is zero, absent is `default`."""
    if text is None or str(text).strip() == "":
        return default
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text)))


class Controller:
    """Subclasses set `name`, `watches` ((apiVersion, kind) pairs) and `resync`, and define `reconcile()`."""

    name = "controller"
    watches: tuple[tuple[str, str], ...] = ()
    resync = 1.0

    def __init__(self, api: kube.Kube, stop: threading.Event) -> None:
        self.kube = api
        self.stop = stop
        self.dirty = threading.Event()
        self.errors = 0

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._run, name=f"{self.name}-loop", daemon=True)]
        for api_version, kind in self.watches:
            threads.append(
                threading.Thread(
                    target=self._watch, args=(api_version, kind), name=f"{self.name}-watch-{kind}", daemon=True
                )
            )
        for thread in threads:
            thread.start()
        return threads

    def reconcile(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self.stop.is_set():
            self.dirty.clear()
            try:
                self.reconcile()
            except Exception as exc:  # one failed pass must not stop the controller: log, back off, retry
                self.errors += 1
                log.warning("%s: reconcile failed: %s: %s", self.name, type(exc).__name__, exc)
                self.stop.wait(0.5)
            self.dirty.wait(self.resync)

    def _watch(self, api_version: str, kind: str) -> None:
        client = self.kube.clone()
        while not self.stop.is_set():
            try:
                for _ in client.watch(api_version, kind):
                    self.dirty.set()
                    if self.stop.is_set():
                        return
            except kube.KubeError:
                # Not served yet (a CRD not created) or a fault: the resync covers the gap meanwhile.
                client.forget(api_version, kind)
                self.stop.wait(1.0)
            self.dirty.set()  # whatever ended the watch, something may have been missed
            time.sleep(0.05)
