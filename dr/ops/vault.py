"""`dr vault status` and `dr vault unseal`: the cluster from config and conventions, shares from a key source.

Addresses come from `--address` (repeatable), else `vault.addresses`, else
`BAO_ADDR` / `VAULT_ADDR`; the token from `BAO_TOKEN` / `VAULT_TOKEN`, else the
key source's DR token. Shares come from `--key-file` (the files source from
the command line), else the configured `keys.source`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from dr import config as config_mod
from dr import errors, secret
from dr.adapters import keys, vault


def key_source(
    config: config_mod.Config,
    *,
    key_files: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> keys.KeySource:
    """The key source chosen by `--key-file` or `keys.source`."""
    settings = config.keys
    environ = os.environ if env is None else env
    if key_files:
        return keys.FileKeys([Path(f) for f in key_files], settings.token_file)
    match settings.source:
        case "files":
            return keys.FileKeys(list(settings.files), settings.token_file)
        case "env":
            return keys.EnvKeys(settings.env_prefix, settings.token_env, environ)
        case "prompt":
            custodians = settings.custodians or [f"custodian {n}" for n in range(1, config.vault.threshold + 1)]
            return keys.PromptKeys(custodians, settings.shares_per_custodian, settings.prompt_token)
        case "stdin":
            return keys.StdinKeys(stdin if stdin is not None else sys.stdin)
        case "aws-secretsmanager":
            assert settings.aws_secret_id is not None  # checked by the config model
            return keys.SecretsManagerKeys(settings.aws_secret_id, settings.aws_region, settings.aws_endpoint_url)
        case "aws-ssm":
            assert settings.aws_parameter_path is not None
            return keys.SsmKeys(settings.aws_parameter_path, settings.aws_region, settings.aws_endpoint_url)
    raise errors.ConfigError(
        "no key source: nothing says where the unseal shares come from",
        hint="pass --key-file (repeatable), or set keys.source in dr.yaml (files, env, prompt, stdin, "
        "aws-secretsmanager, aws-ssm)",
        runbook=keys.RUNBOOK,
    )


def env_token(env: Mapping[str, str] | None = None) -> secret.Secret | None:
    environ = os.environ if env is None else env
    value = (environ.get("BAO_TOKEN") or environ.get("VAULT_TOKEN") or "").strip()
    return secret.Secret(value) if value else None


def authenticate(
    config: config_mod.Config, *, addresses: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> secret.Secret:
    """A token for unattended runs: `BAO_TOKEN`/`VAULT_TOKEN`, Kubernetes auth, or AppRole (`vault.auth`)."""
    auth = config.vault.auth
    if auth.method == "token":
        token = env_token(env)
        if token is None:
            raise errors.ConfigError(
                "no Vault token: BAO_TOKEN and VAULT_TOKEN are unset",
                hint="export VAULT_TOKEN, or set vault.auth.method to kubernetes or approle",
            )
        return token
    node = cluster(config, addresses=addresses, env=env).nodes[0]
    if auth.method == "kubernetes":
        assert auth.role is not None  # checked by the config model
        jwt = keys.read_private_file(auth.jwt_file, what="service-account token file", private=False)
        return node.login_kubernetes(auth.role, jwt, auth.mount or "kubernetes")
    assert auth.role_id_file is not None
    assert auth.secret_id_file is not None
    return node.login_approle(
        keys.read_private_file(auth.role_id_file, what="AppRole role_id file"),
        keys.read_private_file(auth.secret_id_file, what="AppRole secret_id file"),
        auth.mount or "approle",
    )


def cluster(
    config: config_mod.Config,
    *,
    addresses: Sequence[str] = (),
    token: secret.Secret | None = None,
    env: Mapping[str, str] | None = None,
) -> vault.VaultCluster:
    chosen = list(addresses) or config_mod.vault_addresses(config, env)
    return vault.VaultCluster(
        chosen,
        token=token,
        ca_cert=config_mod.vault_ca_cert(config, env),
        timeout=config.vault.timeout,
        snapshot_timeout=config.vault.snapshot_timeout,
    )


def status(
    config: config_mod.Config, *, addresses: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> vault.ClusterHealth:
    """Health of every node; Raft peers and autopilot when a token is available."""
    token = env_token(env)
    if token is None and config.keys.source:
        try:
            token = key_source(config, env=env).token()
        except errors.ConfigError:
            token = None
    return cluster(config, addresses=addresses, token=token, env=env).health()


def unseal(
    config: config_mod.Config,
    *,
    addresses: Sequence[str] = (),
    all_nodes: bool = False,
    key_files: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> list[tuple[str, vault.SealStatus]]:
    """Unseal the chosen nodes (the first one, the `--address` ones, or `--all`)."""
    target = cluster(config, addresses=addresses, env=env)
    nodes = target.nodes if (all_nodes or addresses) else target.nodes[:1]
    source = key_source(config, key_files=key_files, env=env, stdin=stdin)
    shares = source.shares()
    return [(node.address, node.unseal(shares)) for node in nodes]
