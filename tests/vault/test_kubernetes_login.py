"""Kubernetes auth login (the snapshot CronJob's) against a real OpenBao and a minimal TokenReview endpoint.

The TokenReview server here implements exactly what OPENBAO-FACTS.md says
OpenBao needs: HTTPS with its own CA, `status.authenticated`, the
service-account username, the JWT's uid, and the audiences echoed back.
The sandbox's Kubernetes API emulator will serve the same for real.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from dr import cli
from dr.adapters import certs
from tests import httpstub
from tests.harness_vault import Original, remember

NAMESPACE, ACCOUNT, UID = "vault-admin", "dr-snapshot", "5d0b7c55-0000-4000-8000-00000000d00d"


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def service_account_jwt(name: str = ACCOUNT, nonce: str = "") -> str:
    now = int(time.time())
    claims = {
        "jti": nonce,
        "iss": "https://kubernetes.default.svc",
        "aud": ["vault"],
        "iat": now,
        "exp": now + 3600,
        "sub": f"system:serviceaccount:{NAMESPACE}:{name}",
        "kubernetes.io": {"namespace": NAMESPACE, "serviceaccount": {"name": name, "uid": UID}},
    }
    return f"{b64url({'alg': 'RS256', 'typ': 'JWT'})}.{b64url(claims)}.{b64url({'sig': 'not checked'})}"


class TokenReviews(httpstub.JsonHandler):
    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        token = review["spec"]["token"]
        known = token in self.server.valid  # type: ignore[attr-defined]
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        status: dict[str, object] = {"authenticated": known}
        if known:
            sa = claims["kubernetes.io"]
            status.update(
                user={
                    "username": f"system:serviceaccount:{sa['namespace']}:{sa['serviceaccount']['name']}",
                    "uid": sa["serviceaccount"]["uid"],
                },
                audiences=review["spec"].get("audiences", []),
            )
        self.reply(201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})


@pytest.fixture
def reviewer(tmp_path: Path) -> Iterator[tuple[str, str, set[str]]]:
    ca = certs.CertificateAuthority(tmp_path / "ca")
    pair = ca.issue("api", hosts=["127.0.0.1"])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), TokenReviews)
    httpd.valid = set()  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", ca.pem, httpd.valid  # type: ignore[attr-defined]
    httpd.shutdown()


def test_snapshot_save_logs_in_with_a_service_account_token(
    original: Original, reviewer: tuple[str, str, set[str]], tmp_path: Path
) -> None:
    """With vault.auth.method kubernetes the save logs in through OpenBao's TokenReview call; a forged JWT is 403."""
    host, ca_pem, valid = reviewer
    admin = original.hvac()
    if "k8s-snapshot/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("kubernetes", path="k8s-snapshot")
    admin.write_data(
        "auth/k8s-snapshot/config",
        data={"kubernetes_host": host, "kubernetes_ca_cert": ca_pem, "disable_local_ca_jwt": True},
    )
    admin.sys.create_or_update_policy("dr-snapshot", 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }')
    admin.write_data(
        "auth/k8s-snapshot/role/dr-snapshot",
        data={
            "bound_service_account_names": [ACCOUNT],
            "bound_service_account_namespaces": [NAMESPACE],
            "audience": "vault",
            "token_policies": ["dr-snapshot"],
            "token_ttl": "10m",
        },
    )
    jwt = service_account_jwt()
    valid.add(jwt)
    remember(jwt)
    token_file = tmp_path / "token"
    token_file.write_text("")
    token_file.chmod(0o644)  # as projected into a pod: readable, by design
    config = {
        "cluster": {"name": "prod"},
        "vault": {
            "addresses": original.procs.addresses,
            "auth": {
                "method": "kubernetes",
                "role": "dr-snapshot",
                "mount": "k8s-snapshot",
                "jwt_file": str(token_file),
            },
        },
        "snapshots": {"store": str(tmp_path / "store")},
    }
    (tmp_path / "dr.yaml").write_text(yaml.safe_dump(config))
    env = {"VAULT_TOKEN": "", "BAO_TOKEN": "", "DR_CONFIG": str(tmp_path / "dr.yaml")}

    def save_with(token: str) -> Result:
        token_file.write_text(token)
        return CliRunner().invoke(cli.cli, ["--log-format", "json", "snapshot", "save"], env=env)

    saved = save_with(jwt)
    assert 0 == saved.exit_code, saved.output
    assert 1 == len(list((tmp_path / "store" / "prod").glob("*.json")))

    forged = service_account_jwt(name="intruder")
    remember(forged)
    refused = save_with(forged)
    assert 1 == refused.exit_code
    assert "service account name not authorized" in refused.stderr

    # The right names, but a token the cluster's TokenReview does not know: OpenBao refuses it.
    unknown = service_account_jwt(nonce="not-issued-by-the-cluster")
    remember(unknown)
    refused = save_with(unknown)
    assert 1 == refused.exit_code
    assert "permission denied" in refused.stderr
    assert all(t not in refused.output for t in (jwt, forged, unknown))
