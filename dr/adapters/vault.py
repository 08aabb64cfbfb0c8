"""Vault/OpenBao adapter: one client per node, and the cluster-level moves a recovery makes.

Recovery talks to every Vault node by its own address (a pod IP or a
port-forward), because seal state, health and Raft role are per node and a
restore must go to the active node only. hvac does the HTTP; this module
adds what the recovery needs on top and owns the one place where hvac and
requests exceptions become `dr.errors`:

* connection errors, timeouts, 429, 5xx and "sealed"/"not initialised" during
  elections → `TransientError` (retry);
* 400/403/404/405 → `PermanentError` carrying the server's own message.

Secrets (shares, tokens, OTPs) travel only as `Secret` objects and are
revealed at the moment they are put on the wire.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, Protocol

from dr import errors, logs, secret, waiting
from dr.adapters import raft_archive

if TYPE_CHECKING:
    import hvac.exceptions
    import requests

# hvac and requests are imported where a node is first called, not here: `dr --help`, `dr plan`
# and `dr snapshot list` on a file store never talk to Vault and start faster without them.

DEFAULT_TIMEOUT: Final = 30.0
# hvac's 30 s default cuts large snapshots off; this is a read-inactivity timeout, not a total.
SNAPSHOT_TIMEOUT: Final = 3600.0
RUNBOOK_UNSEAL: Final = "runbooks/vault-unseal.md"
RUNBOOK_RESTORE: Final = "runbooks/raft-restore.md"
GENERATE_ROOT_SETTING: Final = "disable_unauthed_generate_root_endpoints = false"

log = logs.get("dr.vault")

Role = Literal["active", "standby", "sealed", "uninitialized", "unreachable", "unknown"]
_ROLE_BY_HEALTH: Final[dict[int, Role]] = {200: "active", 429: "standby", 501: "uninitialized", 503: "sealed"}


def _server_message(exc: hvac.exceptions.VaultError) -> str:
    found = exc.errors if isinstance(exc.errors, list) and exc.errors else [str(exc).split(", on ")[0]]
    return "; ".join(str(e) for e in found) or type(exc).__name__


@contextlib.contextmanager
def mapped(
    address: str, action: str, *, runbook: str | None = None, forbidden_hint: str | None = None
) -> Iterator[None]:
    """Translate hvac/requests exceptions raised while doing `action` on `address`."""
    import hvac.exceptions
    import requests

    try:
        yield
    except hvac.exceptions.VaultError as exc:
        message = f"{address}: {action} failed: {_server_message(exc)}"
        transient = (
            hvac.exceptions.RateLimitExceeded,
            hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway,
            hvac.exceptions.VaultDown,
            hvac.exceptions.VaultNotInitialized,
        )
        if isinstance(exc, transient):
            raise errors.TransientError(message, runbook=runbook) from exc
        if isinstance(exc, hvac.exceptions.Forbidden):
            raise errors.PermanentError(
                message,
                hint=forbidden_hint
                or "the token lacks a policy for this path, or it belongs to another cluster (after a restore, "
                "only tokens of the ORIGINAL cluster work)",
                runbook=runbook,
            ) from exc
        raise errors.PermanentError(message, runbook=runbook) from exc
    except requests.exceptions.Timeout as exc:
        raise errors.TransientError(f"{address}: {action} timed out", runbook=runbook) from exc
    except requests.exceptions.SSLError as exc:
        raise errors.PermanentError(
            f"{address}: TLS verification failed during {action} (give the CA: VAULT_CACERT or vault.ca_cert)",
            hint="pass the Vault CA with VAULT_CACERT (or vault.ca_cert in dr.yaml)",
            runbook=runbook,
        ) from exc
    except requests.exceptions.ConnectionError as exc:
        raise errors.TransientError(f"{address}: cannot connect ({action})", runbook=runbook) from exc
    except requests.exceptions.RequestException as exc:
        raise errors.TransientError(f"{address}: {action} failed: {exc}", runbook=runbook) from exc


class Writable(Protocol):
    """Where a snapshot streams to: a file, or a store's upload."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class SealStatus:
    """`sys/seal-status` of one node."""

    initialized: bool
    sealed: bool
    threshold: int
    shares: int
    progress: int
    nonce: str
    version: str
    seal_type: str
    storage_type: str
    cluster_name: str | None = None
    cluster_id: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SealStatus:
        return cls(
            initialized=bool(data.get("initialized")),
            sealed=bool(data.get("sealed")),
            threshold=int(data.get("t") or 0),
            shares=int(data.get("n") or 0),
            progress=int(data.get("progress") or 0),
            nonce=str(data.get("nonce") or ""),
            version=str(data.get("version") or ""),
            seal_type=str(data.get("type") or ""),
            storage_type=str(data.get("storage_type") or ""),
            cluster_name=data.get("cluster_name"),
            cluster_id=data.get("cluster_id"),
        )


