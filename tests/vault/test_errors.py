"""Error mapping: what the adapter raises for each kind of HTTP answer, over real HTTP through hvac."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from dr import errors
from dr.adapters import vault
from tests import httpstub


class Scripted(httpstub.JsonHandler):
    """Answers every request with the status and Vault-style error body set on the server."""

    def do_GET(self) -> None:
        status, message = self.server.scripted  # type: ignore[attr-defined]
        self.reply(status, {"errors": [message]})


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (429, "rate limit quota exceeded", errors.TransientError),
        (500, "internal error", errors.TransientError),
        (502, "bad gateway", errors.TransientError),
        (503, "Vault is sealed", errors.TransientError),
        (400, "missing client token", errors.PermanentError),
        (403, "permission denied", errors.PermanentError),
        (404, "no handler for route", errors.PermanentError),
    ],
)
def test_http_errors_map_to_transient_or_permanent(
    server: ThreadingHTTPServer, status: int, message: str, kind: type[errors.DRError]
) -> None:
    """429/5xx are transient (retry), 4xx permanent; the server's own message and the address are kept."""
    server.scripted = (status, message)  # type: ignore[attr-defined]
    address = f"http://127.0.0.1:{server.server_address[1]}"
    token = vault.secret.Secret("s.never-shown-token")
    with pytest.raises(kind) as info:
        vault.VaultNode(address, token=token).leader()
    assert type(info.value) is kind
    assert f"{address}: reading sys/leader failed: {message}" == str(info.value)
    assert token.reveal() not in info.value.message


def test_connection_refused_is_transient() -> None:
    """Nothing listening: TransientError saying it cannot connect."""
    with pytest.raises(errors.TransientError, match=r"http://127\.0\.0\.1:9: cannot connect \(reading seal status\)"):
        vault.VaultNode("http://127.0.0.1:9").seal_status()


def test_no_node_answering_says_to_check_the_addresses() -> None:
    """When no node answers at all, the hint is about addresses and port-forwards, not elections."""
    with pytest.raises(errors.TransientError, match="no active Vault node") as info:
        vault.VaultCluster(["http://127.0.0.1:9", "http://127.0.0.1:19"]).active()
    assert "check the addresses" in info.value.hint
