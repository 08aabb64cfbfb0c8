"""Secret values: a wrapper that never prints itself, and a redaction registry.

Unseal shares, tokens and secret values must stay out of logs, checkpoints,
reports and exception text. Two defences, both needed:

* `Secret` wraps a value so that `str`, `repr`, f-strings and JSON encoding
  never show it; code has to call `reveal()` on purpose.
* Every `Secret` registers its value (and its base64 and hex spellings) in a
  process-wide registry, and `redact_text` / `redact_value` scrub those
  strings from anything about to leave the process: the structlog processor
  in `dr.logs`, error rendering in `dr.errors`, checkpoint writes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
from collections.abc import Mapping
from typing import Any, Final, NoReturn, final

MASK: Final = "***"

# Shorter values would redact ordinary words ("a", "on"); no share or token is
# this short, and a shorter registration is a programming error worth knowing.
MIN_LENGTH: Final = 6

# Keys whose values are secret whatever they contain; matched case-insensitively
# on the last segment of snake/kebab/camel names (`root_token`, `X-Vault-Token`).
SECRET_KEYS: Final = frozenset(
    {
        "token",
        "root_token",
        "client_token",
        "vault_token",
        "x-vault-token",
        "authorization",
        "password",
        "passphrase",
        "secret",
        "secret_key",
        "secret_access_key",
        "aws_secret_access_key",
        "session_token",
        "share",
        "shares",
        "key_share",
        "key_shares",
        "unseal_key",
        "unseal_keys",
        "unseal_keys_b64",
        "unseal_keys_hex",
        "keys",
        "keys_base64",
        "recovery_keys",
        "recovery_keys_b64",
        "otp",
        "encoded_token",
        "encoded_root_token",
        "jwt",
        "webhook_url",
        "private_key",
        "client_key",
    }
)

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _spellings(value: str) -> set[str]:
    raw = value.encode()
    found = {
        value,
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
    }
    # A share handed out as hex is often logged as base64 and vice versa.
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        decoded = b""
    if not decoded:
        try:
            decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
    if len(decoded) >= MIN_LENGTH:
        found |= {base64.b64encode(decoded).decode(), decoded.hex()}
    return {s for s in found if len(s) >= MIN_LENGTH}


def register(value: str) -> None:
    """Remember `value` so that it is scrubbed from everything the process emits."""
    global _pattern
    if len(value) < MIN_LENGTH:
        return
    with _lock:
        _values.update(_spellings(value))
        # Longest first, so a value containing another is masked whole.
        alternatives = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def registered() -> frozenset[str]:
    """Every registered spelling: what a leak scan (a test, an audit of a run's files) must not find."""
    with _lock:
        return frozenset(_values)


def forget_all() -> None:
    """Empty the registry (tests only: each test starts with a clean slate)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def redact_text(text: str) -> str:
    """`text` with every registered secret spelling replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret (`root_token`, `unsealKeys`, ...)."""
    normal = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower().replace("-", "_")
    return normal in SECRET_KEYS or normal.replace("_", "-") in SECRET_KEYS


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value with secret keys masked and secret text scrubbed."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) and v not in (None, "", [], {}) else redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


@final
class Secret:
    """A secret string that prints as ``***`` and registers itself for redaction."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value
        register(value)

    def reveal(self) -> str:
        """The real value: call only where it is handed to the system that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")