@dataclass(frozen=True)
class NodeState:
    """Everything `dr vault status` shows about one node; never raises to build."""

    address: str
    role: Role
    seal: SealStatus | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"address": self.address, "role": self.role, "error": self.error}
        if self.seal is not None:
            data.update(asdict(self.seal))
        return data


@dataclass(frozen=True)
class InitResult:
    """The output of `sys/init`: secret shares and root token, wrapped."""

    shares: tuple[secret.Secret, ...]
    root_token: secret.Secret
    threshold: int
    pgp_encrypted: bool


@dataclass
class ClusterHealth:
    """The cluster as a whole: every node, the Raft peers and autopilot, and what is wrong."""

    nodes: list[NodeState]
    active: str | None
    peers: list[dict[str, Any]] | None = None
    autopilot: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "active": self.active,
            "problems": list(self.problems),
            "nodes": [n.to_dict() for n in self.nodes],
            "raft_peers": self.peers,
            "autopilot": self.autopilot,
        }


def environment(name: str) -> str | None:
    """`BAO_<name>`, else `VAULT_<name>`: the bao CLI's variables, read by every node as the CLI reads them."""
    return os.environ.get(f"BAO_{name}") or os.environ.get(f"VAULT_{name}") or None


def tls_from_environment() -> str | bool:
    """What `requests` verifies a node's certificate with when no CA is configured: as the bao CLI does,
    `*_SKIP_VERIFY` (a boolean) turns verification off, else `*_CACERT` (a file) wins over `*_CAPATH` (a
    directory of hashed certificates), else the system's trust store."""
    skip = environment("SKIP_VERIFY")
    if skip is not None:
        if skip.lower() not in _BOOLEANS:
            variable = "BAO_SKIP_VERIFY" if os.environ.get("BAO_SKIP_VERIFY") else "VAULT_SKIP_VERIFY"
            raise errors.ConfigError(
                f"{variable}={skip!r} is not a boolean", hint="use true or false (1 or 0), as the bao CLI does"
            )
        if _BOOLEANS[skip.lower()]:
            _warn_unverified()
            return False
    return environment("CACERT") or environment("CAPATH") or True


_BOOLEANS: Final = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


@functools.cache
def _warn_unverified() -> None:
    """Once a process, rather than for every node object or (urllib3's) every request."""
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    log.warning("vault_tls_unverified", reason="BAO_SKIP_VERIFY/VAULT_SKIP_VERIFY is set")


