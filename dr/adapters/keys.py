"""Key sources: where the ORIGINAL cluster's unseal shares (and an optional DR token) come from.

A restored Vault opens only with the shares of the cluster the snapshot was
taken from, and those live wherever the organisation keeps them: files on a
custodian's laptop, environment variables in a CI secret, people typing them
at a prompt, a pipe from a password manager, or AWS Secrets Manager / SSM
Parameter Store. Every source returns `Secret` shares, asks or reads once per
run, and says exactly what is missing when it cannot deliver.

Key sinks are the other direction, for `dr bootstrap`: where a NEW Vault's
shares and root token go the moment `sys/init` returns them (files, Secrets
Manager, or printed once PGP-encrypted), each readable back by a source.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from dr import errors, files, secret
from dr.adapters import aws

RUNBOOK = "runbooks/vault-unseal.md"


class KeySource(Protocol):
    """Supplies unseal shares and, optionally, a DR token."""

    description: str

    def shares(self) -> list[secret.Secret]: ...

    def token(self) -> secret.Secret | None: ...


def _config_error(message: str, hint: str) -> errors.ConfigError:
    return errors.ConfigError(message, hint=hint, runbook=RUNBOOK)


def read_private_file(path: Path, *, what: str, private: bool = True) -> secret.Secret:
    """One secret value from a file that only its owner can read.

    `private=False` is for files whose mode another system sets, such as a
    projected service-account token (0644 inside the pod, by design).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _config_error(f"{what} {path} does not exist", "check the path (keys.files or --key-file)") from None
    except OSError as exc:
        raise _config_error(f"cannot read {what} {path}: {exc.strerror}", "check the path and permissions") from exc
    if not stat.S_ISREG(info.st_mode):
        raise _config_error(f"{what} {path} is not a regular file", "point at the file that holds the value")
    if private and info.st_mode & 0o077:
        raise _config_error(
            f"{what} {path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o})",
            f"a key file must be private: run `chmod 600 {path}`",
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    values = [line for line in lines if line]
    if not values:
        raise _config_error(f"{what} {path} is empty", "put the value on the file's first line")
    if len(values) > 1:
        raise _config_error(f"{what} {path} has {len(values)} lines", "put exactly one value in each file")
    return secret.Secret(values[0])


@dataclass
class FileKeys:
    """One share per file (mode 0600); the DR token in its own file."""

    paths: Sequence[Path]
    token_path: Path | None = None
    description: str = "files"

    def shares(self) -> list[secret.Secret]:
        if not self.paths:
            raise _config_error("no key files given", "pass --key-file (repeatable) or set keys.files in dr.yaml")
        return [read_private_file(Path(p), what="key file") for p in self.paths]

    def token(self) -> secret.Secret | None:
        return read_private_file(Path(self.token_path), what="token file") if self.token_path else None


@dataclass
class EnvKeys:
    """Shares in numbered variables (`DR_UNSEAL_KEY_1`, `_2`, …); the token in another."""

    prefix: str = "DR_UNSEAL_KEY_"
    token_var: str = "DR_VAULT_TOKEN"  # noqa: S105 - the variable's name, not a token
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    description: str = "environment"

    def shares(self) -> list[secret.Secret]:
        numbered = []
        for name, value in self.environ.items():
            suffix = name[len(self.prefix) :] if name.startswith(self.prefix) else ""
            if suffix.isdigit() and value.strip():
                numbered.append((int(suffix), value.strip()))
        if not numbered:
            raise _config_error(
                f"no {self.prefix}<n> environment variables are set",
                f"export {self.prefix}1, {self.prefix}2, … with one share each",
            )
        return [secret.Secret(v) for _, v in sorted(numbered)]

    def token(self) -> secret.Secret | None:
        value = self.environ.get(self.token_var, "").strip()
        return secret.Secret(value) if value else None


def _tty_reader() -> Callable[[str], str]:
    """Read one line from the terminal without echo (getpass), refusing when there is no terminal."""
    import getpass

    def ask(prompt: str) -> str:
        try:
            with open("/dev/tty") as tty:  # noqa: PTH123 - a device, not a path we own
                if not tty.isatty():
                    raise OSError("not a terminal")
        except OSError:
            raise _config_error(
                "the prompt key source needs a terminal, and there is none",
                "use keys.source: stdin (a pipe), files or env when running without a terminal",
            ) from None
        return getpass.getpass(prompt)

    return ask


@dataclass
class PromptKeys:
    """Asks each custodian in turn for their share(s), without echo."""

    custodians: Sequence[str] = ("custodian 1", "custodian 2", "custodian 3")
    shares_each: int = 1
    ask_token: bool = False
    ask: Callable[[str], str] = field(default_factory=_tty_reader)
    description: str = "prompt"
    _shares: list[secret.Secret] | None = None
    _token: secret.Secret | None = None
    _token_asked: bool = False

    def shares(self) -> list[secret.Secret]:
        if self._shares is None:
            got: list[secret.Secret] = []
            total = len(self.custodians)
            for n, who in enumerate(self.custodians, start=1):
                for i in range(1, self.shares_each + 1):
                    part = f" share {i}/{self.shares_each}" if self.shares_each > 1 else " share"
                    value = self.ask(f"{who} ({n} of {total}), enter your unseal{part} (input hidden): ").strip()
                    if not value:
                        raise _config_error(f"{who} entered no share", "run the command again when they are ready")
                    got.append(secret.Secret(value))
            self._shares = got
        return list(self._shares)

    def token(self) -> secret.Secret | None:
        if self.ask_token and not self._token_asked:
            self._token_asked = True
            value = self.ask("DR token of the original cluster (Enter to skip, input hidden): ").strip()
            self._token = secret.Secret(value) if value else None
        return self._token


@dataclass
class StdinKeys:
    """Shares one per line from standard input (a pipe from a password manager); `token: …` for the token."""

    stream: TextIO = field(default_factory=lambda: sys.stdin)
    description: str = "stdin"
    _read: tuple[list[secret.Secret], secret.Secret | None] | None = None

    def _load(self) -> tuple[list[secret.Secret], secret.Secret | None]:
        if self._read is None:
            shares: list[secret.Secret] = []
            token: secret.Secret | None = None
            for raw in self.stream.read().splitlines():
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if line.lower().startswith("token:"):
                    token = secret.Secret(line.split(":", 1)[1].strip())
                else:
                    shares.append(secret.Secret(line))
            self._read = (shares, token)
        return self._read

    def shares(self) -> list[secret.Secret]:
        shares = self._load()[0]
        if not shares:
            raise _config_error("no shares on standard input", "pipe one share per line into dr")
        return list(shares)

    def token(self) -> secret.Secret | None:
        return self._load()[1]


@dataclass
class SecretsManagerKeys:
    """A Secrets Manager secret holding JSON: `{"shares": [...], "token": "..."}`.

    The JSON that `bao operator init -format=json` prints (`unseal_keys_b64`,
    `root_token`) is accepted as well, so an init output can be stored as is.
    """

    secret_id: str
    region: str | None = None
    endpoint_url: str | None = None
    description: str = "aws-secretsmanager"
    _data: dict[str, Any] | None = field(default=None, repr=False)  # raw values: never in a repr

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            what = f"Secrets Manager secret {self.secret_id}"
            with aws.mapped(f"read {what}", runbook=RUNBOOK):
                sm = aws.client("secretsmanager", region=self.region, endpoint_url=self.endpoint_url)
                reply = sm.get_secret_value(SecretId=self.secret_id)
            try:
                data = json.loads(reply.get("SecretString") or "")
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise _config_error(f"{what} is not a JSON object", 'store {"shares": ["…", "…"], "token": "…"}')
            self._data = data
        return self._data

    def shares(self) -> list[secret.Secret]:
        data = self._load()
        values = data.get("shares") or data.get("unseal_keys_b64") or data.get("keys_base64") or []
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise _config_error(
                f"Secrets Manager secret {self.secret_id} has no list of shares",
                'store {"shares": ["…", "…"]} (or the JSON of `bao operator init -format=json`)',
            )
        return [secret.Secret(v) for v in values]

    def token(self) -> secret.Secret | None:
        data = self._load()
        value = data.get("token") or data.get("root_token")
        return secret.Secret(value) if isinstance(value, str) and value else None


@dataclass
class SsmKeys:
    """SSM Parameter Store SecureStrings under a path: `<path>/share-1`, `<path>/share-2`, … and `<path>/token`."""

    path: str
    region: str | None = None
    endpoint_url: str | None = None
    description: str = "aws-ssm"
    _values: dict[str, str] | None = field(default=None, repr=False)  # raw values: never in a repr

    def _load(self) -> dict[str, str]:
        if self._values is None:
            values: dict[str, str] = {}
            with aws.mapped(f"read SSM parameters under {self.path}", runbook=RUNBOOK):
                ssm = aws.client("ssm", region=self.region, endpoint_url=self.endpoint_url)
                pages = ssm.get_paginator("get_parameters_by_path").paginate(
                    Path=self.path, WithDecryption=True, Recursive=False
                )
                for page in pages:
                    for param in page.get("Parameters", []):
                        values[param["Name"].rsplit("/", 1)[-1]] = param["Value"]
                        secret.register(param["Value"])
            self._values = values
        return self._values

    def shares(self) -> list[secret.Secret]:
        values = self._load()
        names = sorted((n for n in values if n != "token"), key=lambda n: (len(n), n))
        if not names:
            raise _config_error(
                f"no SSM parameters under {self.path}", f"put one SecureString per share under {self.path}/"
            )
        return [secret.Secret(values[n]) for n in names]

    def token(self) -> secret.Secret | None:
        value = self._load().get("token")
        return secret.Secret(value) if value else None


class KeySink(Protocol):
    """Where a NEW Vault's shares and root token go, once, the moment `sys/init` returns them."""

    description: str

    def save(self, shares: Sequence[secret.Secret], token: secret.Secret, *, encrypted: bool) -> str: ...

    def source(self) -> KeySource | None: ...


@dataclass
class FileSink:
    """One file per share and one for the root token, mode 0600 in a 0700 directory: the sandbox's sink."""

    directory: Path
    description: str = "files"

    def paths(self, count: int) -> list[Path]:
        return [self.directory / f"share-{i}" for i in range(1, count + 1)]

    def save(self, shares: Sequence[secret.Secret], token: secret.Secret, *, encrypted: bool) -> str:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        for path, share in zip(self.paths(len(shares)), shares, strict=True):
            files.write_atomic(path, share.reveal().encode() + b"\n", mode=0o600)
        files.write_atomic(self.directory / "root-token", token.reveal().encode() + b"\n", mode=0o600)
        return f"{len(shares)} shares and the root token in {self.directory} (mode 0600)"

    def source(self) -> KeySource | None:
        found = sorted(self.directory.glob("share-*"), key=lambda p: int(p.name.split("-")[1]))
        token = self.directory / "root-token"
        return FileKeys(found, token if token.exists() else None) if found else None


@dataclass
class SecretsManagerSink:
    """A Secrets Manager secret of `{"shares": [...], "token": "..."}`, what `SecretsManagerKeys` reads back."""

    secret_id: str
    region: str | None = None
    endpoint_url: str | None = None
    description: str = "aws-secretsmanager"

    def save(self, shares: Sequence[secret.Secret], token: secret.Secret, *, encrypted: bool) -> str:
        payload = json.dumps({"shares": [s.reveal() for s in shares], "token": token.reveal()})
        with aws.mapped(f"write Secrets Manager secret {self.secret_id}", runbook=RUNBOOK):
            sm = aws.client("secretsmanager", region=self.region, endpoint_url=self.endpoint_url)
            try:
                sm.put_secret_value(SecretId=self.secret_id, SecretString=payload)
            except sm.exceptions.ResourceNotFoundException:
                sm.create_secret(Name=self.secret_id, SecretString=payload)
        return f"{len(shares)} shares and the root token in Secrets Manager secret {self.secret_id}"

    def source(self) -> KeySource | None:
        return SecretsManagerKeys(self.secret_id, self.region, self.endpoint_url)


@dataclass
class PrintSink:
    """Printed once to the operator's terminal, PGP-encrypted per custodian: nothing is kept by dr."""

    write: Callable[[str], None]
    description: str = "print"

    def save(self, shares: Sequence[secret.Secret], token: secret.Secret, *, encrypted: bool) -> str:
        if not encrypted:
            raise errors.PermanentError("refusing to print unencrypted shares", hint="set keys.pgp_keys")
        for i, share in enumerate(shares, start=1):
            self.write(f"share {i} (PGP-encrypted, base64): {share.reveal()}")
        self.write(f"root token (PGP-encrypted, base64): {token.reveal()}")
        return f"{len(shares)} PGP-encrypted shares and the root token printed once; dr keeps no copy"

    def source(self) -> KeySource | None:
        return None
