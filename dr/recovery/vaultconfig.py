"""What the platform needs from Vault, declared in the platform repo and applied after a first init.

`dr bootstrap` initialises an empty Vault; before External Secrets can copy
anything it needs a KV mount, the ESO policy, Kubernetes auth pointing at
this cluster with ESO's role, and the secrets the ExternalSecrets read. The
file (`platform.vault_config`, kind `VaultPlatform`) declares them; `apply`
makes each true only where it is not (a mount that exists is left alone, a
secret that exists is never overwritten), so it is safe after a crash and on
every rerun. Generated secret values are random and never logged.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from dr import errors, safeyaml
from dr.adapters import vault

RUNBOOK = "runbooks/vault-unseal.md"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class KvMount(_Model):
    path: str
    version: Literal[1, 2] = 2


class KubernetesAuth(_Model):
    mount: str = "kubernetes"
    roles: dict[str, dict[str, Any]] = {}


class SeedSecret(_Model):
    path: str  # relative to `mount`, as an ExternalSecret's remoteRef.key is to its store's path
    generate: list[str]
    mount: str = "secret"


class VaultPlatform(_Model):
    api_version: Literal["dr.dev/v1alpha1"] = pydantic.Field(alias="apiVersion")
    kind: Literal["VaultPlatform"]
    kv: list[KvMount] = []
    policies: dict[str, str] = {}
    kubernetes_auth: KubernetesAuth | None = pydantic.Field(default=None, alias="kubernetesAuth")
    secrets: list[SeedSecret] = []


def load(path: Path) -> VaultPlatform:
    try:
        data = safeyaml.load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise errors.ConfigError(f"{path}: cannot read the Vault platform file: {exc}", runbook=RUNBOOK) from exc
    try:
        return VaultPlatform.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        raise errors.ConfigError(f"{path}: field `{field}`: {first['msg']}", runbook=RUNBOOK) from None


def apply(node: vault.VaultNode, spec: VaultPlatform, auth_config: dict[str, Any]) -> list[str]:
    """Make the declared state hold on the active node; returns what it changed (names, never values)."""
    changed = []
    mounts = node.mounted("mounts")
    for kv in spec.kv:
        if kv.path.strip("/") not in mounts:
            node.write(f"sys/mounts/{kv.path.strip('/')}", {"type": "kv", "options": {"version": str(kv.version)}})
            changed.append(f"enabled kv-v{kv.version} at {kv.path}/")
    for name, policy in spec.policies.items():
        node.write(f"sys/policies/acl/{name}", {"policy": policy}, method="PUT")
        changed.append(f"policy {name}")
    if spec.kubernetes_auth is not None:
        mount = spec.kubernetes_auth.mount.strip("/")
        if mount not in node.mounted("auth"):
            node.write(f"sys/auth/{mount}", {"type": "kubernetes"})
            changed.append(f"enabled kubernetes auth at {mount}/")
        node.write_kubernetes_auth(auth_config, mount=mount)
        for role, settings in spec.kubernetes_auth.roles.items():
            node.write(f"auth/{mount}/role/{role}", settings)
            changed.append(f"role {mount}/{role}")
    for seed, path in zip(spec.secrets, secret_paths(spec), strict=True):
        if _wait_readable(node, path) is None:
            values = {name: secrets.token_urlsafe(24) for name in seed.generate}
            node.write(path, {"data": values} if "/data/" in path else values)
            changed.append(f"generated {seed.mount}/{seed.path} ({', '.join(seed.generate)})")
    return changed


def _wait_readable(node: vault.VaultNode, path: str) -> dict[str, Any] | None:
    """Read a KV path; a mount enabled a moment ago answers 'no handler' briefly, which is not 'absent'."""
    for _ in range(50):
        try:
            return node.read(path)
        except errors.PermanentError as exc:
            if "no handler" not in str(exc) and "upgrading" not in str(exc):
                raise
        time.sleep(0.1)
    return node.read(path)


def secret_paths(spec: VaultPlatform) -> list[str]:
    """The API paths of the declared secrets (`secret/data/…` on a KV v2 mount)."""
    versions = {kv.path.strip("/"): kv.version for kv in spec.kv}
    return [
        f"{seed.mount}/data/{seed.path}" if versions.get(seed.mount, 2) == 2 else f"{seed.mount}/{seed.path}"
        for seed in spec.secrets
    ]
