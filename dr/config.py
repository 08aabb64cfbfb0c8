"""Configuration: `dr.yaml`, then environment variables, then flags; flags win.

A wrong setting found half-way through an outage costs more than one found
at start-up, so the whole configuration is validated before anything runs,
unknown fields are refused (a typo must not silently fall back to a
default), and every error names the file or variable, the field and what is
wrong, with exit code 2. pydantic does the validation; this module only
gathers the layers and words the errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import pydantic
import yaml

from dr import __version__, errors, safeyaml

DEFAULT_FILE: Final = "dr.yaml"
MAX_FILE_BYTES: Final = 1024 * 1024  # a config file is a few KB; a bigger one is a mistake or an attack
RUNBOOK: Final = "runbooks/README.md#configuration"

# Environment variable → dotted field. Flags are passed by the CLI the same way.
ENV_VARS: Final = {
    "DR_STATE_DIR": "state_dir",
    "DR_LOG_FORMAT": "log_format",
    "DR_CLUSTER_NAME": "cluster.name",
    "DR_PROVIDER": "cluster.provider",
    "DR_STORE": "snapshots.store",
}

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)([dhms]))", re.IGNORECASE)
_UNIT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"1h30m"`` or ``"2d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m or 1h30m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts).lower() != text.lower():
            raise ValueError(f"{value!r} is not a duration; use e.g. 90s, 15m or 1h30m")
        seconds = sum(float(n) * _UNIT[u.lower()] for n, u in parts)
    else:
        raise ValueError("expected a duration such as 90s, 15m or 1h30m")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class ClusterSettings(_Model):
    """The cluster a recovery provisions or targets."""

    name: str = pydantic.Field(default="platform", min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    provider: Literal["sandbox", "kind", "k3s", "kubeconfig"] = "sandbox"
    kubeconfig: Path | None = None
    context: str | None = None
    kind_node_image: str = "kindest/node:v1.31.4"
    k3s_version: str = "v1.31.4+k3s1"
    k3s_host: str | None = None  # None: install on this host
    ssh_user: str = "root"
    ssh_key: Path | None = None
    k3s_airgap_dir: Path | None = None


class PlatformSettings(_Model):
    """The platform repository (a local checkout) and what bootstrap and recovery take from it."""

    repo: Path = Path("examples/platform")
    argocd: str = "bootstrap/argo-cd"  # a directory or file in the repo, or an https URL
    argocd_sha256: str | None = None  # required when `argocd` is a URL
    root_app: str = "root-app.yaml"
    vault_config: str = "vault/platform.yaml"
    vault_namespace: str = "vault"
    vault_selector: str = "app.kubernetes.io/name=vault,component=server"
    vault_port: Annotated[int, pydantic.Field(ge=1, le=65535)] = 8200
    # Applications that cannot be Healthy before Vault is unsealed and filled (argo-sync lets them be Progressing
    # or Degraded; app-health does not).
    waits_for_vault: list[str] = ["vault", "platform-tools-app", "observability-app", "workloads-app"]


class VaultAuthSettings(_Model):
    """How a non-interactive run (the snapshot CronJob) gets a Vault token."""

    method: Literal["token", "kubernetes", "approle"] = "token"
    role: str | None = None
    mount: str | None = None
    jwt_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    role_id_file: Path | None = None
    secret_id_file: Path | None = None

    @pydantic.model_validator(mode="after")
    def _method_has_what_it_needs(self) -> VaultAuthSettings:
        if self.method == "kubernetes" and not self.role:
            raise ValueError("method kubernetes needs role")
        if self.method == "approle" and not (self.role_id_file and self.secret_id_file):
            raise ValueError("method approle needs role_id_file and secret_id_file")
        return self


class VaultSettings(_Model):
    """How to reach the Vault/OpenBao nodes, and the share settings of a new cluster's init."""

    addresses: list[Annotated[str, pydantic.Field(pattern=r"^https?://[^\s/]+(/.*)?$")]] = []
    ca_cert: Path | None = None
    timeout: Duration = 30.0
    snapshot_timeout: Duration = 3600.0
    shares: Annotated[int, pydantic.Field(ge=1, le=255)] = 5
    threshold: Annotated[int, pydantic.Field(ge=1, le=255)] = 3
    auth: VaultAuthSettings = VaultAuthSettings()

    @pydantic.model_validator(mode="after")
    def _threshold_fits(self) -> VaultSettings:
        if self.threshold > self.shares:
            raise ValueError(f"threshold {self.threshold} is more than shares {self.shares}")
        return self


