"""Secrets never reach the output: the Secret type, the registry, and the log processor in both formats."""

from __future__ import annotations

import base64
import io
import json
import pickle

import pytest

from dr import errors, logs, secret

SHARE = "8f3c1b2a9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"
TOKEN = "s.Q2x1c3Rlci1yb290LXRva2VuLTEyMzQ1"


def capture(fmt: logs.LogFormat) -> io.StringIO:
    stream = io.StringIO()
    logs.configure(fmt, stream=stream)
    return stream


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_registered_secret_in_any_field_is_masked(fmt: logs.LogFormat) -> None:
    """A registered value in a string, a nested dict, a list, an f-string or an exception is masked."""
    secret.Secret(SHARE)
    stream = capture(fmt)
    log = logs.get("test")
    log.info("plain", detail=f"unseal with {SHARE} now")
    log.info("nested", data={"inner": [SHARE, {"deeper": SHARE}]})
    log.info("as_list", items=[1, SHARE])
    try:
        raise RuntimeError(f"combine failed for {SHARE}")
    except RuntimeError:
        log.exception("with_traceback")
    out = stream.getvalue()
    assert SHARE not in out
    assert out.count("***") >= 5
    assert "combine failed for ***" in out


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_other_spellings_of_a_secret_are_masked(fmt: logs.LogFormat) -> None:
    """The base64 and hex forms of a registered value are masked too."""
    secret.Secret(TOKEN)
    b64 = base64.b64encode(TOKEN.encode()).decode()
    hexed = TOKEN.encode().hex()
    stream = capture(fmt)
    logs.get().info("spellings", a=b64, b=hexed, c=b64.rstrip("="))
    out = stream.getvalue()
    assert b64.rstrip("=") not in out
    assert hexed not in out


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_secret_keys_are_masked_whatever_their_value(fmt: logs.LogFormat) -> None:
    """Fields named like secrets (token, unseal_keys_b64, X-Vault-Token) are masked even if never registered."""
    stream = capture(fmt)
    logs.get().info(
        "keys",
        token="unregistered-token-value",
        unseal_keys_b64=["k1-value", "k2-value"],
        headers={"X-Vault-Token": "hdr-token-value"},
        rootToken="camel-token-value",
        step="cluster",
    )
    out = stream.getvalue()
    for value in ("unregistered-token-value", "k1-value", "k2-value", "hdr-token-value", "camel-token-value"):
        assert value not in out
    assert "cluster" in out


def test_json_lines_stay_valid_after_redaction() -> None:
    """Redaction happens before rendering, so each JSON line still parses."""
    secret.Secret(SHARE)
    stream = capture("json")
    logs.get().info("event_name", share_hint=SHARE, count=3)
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert ("event_name", "***", 3) == (event["event"], event["share_hint"], event["count"])


def test_secret_never_prints_itself() -> None:
    """str, repr, format and f-strings of a Secret show ***; JSON and pickle refuse it."""
    s = secret.Secret(TOKEN)
    assert ("***", "Secret(***)", "***") == (str(s), repr(s), f"{s:>10}")
    assert TOKEN == s.reveal()
    with pytest.raises(TypeError):
        json.dumps({"t": s})
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)
    assert secret.Secret(TOKEN) == s


def test_error_text_is_redacted() -> None:
    """A DRError whose message carries a registered secret prints it masked, in str and to_dict."""
    secret.Secret(SHARE)
    exc = errors.PermanentError(f"unseal refused share {SHARE}", hint=f"retry {SHARE}")
    assert SHARE not in str(exc)
    assert SHARE not in json.dumps(exc.to_dict())


def test_short_values_are_not_registered() -> None:
    """Values shorter than MIN_LENGTH are not registered, so ordinary words are never masked."""
    secret.register("abc")
    assert "abc def" == secret.redact_text("abc def")
