"""The seven recovery steps, declared with their order, end states and budgets.

Names are stable identifiers used by the CLI, checkpoints, reports and
runbooks. The design card lists the restore last; here `raft-restore`
comes right after `vault-unseal`, because External Secrets must copy the
restored secrets, not an empty Vault's, and the applications must start
with those secrets in place.

The bodies arrive step by step. Until a body exists its `check` raises
`NotImplementedYet`, so a real run stops at that step with a pointer to the
runbook that does it by hand, and never reports a success it did not earn.
"""

from __future__ import annotations

from typing import ClassVar

from dr import __version__, errors
from dr.engine import step


class _Pending(step.Step):
    """A recovery step whose body is not built yet: it fails loudly, never fakes success."""

    manual: ClassVar[str] = ""

    def check(self, ctx: step.StepContext) -> bool:
        raise errors.NotImplementedYet(
            f"step {self.name} is not implemented yet in dr {__version__}",
            hint=f"{self.manual} by hand with {self.runbook}",
            runbook=self.runbook,
        )


class Cluster(_Pending):
    name = "cluster"
    summary = "provision a fresh cluster (provider sandbox, kind, k3s) or take an existing kubeconfig"
    end_state = "the Kubernetes API answers through the run's kubeconfig and every node is Ready"
    default_timeout = 900.0
    manual = "provision the cluster and write its kubeconfig"


class RootApp(_Pending):
    name = "root-app"
    requires = ("cluster",)
    summary = "install Argo CD from pinned manifests and apply the root Application"
    end_state = "Argo CD CRDs Established, argocd-server ready, the root Application exists"
    default_timeout = 600.0
    manual = "install Argo CD and apply root-app.yaml"


class ArgoSync(_Pending):
    name = "argo-sync"
    requires = ("root-app",)
    summary = "wait for the whole app-of-apps tree to sync"
    end_state = "every Application Synced; Healthy except those that wait for Vault"
    default_timeout = 1200.0
    manual = "sync the Applications"


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


class EsoSync(_Pending):
    name = "eso-sync"
    requires = ("raft-restore",)
    summary = "force-sync every ExternalSecret from the restored Vault"
    end_state = "ClusterSecretStore Ready, every ExternalSecret Ready, every target Secret present"
    default_timeout = 600.0
    manual = "force-sync the ExternalSecrets"


class AppHealth(_Pending):
    name = "app-health"
    requires = ("eso-sync",)
    summary = "wait for every Application and workload to be healthy"
    end_state = "every Application Synced and Healthy, every workload ready"
    default_timeout = 1200.0
    manual = "check the Applications"


ALL: tuple[type[step.Step], ...] = (Cluster, RootApp, ArgoSync, VaultUnseal, RaftRestore, EsoSync, AppHealth)
NAMES: tuple[str, ...] = tuple(cls.name for cls in ALL)