KeySourceName = Literal["files", "env", "prompt", "stdin", "aws-secretsmanager", "aws-ssm"]


class KeysSettings(_Model):
    """Where the ORIGINAL cluster's unseal shares and an optional DR token come from."""

    source: KeySourceName | None = None
    files: list[Path] = []
    token_file: Path | None = None
    env_prefix: str = pydantic.Field(default="DR_UNSEAL_KEY_", min_length=1)
    token_env: str = pydantic.Field(default="DR_VAULT_TOKEN", min_length=1)
    custodians: list[Annotated[str, pydantic.Field(min_length=1)]] = []
    shares_per_custodian: Annotated[int, pydantic.Field(ge=1, le=255)] = 1
    prompt_token: bool = False
    aws_secret_id: str | None = None
    aws_parameter_path: Annotated[str, pydantic.Field(pattern=r"^/")] | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    # Where `dr bootstrap` hands a new Vault's shares and root token: files under <state_dir>/keys/ (mode 0600),
    # the Secrets Manager secret `aws_secret_id`, or printed once (PGP-encrypted with `pgp_keys`).
    sink: Literal["files", "aws-secretsmanager", "print"] = "files"
    pgp_keys: list[Path] = []
    root_token_pgp_key: Path | None = None

    @pydantic.model_validator(mode="after")
    def _source_has_what_it_needs(self) -> KeysSettings:
        if self.source == "aws-secretsmanager" and not self.aws_secret_id:
            raise ValueError("source aws-secretsmanager needs aws_secret_id")
        if self.source == "aws-ssm" and not self.aws_parameter_path:
            raise ValueError("source aws-ssm needs aws_parameter_path")
        if self.sink == "aws-secretsmanager" and not self.aws_secret_id:
            raise ValueError("sink aws-secretsmanager needs aws_secret_id")
        if self.sink == "print" and not self.pgp_keys:
            raise ValueError("sink print needs pgp_keys: shares are printed only PGP-encrypted")
        return self


class SnapshotSettings(_Model):
    """Where snapshots go, how long they are kept, and how the nightly job reports."""

    store: str = "./snapshots"
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_kms_key_id: str | None = None
    s3_object_lock_days: Annotated[int, pydantic.Field(ge=1)] | None = None
    s3_object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    canary_path: str | None = None
    keep_last: Annotated[int, pydantic.Field(ge=0)] = 7
    keep_daily: Annotated[int, pydantic.Field(ge=0)] = 7
    keep_weekly: Annotated[int, pydantic.Field(ge=0)] = 4
    keep_monthly: Annotated[int, pydantic.Field(ge=0)] = 6
    min_age: Duration = 3600.0
    metrics_textfile: Path | None = None
    pushgateway: str | None = None
    stale_after: Duration = 26 * 3600.0
    image: str = f"ghcr.io/dr-project/dr:{__version__}"  # the published name; `make image` prints the digest to pin
    namespace: str = "vault-admin"

    @pydantic.model_validator(mode="after")
    def _kms_needs_a_key(self) -> SnapshotSettings:
        if self.s3_sse == "aws:kms" and not self.s3_kms_key_id:
            raise ValueError("s3_sse aws:kms needs s3_kms_key_id")
        return self


class TargetSettings(_Model):
    """Recovery objectives every recover and drill report is judged against."""

    rto: Duration = 900.0
    rpo: Duration = 86400.0


class DrillSettings(_Model):
    """What a game-day drill writes, checks and reports."""

    abort_after: Annotated[float, pydantic.Field(gt=1, le=100)] = 3.0  # a multiple of the target RTO
    canaries: Annotated[int, pydantic.Field(ge=1, le=100)] = 3  # written before the snapshot, and as many after
    canary_prefix: str = pydantic.Field(default="dr-drill", pattern=r"^[A-Za-z0-9][-_A-Za-z0-9/]*$")
    kv_mount: str = "secret"
    secret_store: str = "vault-backend"  # noqa: S105 - the name of ESO's store, not a password
    secret_store_kind: Literal["ClusterSecretStore", "SecretStore"] = "ClusterSecretStore"  # noqa: S105
    canary_namespace: str = "workloads"
    report_dir: Path | None = None
    metrics_textfile: Path | None = None
    pushgateway: str | None = None
    overdue_after: Duration = 8 * 86400.0  # the alert: no passing drill for this long


