"""The recovery plan: seven steps in order, and the snapshot branch beside them.

Names are stable identifiers used by the CLI, checkpoints, reports and
runbooks. The design card lists the restore last; here `raft-restore`
comes right after `vault-unseal`, because External Secrets must copy the
restored secrets, not an empty Vault's, and the applications must start
with those secrets in place.

The shared bodies live in `platform.py` (with `dr bootstrap`); the three
that only a recovery has (the snapshot download, the throwaway init, the
restore) in `restore.py`. The snapshot step has no prerequisite, so it
downloads and checks the snapshot while the cluster is being built.
"""

from __future__ import annotations

from dr import secret
from dr.engine import step
from dr.ops import vault as ops_vault
from dr.recovery import platform, restore


class EsoSync(platform.EsoSync):
    requires = ("raft-restore",)

    def vault_token(self, ctx: step.StepContext) -> secret.Secret | None:
        """After a restore only the original's tokens work: the key source's DR token, or BAO_TOKEN/VAULT_TOKEN."""
        return restore.dr_token(ctx) or ops_vault.env_token()


Cluster, RootApp, ArgoSync, AppHealth = platform.Cluster, platform.RootApp, platform.ArgoSync, platform.AppHealth

VaultUnseal, RaftRestore, Snapshot = restore.VaultUnseal, restore.RaftRestore, restore.Snapshot

# The snapshot branch has no prerequisite: it downloads while the cluster is built.
ALL: tuple[type[step.Step], ...] = (Snapshot, Cluster, RootApp, ArgoSync, VaultUnseal, RaftRestore, EsoSync, AppHealth)
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