class VaultNode:
    """One Vault/OpenBao node's API."""

    def __init__(
        self,
        address: str,
        *,
        token: secret.Secret | None = None,
        ca_cert: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        snapshot_timeout: float = SNAPSHOT_TIMEOUT,
    ) -> None:
        self.address = address.rstrip("/")
        self.ca_cert = ca_cert
        self.timeout = timeout
        self.snapshot_timeout = snapshot_timeout
        self.token = token
        verify = ca_cert or tls_from_environment()
        namespace = environment("NAMESPACE")
        import hvac
        import requests

        session = requests.Session()
        session.verify = verify
        raw_token = token.reveal() if token else None
        self._client = hvac.Client(
            url=self.address, token=raw_token, verify=verify, timeout=timeout, session=session, namespace=namespace
        )
        # hvac's JSON adapter reads a whole 200 body to try it as JSON, which would hold a
        # snapshot in memory; the raw adapter hands back the response untouched.
        self._raw = hvac.adapters.RawAdapter(
            base_uri=self.address, token=raw_token, verify=verify, timeout=timeout, session=session, namespace=namespace
        )

    def __repr__(self) -> str:
        return f"VaultNode({self.address!r})"

    def with_token(self, token: secret.Secret | None) -> VaultNode:
        return VaultNode(
            self.address,
            token=token,
            ca_cert=self.ca_cert,
            timeout=self.timeout,
            snapshot_timeout=self.snapshot_timeout,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A raw call, for endpoints hvac does not wrap and for streams."""
        response: requests.Response = self._raw.request(method, path, **kwargs)
        return response

    def _api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A raw call whose reply is JSON (or empty, for 204)."""
        response = self._call(method, path, **kwargs)
        return dict(response.json()) if response.content else {}

    # -- state ------------------------------------------------------------------------

    def seal_status(self) -> SealStatus:
        with mapped(self.address, "reading seal status"):
            return SealStatus.from_api(self._client.sys.read_seal_status())

    def health_code(self) -> int:
        """`sys/health`'s status code: 200 active, 429 standby, 501 not initialised, 503 sealed."""
        with mapped(self.address, "reading health"):
            response = self._call("GET", "/v1/sys/health", raise_exception=False)
        return int(response.status_code)

    def state(self) -> NodeState:
        """Role and seal status; an unreachable node is reported, not raised."""
        try:
            code = self.health_code()
            seal = self.seal_status()
        except errors.DRError as exc:
            return NodeState(self.address, "unreachable", error=str(exc))
        return NodeState(self.address, _ROLE_BY_HEALTH.get(code, "unknown"), seal)

    def leader(self) -> dict[str, Any]:
        with mapped(self.address, "reading sys/leader"):
            return dict(self._client.sys.read_leader_status())

    def is_active(self) -> bool:
        return bool(self.leader().get("is_self"))

    def raft_peers(self) -> list[dict[str, Any]]:
        with mapped(self.address, "reading the Raft configuration"):
            data = self._client.sys.read_raft_config()
        return list(data["data"]["config"]["servers"])

    def autopilot_state(self) -> dict[str, Any]:
        with mapped(self.address, "reading the autopilot state"):
            data = self._api("GET", "/v1/sys/storage/raft/autopilot/state")
        return dict(data.get("data", data))

    # -- init, unseal, join ------------------------------------------------------------

    def init(
        self,
        shares: int,
        threshold: int,
        *,
        pgp_keys: Sequence[str] | None = None,
        root_token_pgp_key: str | None = None,
    ) -> InitResult:
        """`sys/init`; with PGP keys the shares come back encrypted to those keys."""
        if pgp_keys is not None and len(pgp_keys) != shares:
            raise errors.ConfigError(f"{len(pgp_keys)} PGP keys given for {shares} shares; give one per share")
        with mapped(self.address, "initialising", runbook=RUNBOOK_UNSEAL):
            data = self._client.sys.initialize(
                secret_shares=shares,
                secret_threshold=threshold,
                pgp_keys=list(pgp_keys) if pgp_keys else None,
                root_token_pgp_key=root_token_pgp_key,
            )
        result = InitResult(
            shares=tuple(secret.Secret(k) for k in data["keys_base64"]),
            root_token=secret.Secret(data["root_token"]),
            threshold=threshold,
            pgp_encrypted=bool(pgp_keys),
        )
        # The hex spellings are the same keys; register them so they are scrubbed too.
        for key in data.get("keys", []):
            secret.register(key)
        log.info("vault_initialised", address=self.address, shares=shares, threshold=threshold)
        return result

    def submit_share(self, share: secret.Secret) -> SealStatus:
        with mapped(self.address, "submitting an unseal share", runbook=RUNBOOK_UNSEAL):
            return SealStatus.from_api(self._client.sys.submit_unseal_key(key=share.reveal()))

    def reset_unseal(self) -> SealStatus:
        with mapped(self.address, "resetting unseal progress", runbook=RUNBOOK_UNSEAL):
            return SealStatus.from_api(self._client.sys.submit_unseal_key(reset=True))

    def unseal(
        self, shares: Sequence[secret.Secret], *, settle_timeout: float = 60.0, join_timeout: float = 0.0
    ) -> SealStatus:
        """Unseal this node with `shares`; returns the final seal status.

        Progress left by an earlier attempt is reset first (those shares
        cannot be vouched for). A duplicate share is skipped. A share that
        makes the combine fail raises `PermanentError` naming the node, and
        the server has reset progress to 0, so a later call starts clean.
        A follower that accepted the key reports `sealed` for a few seconds
        while it joins Raft: that is waited for, not retried. A follower
        reports "not initialised" until `retry_join` reaches the leader: with
        `join_timeout`, that is waited for too.
        """
        status = self.seal_status()
        if not status.initialized and join_timeout > 0:

            def joined() -> SealStatus | waiting.Pending:
                current = self.seal_status()
                return current if current.initialized else waiting.Pending("not initialised yet")

            status = waiting.wait_until(
                joined,
                what=f"{self.address} to join the Raft cluster (retry_join)",
                timeout=join_timeout,
                interval=0.2,
                runbook=RUNBOOK_UNSEAL,
            )
        if not status.initialized:
            raise errors.PermanentError(
                f"{self.address}: cannot unseal: Vault is not initialised",
                hint="initialise one node first; the others join it through retry_join",
                runbook=RUNBOOK_UNSEAL,
            )
        if not status.sealed:
            return status
        if status.progress:
            log.warning("unseal_progress_reset", address=self.address, progress=status.progress)
            status = self.reset_unseal()
        accepted = False
        for number, share in enumerate(shares, start=1):
            before = status.progress
            try:
                status = self.submit_share(share)
            except errors.PermanentError as exc:
                raise self._unseal_failure(exc, number, status) from exc
            if not status.sealed:
                break
            if status.progress == before and before:
                log.warning("unseal_share_duplicate", address=self.address, share_number=number)
                continue
            if status.progress == 0 and before == status.threshold - 1:
                accepted = True
                break
        if status.sealed and accepted:
            status = self._await_unsealed(settle_timeout)
        if status.sealed:
            raise errors.PermanentError(
                f"{self.address}: still sealed after {len(shares)} share(s): progress "
                f"{status.progress}/{status.threshold}",
                hint=f"give at least {status.threshold} distinct shares of this cluster",
                runbook=RUNBOOK_UNSEAL,
            )
        log.info("vault_unsealed", address=self.address)
        return status

    def _unseal_failure(self, exc: errors.PermanentError, number: int, before: SealStatus) -> errors.DRError:
        text = exc.message
        if "invalid key size" in text:
            return errors.SealConfigStale(
                f"{self.address}: unseal share {number} was refused: this node still has the seal configuration "
                f"of before the restore (t={before.threshold}, n={before.shares})",
                hint="restart this Vault pod so that it reads the restored seal configuration, then unseal "
                "again with the ORIGINAL cluster's shares",
                runbook=RUNBOOK_RESTORE,
            )
        try:
            progress = self.seal_status().progress
        except errors.DRError:
            progress = -1
        where = "progress was reset to 0" if progress == 0 else f"progress is {progress}"
        return errors.PermanentError(
            f"{self.address}: unseal share {number} was refused ({text.split(': ', 1)[-1]}); {where}",
            hint="one of the shares is wrong, mistyped or from another cluster; nothing else changed, "
            "so unseal again with correct shares",
            runbook=RUNBOOK_UNSEAL,
        )

    def _await_unsealed(self, timeout: float) -> SealStatus:
        def probe() -> SealStatus | waiting.Pending:
            status = self.seal_status()
            return status if not status.sealed else waiting.Pending("key accepted; joining the Raft cluster")

        return waiting.wait_until(probe, what=f"{self.address} to finish unsealing", timeout=timeout, interval=0.2)

    def join(self, leader_api_addr: str) -> None:
        """Ask an uninitialised node to join the Raft cluster led by `leader_api_addr`."""
        with mapped(self.address, f"joining the Raft cluster at {leader_api_addr}", runbook=RUNBOOK_UNSEAL):
            self._client.sys.join_raft_cluster(leader_api_addr=leader_api_addr)

    # -- snapshots ----------------------------------------------------------------------

    def snapshot(self, out: Writable, *, chunk_size: int = 1 << 20) -> raft_archive.SnapshotInfo:
        """Stream a Raft snapshot into `out`, proving it complete on the way.

        Raises `SnapshotError` for a cut-off or empty stream (the HTTP status is
        200 either way) after writing what arrived: the caller must discard it.
        """
        archive = raft_archive.BackgroundCheck()
        with contextlib.ExitStack() as stack:
            stack.callback(archive.close)
            self._stream_snapshot(archive, out, chunk_size)
            return archive.finish()

    def _stream_snapshot(self, archive: raft_archive.BackgroundCheck, out: Writable, chunk_size: int) -> None:
        import urllib3

        with mapped(self.address, "taking a Raft snapshot"):
            response = self._call("GET", "/v1/sys/storage/raft/snapshot", stream=True, timeout=self.snapshot_timeout)
            try:
                # The server sends HTTP chunks of about 32 KiB, and `iter_content` hands each one over as it
                # is; urllib3's own `read(n)` fills n bytes across them, so that the hash, the archive check's
                # queue and the store's write each run once per MiB rather than 32 times as often.
                while chunk := response.raw.read(chunk_size, decode_content=True):
                    archive.feed(chunk)
                    out.write(chunk)
            except urllib3.exceptions.HTTPError as exc:  # a broken chunk, a read timeout, the peer gone
                raise errors.SnapshotError(f"{self.address}: snapshot stream was cut off: {exc}") from exc
            finally:
                response.close()

    def force_restore(self, source: BinaryIO) -> None:
        """Send a snapshot to `snapshot-force` on this node, which must be the active node.

        A standby answers 204, fails in the background and seals itself, so
        the role is checked first and a standby is refused before anything
        is sent. The restore then runs in the background: see
        `VaultCluster.restore`. `source` is consumed: to retry, reopen it.
        """
        leader = self.leader()
        if not leader.get("is_self"):
            raise errors.PermanentError(
                f"{self.address}: refusing to restore to a standby node "
                f"(the active node is {leader.get('leader_address') or 'unknown'})",
                hint="send the restore to the active node only; a standby would fail and seal itself",
                runbook=RUNBOOK_RESTORE,
            )
        try:
            with mapped(self.address, "force-restoring a Raft snapshot", runbook=RUNBOOK_RESTORE):
                self._call("POST", "/v1/sys/storage/raft/snapshot-force", data=source, timeout=self.snapshot_timeout)
        except errors.TransientError as exc:
            # The server answers 500 when the archive fails its own SHA256SUMS check: not worth a retry.
            if "integrity" in exc.message or "hash check failed" in exc.message:
                raise errors.SnapshotError(exc.message, runbook=RUNBOOK_RESTORE) from exc
            raise
        log.info("vault_restore_sent", address=self.address)

    # -- tokens -------------------------------------------------------------------------

    def generate_root(self, shares: Sequence[secret.Secret]) -> secret.Secret:
        """A new root token from key shares (OTP flow). Revoke it when done."""
        import hvac.exceptions

        with mapped(self.address, "starting root token generation", runbook=RUNBOOK_RESTORE):
            try:
                progress = self._api("GET", "/v1/sys/generate-root/attempt")
            except hvac.exceptions.UnexpectedError as exc:
                if "unsupported operation" in str(exc) or "405" in str(exc):
                    raise self._generate_root_disabled() from exc
                raise
            except hvac.exceptions.UnsupportedOperation as exc:
                raise self._generate_root_disabled() from exc
            if progress.get("started"):
                # An attempt with an OTP we do not have cannot be finished by us.
                self._api("DELETE", "/v1/sys/generate-root/attempt")
            attempt = self._api("PUT", "/v1/sys/generate-root/attempt", json={})
        otp = secret.Secret(attempt["otp"])
        nonce = attempt["nonce"]
        result: dict[str, Any] = {}
        for number, share in enumerate(shares, start=1):
            try:
                with mapped(self.address, f"submitting share {number} to generate-root", runbook=RUNBOOK_RESTORE):
                    result = self._api(
                        "PUT", "/v1/sys/generate-root/update", json={"key": share.reveal(), "nonce": nonce}
                    )
            except errors.PermanentError:
                with contextlib.suppress(errors.DRError), mapped(self.address, "cancelling generate-root"):
                    self._api("DELETE", "/v1/sys/generate-root/attempt")
                raise
            if result.get("complete"):
                break
        if not result.get("complete"):
            with contextlib.suppress(errors.DRError), mapped(self.address, "cancelling generate-root"):
                self._api("DELETE", "/v1/sys/generate-root/attempt")
            raise errors.PermanentError(
                f"{self.address}: generate-root needs {attempt.get('required')} shares; {len(shares)} given",
                runbook=RUNBOOK_RESTORE,
            )
        token = secret.Secret(_decode_root_token(result["encoded_token"], otp))
        log.info("vault_root_token_generated", address=self.address)
        return token

    def _generate_root_disabled(self) -> errors.PermanentError:
        return errors.PermanentError(
            f"{self.address}: generate-root is disabled on this listener (405; OpenBao ≥ 2.5.3 turns the "
            "unauthenticated endpoints off by default)",
            hint=f"set `{GENERATE_ROOT_SETTING}` in the listener stanza and restart, or supply a DR token "
            "of the original cluster through the key source",
            runbook=RUNBOOK_RESTORE,
        )

    def revoke_self(self) -> None:
        """Revoke this client's own token (a generated root token, at the end of a restore)."""
        with mapped(self.address, "revoking a token"):
            self._client.auth.token.revoke_self()

    def login_kubernetes(self, role: str, jwt: secret.Secret, mount: str = "kubernetes") -> secret.Secret:
        """A token from Kubernetes auth, with a service-account JWT (the snapshot CronJob's)."""
        hint = (
            f"check the role's bound service account and namespace (`bao read auth/{mount}/role/{role}`), and "
            f"that auth/{mount}/config points at this cluster's API with its CA"
        )
        with mapped(self.address, f"logging in through auth/{mount} as role {role}", forbidden_hint=hint):
            reply = self._api("POST", f"/v1/auth/{mount}/login", json={"role": role, "jwt": jwt.reveal()})
        return secret.Secret(reply["auth"]["client_token"])

    def login_approle(self, role_id: secret.Secret, secret_id: secret.Secret, mount: str = "approle") -> secret.Secret:
        """A token from AppRole auth."""
        with mapped(self.address, f"logging in through auth/{mount}"):
            reply = self._api(
                "POST", f"/v1/auth/{mount}/login", json={"role_id": role_id.reveal(), "secret_id": secret_id.reveal()}
            )
        return secret.Secret(reply["auth"]["client_token"])

    def read(self, path: str) -> dict[str, Any] | None:
        """`GET /v1/<path>`'s `data`, or None when nothing is there (a canary check; values are not logged)."""
        import hvac.exceptions

        with mapped(self.address, f"reading {path}"):
            try:
                response = self._call("GET", f"/v1/{path.lstrip('/')}")
            except hvac.exceptions.InvalidPath:
                return None
            data = response.json().get("data")
        return data if isinstance(data, dict) else None

    def write(self, path: str, data: dict[str, Any], *, method: str = "POST") -> dict[str, Any]:
        """`POST /v1/<path>` (policies, mounts, roles, KV data); the reply's JSON. Values are not logged."""
        with mapped(self.address, f"writing {path}"):
            return self._api(method, f"/v1/{path.lstrip('/')}", json=data)

    def mounted(self, kind: Literal["mounts", "auth"]) -> set[str]:
        """The paths of enabled secrets engines (`mounts`) or auth methods (`auth`), without the trailing slash."""
        with mapped(self.address, f"listing sys/{kind}"):
            reply = self._api("GET", f"/v1/sys/{kind}")
        data = reply.get("data")
        table: dict[str, Any] = data if isinstance(data, dict) else reply
        return {key.rstrip("/") for key, value in table.items() if isinstance(value, dict) and "type" in value}

    def lookup_self(self) -> dict[str, Any]:
        with mapped(self.address, "looking up the token"):
            data = self._client.auth.token.lookup_self()
        return {k: v for k, v in data["data"].items() if k not in ("id", "accessor")}

    # -- Kubernetes auth ------------------------------------------------------------------

    def read_kubernetes_auth(self, mount: str = "kubernetes") -> dict[str, Any]:
        with mapped(self.address, f"reading auth/{mount}/config"):
            data = self._api("GET", f"/v1/auth/{mount}/config")
        return dict(data["data"])

    def write_kubernetes_auth(self, config: dict[str, Any], mount: str = "kubernetes") -> None:
        """Write `auth/<mount>/config`. The write REPLACES the whole config: pass every field."""
        with mapped(self.address, f"writing auth/{mount}/config", runbook=RUNBOOK_RESTORE):
            self._api("POST", f"/v1/auth/{mount}/config", json=config)
        log.info("vault_kubernetes_auth_written", address=self.address, mount=mount, host=config.get("kubernetes_host"))


def _decode_root_token(encoded: str, otp: secret.Secret) -> str:
    """The root token from generate-root: base64 (padding dropped) XOR the OTP's bytes."""
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    key = otp.reveal().encode()
    if len(raw) != len(key):
        raise errors.PermanentError("generate-root returned a token whose length does not match the OTP")
    return bytes(a ^ b for a, b in zip(raw, key, strict=True)).decode()


class VaultCluster:
    """All the nodes of one Vault cluster, by address."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        token: secret.Secret | None = None,
        ca_cert: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        snapshot_timeout: float = SNAPSHOT_TIMEOUT,
    ) -> None:
        if not addresses:
            raise errors.ConfigError(
                "no Vault address given",
                hint="set VAULT_ADDR (or BAO_ADDR), vault.addresses in dr.yaml, or pass --address",
            )
        self.nodes = [
            VaultNode(a, token=token, ca_cert=ca_cert, timeout=timeout, snapshot_timeout=snapshot_timeout)
            for a in addresses
        ]

    def node(self, address: str) -> VaultNode:
        for n in self.nodes:
            if n.address == address.rstrip("/"):
                return n
        raise errors.ConfigError(f"{address} is not one of this cluster's nodes")

    def states(self) -> list[NodeState]:
        return [n.state() for n in self.nodes]

    def active(self) -> VaultNode:
        """The node whose `sys/leader` says `is_self`; TransientError during an election."""
        seen: list[str] = []
        for node in self.nodes:
            try:
                leader = node.leader()
            except errors.DRError as exc:
                seen.append(str(exc))
                continue
            if leader.get("is_self"):
                return node
            address = str(leader.get("leader_address") or "").rstrip("/")
            if address:
                with contextlib.suppress(errors.ConfigError):
                    candidate = self.node(address)
                    if candidate.is_active():
                        return candidate
        unreachable = len(seen) == len(self.nodes)
        raise errors.TransientError(
            "no active Vault node" + (f" ({'; '.join(seen)})" if seen else ""),
            hint=(
                "no node answers: check the addresses (vault.addresses, BAO_ADDR/VAULT_ADDR) and the port-forward"
                if unreachable
                else "an election may be running, or every node is sealed: see `dr vault status`"
            ),
            runbook=RUNBOOK_UNSEAL,
        )

    def await_active(self, *, timeout: float = 30.0) -> VaultNode:
        """The active node, waiting through an election (a few seconds) before giving up."""
        try:
            return waiting.wait_until(self.active, what="an active Vault node", timeout=timeout, interval=0.5)
        except errors.DeadlineExceeded:
            return self.active()  # raise the last, specific error: unreachable, or sealed/electing

    def unseal_all(
        self, shares: Sequence[secret.Secret], *, settle_timeout: float = 60.0, join_timeout: float = 60.0
    ) -> list[SealStatus]:
        """Unseal every node in order, waiting for followers to join; the first failure names its node."""
        return [node.unseal(shares, settle_timeout=settle_timeout, join_timeout=join_timeout) for node in self.nodes]

    def health(self, *, with_token: bool = True) -> ClusterHealth:
        """Every node's state, plus Raft peers and autopilot when a token is at hand."""
        states = self.states()
        active = [s.address for s in states if s.role == "active"]
        problems = [
            f"{s.address}: {s.role}" + (f" ({s.error})" if s.error else "")
            for s in states
            if s.role not in ("active", "standby")
        ]
        if len(active) != 1 and not problems:
            problems.append(f"{len(active)} active nodes (expected exactly 1)")
        health = ClusterHealth(nodes=states, active=active[0] if len(active) == 1 else None, problems=problems)
        token_node = next((n for n in self.nodes if n.address in active), None)
        if token_node is None or token_node.token is None or not with_token:
            return health
        try:
            health.peers = token_node.raft_peers()
            health.autopilot = token_node.autopilot_state()
        except errors.DRError as exc:
            health.problems.append(f"cannot read Raft state: {exc}")
            return health
        if not health.autopilot.get("healthy"):
            health.problems.append("autopilot reports the cluster unhealthy")
        servers = health.autopilot.get("servers", {})
        not_voting = sorted(n for n, srv in servers.items() if srv.get("status") not in ("leader", "voter"))
        if not_voting:
            health.problems.append(f"not yet Raft voters: {', '.join(not_voting)}")
        return health

    def await_healthy(
        self, *, timeout: float = 120.0, cancel: Any = None, progress: Callable[[waiting.Progress], None] | None = None
    ) -> ClusterHealth:
        """Wait until `health()` has no problems (all unsealed, one active, every node a voter)."""

        def probe() -> ClusterHealth | waiting.Pending:
            health = self.health()
            return health if health.healthy else waiting.Pending("; ".join(health.problems))

        return waiting.wait_until(
            probe,
            what="a healthy Vault cluster",
            timeout=timeout,
            interval=0.5,
            cancel=cancel,
            progress=progress,
            runbook=RUNBOOK_UNSEAL,
        )

    def restore(
        self, source: BinaryIO, *, quiet: float = 3.0, stuck_after: float = 10.0, timeout: float = 300.0
    ) -> list[NodeState]:
        """Force-restore `source` on the active node and wait for the cluster to settle.

        Returns every node's state as the servers report it. On a Shamir seal
        the nodes seal themselves about a second after the restored data is
        live, but once one stayed unsealed, so nothing is assumed: a node has
        settled when it is sealed, or when it has served the restored cluster's
        id (no longer its own) for `quiet` seconds without sealing. A standby
        still unsealed on its old cluster id `stuck_after` seconds after the
        restored node settled will not take the restore by itself (seen on the
        sandbox every few runs): it is reported as it is, for the caller to
        restart, instead of waiting out `timeout`.
        """
        target = self.active()
        before = {s.address: s.seal.cluster_id if s.seal else None for s in self.states()}
        target.force_restore(source)
        restored_since: dict[str, float] = {}
        target_settled: list[float] = []

        def settled(s: NodeState, now: float) -> bool:
            if s.seal is None:
                return False
            if s.seal.sealed:
                return True
            if s.seal.cluster_id != before.get(s.address):
                return now - restored_since.setdefault(s.address, now) >= quiet
            return False

        def probe() -> list[NodeState] | waiting.Pending:
            states = self.states()
            now = time.monotonic()
            pending = [s for s in states if not settled(s, now)]
            if not target_settled and all(s.address != target.address for s in pending):
                target_settled.append(now)
            stuck = [
                s
                for s in pending
                if target_settled
                and now - target_settled[0] >= stuck_after
                and s.seal is not None
                and not s.seal.sealed
                and s.seal.cluster_id == before.get(s.address)
            ]
            if len(stuck) == len(pending):
                if stuck:
                    log.warning("vault_restore_not_taken", nodes=[s.address for s in stuck])
                return states
            return waiting.Pending("restore still settling on " + ", ".join(s.address for s in pending))

        states = waiting.wait_until(
            probe,
            what="the restore to settle",
            timeout=timeout,
            interval=0.2,
            max_interval=0.5,
            runbook=RUNBOOK_RESTORE,
        )
        log.info("vault_restore_settled", states={s.address: s.role for s in states})
        return states