class StepSettings(_Model):
    """Per-step overrides of the step's own timeout and retry attempts."""

    timeout: Duration | None = None
    attempts: Annotated[int, pydantic.Field(ge=1, le=100)] | None = None


class Config(_Model):
    """The whole configuration; every field is documented in the README."""

    state_dir: Path = Path(".dr")
    log_format: Literal["auto", "console", "json"] = "auto"
    cluster: ClusterSettings = ClusterSettings()
    vault: VaultSettings = VaultSettings()
    keys: KeysSettings = KeysSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    platform: PlatformSettings = PlatformSettings()
    targets: TargetSettings = TargetSettings()
    drills: DrillSettings = DrillSettings()
    steps: dict[str, StepSettings] = {}

    _source: Path | None = pydantic.PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this configuration was read from, if any."""
        return self._source


def vault_addresses(config: Config, env: Mapping[str, str] | None = None) -> list[str]:
    """Configured node addresses, else `BAO_ADDR`, else `VAULT_ADDR` (the ecosystem's conventions)."""
    environ = os.environ if env is None else env
    if config.vault.addresses:
        return list(config.vault.addresses)
    single = environ.get("BAO_ADDR") or environ.get("VAULT_ADDR")
    return [single] if single else []


def vault_ca_cert(config: Config, env: Mapping[str, str] | None = None) -> str | None:
    """`vault.ca_cert`, else `BAO_CACERT`, else `VAULT_CACERT`."""
    environ = os.environ if env is None else env
    if config.vault.ca_cert:
        return str(config.vault.ca_cert)
    return environ.get("BAO_CACERT") or environ.get("VAULT_CACERT") or None


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[leaf] = value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise errors.ConfigError(
                f"{path}: file is {size} bytes; a dr config is at most {MAX_FILE_BYTES}",
                runbook=RUNBOOK,
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise errors.ConfigError(
            f"{path}: config file not found",
            hint="pass an existing file with --config or DR_CONFIG, or remove the setting to use defaults",
            runbook=RUNBOOK,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"{path}: cannot read config file: {exc}", runbook=RUNBOOK) from exc
    try:
        data = safeyaml.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise errors.ConfigError(
            f"{path}: invalid YAML at {where}: {exc.problem}",
            hint="fix the YAML syntax at that position",
            runbook=RUNBOOK,
        ) from exc
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"{path}: invalid YAML: {exc}", runbook=RUNBOOK) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errors.ConfigError(
            f"{path}: the top level must be a mapping of settings, not a {type(data).__name__}",
            runbook=RUNBOOK,
        )
    return data


def _origin(loc: tuple[int | str, ...], origins: Mapping[str, str], default: str) -> str:
    parts = [str(p) for p in loc]
    for n in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:n]))
        if found:
            return found
    return default


def _field(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[str, Any]] | None = None,
) -> Config:
    """Read, merge and validate the configuration.

    `path` is the ``--config`` flag; without it ``DR_CONFIG`` and then
    ``./dr.yaml`` are tried (a missing ``./dr.yaml`` means defaults, a missing
    file that was asked for is an error). `flags` maps a dotted field to
    ``(flag name, value)``; ``None`` values are ignored.
    """
    environ = os.environ if env is None else env
    chosen = path if path is not None else environ.get("DR_CONFIG") or None
    file_path = Path(chosen) if chosen else Path(DEFAULT_FILE)
    raw: dict[str, Any] = {}
    source: Path | None = None
    if chosen or file_path.exists():
        raw = _read_file(file_path)
        source = file_path
    file_label = str(file_path) if source else "defaults"
    origins: dict[str, str] = {}
    for var, dotted in ENV_VARS.items():
        if environ.get(var):
            _set(raw, dotted, environ[var])
            origins[dotted] = f"environment variable {var}"
    for dotted, (flag, value) in (flags or {}).items():
        if value is not None:
            _set(raw, dotted, value)
            origins[dotted] = f"option {flag}"
    try:
        config = Config.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            where = _origin(loc, origins, file_label)
            message = "unknown field (check its spelling)" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: field `{_field(loc)}`: {message}")
        first, *rest = problems
        more = "".join(f"\n  {p}" for p in rest)
        raise errors.ConfigError(
            first + more,
            hint="fix the field named above; every field is listed in the README's Configuration section",
            runbook=RUNBOOK,
        ) from None
    config._source = source
    return config
