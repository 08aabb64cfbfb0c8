"""An emulated Kubernetes API server over HTTPS: what the recovery, kubectl and OpenBao observe.

Serves discovery, CRUD for the built-in and CRD-defined types, list with
selectors and paging, watch, merge/JSON/strategic/apply patches, the status
subresource, `Status` errors, TokenRequest and TokenReview. Clients reach it
only through a kubeconfig (bearer token, the sandbox's own CA), exactly as
they would reach a real cluster; nothing outside `dr/sandbox/` imports it.

Authentication is real (the kubeconfig token, or a service-account JWT this
server issued); authorization is not modelled: every authenticated caller
may do everything, which is what a recovery's admin kubeconfig can do anyway.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import ssl
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dr.adapters import certs
from dr.sandbox import kube, portforward, proxy, resources, store

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-dr-sandbox",
    "platform": "linux/amd64",
    "goVersion": "go1.22",
    "compiler": "gc",
    "buildDate": "2026-01-01T00:00:00Z",
    "gitCommit": "sandbox",
    "gitTreeState": "clean",
}
ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """Service-account JWTs in the projected form, signed RS256 with a per-sandbox key (as a real cluster does)."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def public_pem(self) -> str:
        """The verification key, for OpenBao's `pem_keys` if a test wants signatures checked."""
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def issue(self, namespace: str, name: str, uid: str, audiences: list[str], seconds: int) -> tuple[str, str]:
        issued = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": audiences or [ISSUER],
            "iat": issued,
            "nbf": issued,
            "exp": issued + seconds,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        }
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "sandbox"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = _b64(self.key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()))
        expires = datetime.fromtimestamp(issued + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{head}.{body}.{signature}", expires

    def verify(self, token: str) -> dict[str, Any] | None:
        try:
            head, body, signature = token.split(".")
            self.key.public_key().verify(
                _unb64(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
            claims: dict[str, Any] = json.loads(_unb64(body))
        except (ValueError, json.JSONDecodeError, InvalidSignature):
            return None
        return claims if claims.get("exp", 0) > time.time() else None


class ApiServer:
    """The emulated API: registry, store, tokens, faults and the HTTPS listener."""

    def __init__(
        self,
        ca: certs.CertificateAuthority,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_token: str | None = None,
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        self.registry = resources.Registry()
        self.store = store.Store(self.registry)
        self.tokens = Tokens(signing_key)
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self.faults = proxy.Faults()
        self.ca = ca
        self._stop = threading.Event()
        pair = ca.issue("apiserver", hosts=[host, "localhost", "kubernetes.default.svc"])
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host, self.port = host, int(self.httpd.server_address[1])
        self.store.on_change.append(self._react)
        self._bootstrap()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.httpd.serve_forever, name="dr-sandbox-api", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self._stop.set()
        with self.store.lock:
            self.store.changed.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, name: str = "sandbox") -> dict[str, Any]:
        return kube.config(self.url, self.ca.pem, self.admin_token, name)

    # -- platform defaults and reactions ---------------------------------------------------

    def _res(self, group: str, version: str, plural: str) -> resources.Resource:
        found = self.registry.get(group, version, plural)
        assert found is not None
        return found

    def _bootstrap(self) -> None:
        ns = self._res("", "v1", "namespaces")
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.create(ns, None, {"metadata": {"name": name}})
        # The one node every pod runs on, Ready (as a provider's "every node Ready" check expects).
        nodes = self._res("", "v1", "nodes")
        labels = {"kubernetes.io/hostname": "sandbox", "node-role.kubernetes.io/control-plane": "true"}
        self.store.create(nodes, None, {"metadata": {"name": "sandbox", "labels": labels}})
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastTransitionTime": store.now()}
        status = {"conditions": [ready], "addresses": [{"type": "InternalIP", "address": self.host}]}
        self.store.update(nodes, None, "sandbox", {"status": status}, subresource="status")
        self.store.create(
            self._res("", "v1", "services"),
            "default",
            {
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {
                    "clusterIP": self.host,
                    "ports": [{"name": "https", "port": 443, "targetPort": self.port, "protocol": "TCP"}],
                    "type": "ClusterIP",
                },
            },
        )
        self.store.create(
            self._res("", "v1", "endpoints"),
            "default",
            {
                "metadata": {"name": "kubernetes"},
                "subsets": [{"addresses": [{"ip": self.host}], "ports": [{"name": "https", "port": self.port}]}],
            },
        )

    def _react(self, event: store.Event) -> None:
        """What the real control plane does by itself: root CA ConfigMaps, default SAs, CRDs established."""
        group, plural, _, name = event.key
        if plural == "namespaces" and event.type == "ADDED":
            threading.Thread(target=self._namespace_defaults, args=(name,), daemon=True).start()
        if group == "apiextensions.k8s.io" and plural == "customresourcedefinitions":
            if event.type == "DELETED":
                self.registry.remove_crd(event.obj)
            elif event.type == "ADDED":
                self.registry.add_crd(event.obj)
                threading.Thread(target=self._establish, args=(name,), daemon=True).start()

    def _namespace_defaults(self, namespace: str) -> None:
        for res, body in (
            (
                self._res("", "v1", "configmaps"),
                {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": self.ca.pem}},
            ),
            (self._res("", "v1", "serviceaccounts"), {"metadata": {"name": "default"}}),
        ):
            try:
                self.store.create(res, namespace, body)
            except store.ApiError:
                pass  # already there, or the namespace is already gone

    def _establish(self, name: str) -> None:
        crd_res = self._res("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        try:
            crd = self.store.get(crd_res, None, name)
        except store.ApiError:
            return
        stamp = store.now()
        crd["status"] = {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "lastTransitionTime": stamp,
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "lastTransitionTime": stamp,
                    "message": "the initial names have been accepted",
                },
            ],
            "acceptedNames": crd.get("spec", {}).get("names", {}),
            "storedVersions": [v["name"] for v in crd.get("spec", {}).get("versions", []) if v.get("storage")],
        }
        try:
            self.store.update(crd_res, None, name, crd, subresource="status")
        except store.ApiError:
            pass

    # -- authentication -------------------------------------------------------------------

    def authenticate(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :].strip()
        return hmac.compare_digest(token, self.admin_token) or self.tokens.verify(token) is not None

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec", {})
        claims = self.tokens.verify(spec.get("token", ""))
        status: dict[str, Any] = {"authenticated": False}
        if claims is not None:
            sa = claims.get("kubernetes.io", {})
            name, namespace = sa.get("serviceaccount", {}).get("name"), sa.get("namespace")
            uid = sa.get("serviceaccount", {}).get("uid")
            wanted = spec.get("audiences") or []
            granted = [a for a in wanted if a in claims.get("aud", [])] if wanted else list(claims.get("aud", []))
            try:
                account = self.store.get(self._res("", "v1", "serviceaccounts"), namespace, name)
            except store.ApiError:
                account = None
            if account is not None and account["metadata"]["uid"] == uid and (granted or not wanted):
                status = {
                    "authenticated": True,
                    "audiences": granted,
                    "user": {
                        "username": f"system:serviceaccount:{namespace}:{name}",
                        "uid": uid,
                        "groups": [
                            "system:serviceaccounts",
                            f"system:serviceaccounts:{namespace}",
                            "system:authenticated",
                        ],
                    },
                }
            elif account is None or account["metadata"]["uid"] != uid:
                status["error"] = "service account no longer exists"
            else:
                status["error"] = "token audiences do not match"
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    def token_request(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        account = self.store.get(self._res("", "v1", "serviceaccounts"), namespace, name)
        spec = body.get("spec", {})
        seconds = int(spec.get("expirationSeconds") or 3600)
        token, expires = self.tokens.issue(
            namespace, name, account["metadata"]["uid"], list(spec.get("audiences") or []), seconds
        )
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": store.now()},
            "spec": {**spec, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": expires},
        }


class _Handler(BaseHTTPRequestHandler):
    api: ApiServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the second waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    _raw: bytes = b""

    def log_message(self, *args: object) -> None:
        pass

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, error: store.ApiError, headers: dict[str, str] | None = None) -> None:
        self._send(error.code, error.status(), headers)

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return {}
        kind = (self.headers.get("Content-Type") or "").split(";")[0]
        try:
            return yaml.safe_load(raw) if kind.endswith("yaml") else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise store.ApiError(400, "BadRequest", f"the request body is not valid: {exc}") from exc

    def _handle(self, method: str) -> None:
        # Read the body whatever the verb (kubectl sends DeleteOptions with DELETE): left unread,
        # it would be parsed as the next request on this keep-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        try:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path in ("/healthz", "/readyz", "/livez"):
                self._plain(b"ok")  # the sandbox's own probe: never subject to the fault knobs
                return
            fault = self.api.faults.maybe_fail()
            if fault is not None:
                code, reason = fault
                self._fail(
                    store.ApiError(code, reason, f"sandbox fault injection: {reason}"),
                    {"Retry-After": "1"} if code in (429, 503) else None,
                )
                return
            if not self.api.authenticate(self.headers.get("Authorization")):
                self._fail(store.ApiError(401, "Unauthorized", "Unauthorized"))
                return
            self._route(method, url.path.rstrip("/") or "/", query)
        except store.ApiError as exc:
            self._fail(exc)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug in the emulator must answer like a server, not drop the connection
            self._fail(store.ApiError(500, "InternalError", f"sandbox API error: {type(exc).__name__}: {exc}"))

    def _plain(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = lambda self: self._handle("GET")  # noqa: E731 - one dispatcher for every verb
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731

    # -- routing ----------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        reg = self.api.registry
        if method == "GET" and path == "/version":
            self._send(200, VERSION)
            return
        if method == "GET" and path == "/api":
            self._send(200, reg.core_versions())
            return
        if method == "GET" and path == "/apis":
            self._send(200, reg.groups())
            return
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                if method == "GET":
                    self._send(200, reg.group(parts[1]))
                    return
                raise store.ApiError(405, "MethodNotAllowed", "method not allowed")
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise store.ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if not rest:
            listing = reg.resource_list(group, version)
            if listing is None or method != "GET":
                raise store.ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            self._send(200, listing)
            return
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        res = reg.get(group, version, plural)
        if res is None:
            raise store.ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        self._resource(method, res, namespace, name, sub, query)

    def _resource(
        self,
        method: str,
        res: resources.Resource,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
    ) -> None:
        s = self.api.store
        if res.kind == "TokenReview":
            if method != "POST":
                raise store.ApiError(405, "MethodNotAllowed", "tokenreviews only accept create")
            self._send(201, self.api.review(self._body()))
            return
        if sub == "token" and res.kind == "ServiceAccount":
            if method != "POST" or namespace is None or name is None:
                raise store.ApiError(405, "MethodNotAllowed", "token only accepts create")
            self._send(201, self.api.token_request(namespace, name, self._body()))
            return
        if sub == "portforward" and res.kind == "Pod":
            if namespace is None or name is None:
                raise store.ApiError(404, "NotFound", "portforward needs a pod")
            pod = s.get(res, namespace, name)
            portforward.serve(self, pod, query.get("ports", ""))
            return
        if sub is not None and sub not in res.subresources:
            raise store.ApiError(404, "NotFound", f"{res.plural} has no subresource {sub!r}")
        if sub == "finalize":
            sub = None
        if method == "GET" and name is None:
            if query.get("watch") in ("true", "1"):
                self._watch(res, namespace, query)
                return
            limit = int(query["limit"]) if query.get("limit") else None
            self._send(
                200,
                s.list(
                    res,
                    namespace,
                    labels=query.get("labelSelector"),
                    fields=query.get("fieldSelector"),
                    limit=limit,
                    cont=query.get("continue"),
                ),
            )
        elif method == "GET":
            self._send(200, s.get(res, namespace, name))  # type: ignore[arg-type]
        elif method == "POST" and name is None:
            body = self._body()
            self._check_kind(res, body)
            self._send(201, s.create(res, namespace, body))
        elif method == "PUT" and name is not None:
            body = self._body()
            self._check_kind(res, body)
            self._send(200, s.update(res, namespace, name, body, subresource=sub))
        elif method == "PATCH" and name is not None:
            kind = (self.headers.get("Content-Type") or "").split(";")[0]
            self._send(
                200,
                s.patch(
                    res, namespace, name, kind, self._body(), subresource=sub, field_manager=query.get("fieldManager")
                ),
            )
        elif method == "DELETE" and name is not None:
            self._send(200, s.delete(res, namespace, name))
        else:
            raise store.ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _check_kind(self, res: resources.Resource, body: Any) -> None:
        if not isinstance(body, dict):
            raise store.ApiError(400, "BadRequest", "the request body must be an object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if (kind and kind != res.kind) or (api_version and api_version != res.group_version):
            raise store.ApiError(
                400, "BadRequest", f"the body is a {api_version} {kind}, not a {res.group_version} {res.kind}"
            )

    def _watch(self, res: resources.Resource, namespace: str | None, query: dict[str, str]) -> None:
        since = int(query.get("resourceVersion") or 0) or self.api.store.rv
        timeout = 1.0 if self.api.faults.drop_watches else float(query.get("timeoutSeconds") or 1800)
        events = self.api.store.watch(
            res, namespace, since, labels=query.get("labelSelector"), stop=self.api._stop, timeout=timeout
        )
        try:
            first = next(events, None)
        except store.ApiError as exc:
            self._fail(exc)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def write(event: dict[str, Any]) -> None:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        try:
            if first is not None:
                write(first)
            for event in events:
                write(event)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        self.close_connection = True
