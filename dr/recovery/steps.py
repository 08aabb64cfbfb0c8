"""The seven recovery steps, declared with their order, end states and budgets.

Names are stable identifiers used by the CLI, checkpoints, reports and
runbooks. The design card lists the restore last; here `raft-restore`
comes right after `vault-unseal`, because External Secrets must copy the
restored secrets, not an empty Vault's, and the applications must start
with those secrets in place.

The bodies live in `platform.py` (shared with `dr bootstrap`); the two that
only a recovery has (unseal with the original share settings, the restore)
are not built yet: their `check` raises `NotImplementedYet`, so a real run
stops there with a pointer to the runbook that does it by hand, and never
reports a success it did not earn.
"""

from __future__ import annotations

from typing import ClassVar

from dr import __version__, errors
from dr.engine import step
from dr.recovery import platform


class _Pending(step.Step):
    """A recovery step whose body is not built yet: it fails loudly, never fakes success."""

    manual: ClassVar[str] = ""

    def check(self, ctx: step.StepContext) -> bool:
        raise errors.NotImplementedYet(
            f"step {self.name} is not implemented yet in dr {__version__}",
            hint=f"{self.manual} by hand with {self.runbook}",
            runbook=self.runbook,
        )


class VaultUnseal(_Pending):
    name = "vault-unseal"
    requires = ("argo-sync",)
    summary = "initialise the fresh Vault with the original share settings, unseal and join every pod"
    end_state = "every Vault pod initialised, unsealed and a Raft voter; autopilot healthy"
    default_timeout = 600.0
    manual = "initialise and unseal Vault"


class RaftRestore(_Pending):
    name = "raft-restore"
    requires = ("vault-unseal",)
    summary = "force-restore the chosen snapshot on the active node and unseal with the ORIGINAL shares"
    end_state = "snapshot restored, every pod unsealed with the original shares, Kubernetes auth points at this cluster"
    default_timeout = 900.0
    manual = "restore the Raft snapshot"


class EsoSync(platform.EsoSync):
    requires = ("raft-restore",)


Cluster, RootApp, ArgoSync, AppHealth = platform.Cluster, platform.RootApp, platform.ArgoSync, platform.AppHealth

ALL: tuple[type[step.Step], ...] = (Cluster, RootApp, ArgoSync, VaultUnseal, RaftRestore, EsoSync, AppHealth)
# `dr bootstrap`: a first install, so a new Vault instead of the restore.
BOOTSTRAP: tuple[type[step.Step], ...] = (
    Cluster,
    RootApp,
    ArgoSync,
    platform.VaultBootstrap,
    platform.EsoSync,
    AppHealth,
)
NAMES: tuple[str, ...] = tuple(cls.name for cls in ALL)
