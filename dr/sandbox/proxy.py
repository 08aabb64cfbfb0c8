"""The sandbox's front door to kube-apiserver: a TLS proxy that injects the fault knobs' latency, errors, cut watches.

A real API server cannot be told to fail one request in seven, so every
client the sandbox hands a kubeconfig to (dr, kubectl, the simulated Argo CD
and External Secrets, OpenBao's TokenReview calls) reaches the API through
this proxy, and the fault campaign's API faults happen here, on the wire,
where a flaky load balancer in front of a real cluster would make them.
Nothing is rewritten: requests and answers pass byte for byte (watches and
other streams chunk by chunk; upgraded connections such as port-forward are
spliced), credentials included, so the API server authenticates and
authorises the real caller. Only the control plane's own components talk to
the API server directly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dr.adapters import certs

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "proxy-connection"}
DROPPED_WATCH_SECONDS = 1.0


class Faults:
    """Knobs for the fault campaign: latency and a rate of 5xx/429 answers, changeable while running."""

    def __init__(self, latency_ms: int = 0, error_rate: float = 0.0, drop_watches: bool = False) -> None:
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.drop_watches = drop_watches  # end every watch after about a second: clients must re-list

    def maybe_fail(self) -> tuple[int, str] | None:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        if self.error_rate and secrets.randbelow(10_000) < self.error_rate * 10_000:
            return secrets.choice([(500, "InternalError"), (503, "ServiceUnavailable"), (429, "TooManyRequests")])
        return None


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}
    ).encode()


class Proxy:
    """Listens on `host:port` with a certificate from the sandbox CA and forwards to `upstream` (https://h:p)."""

    def __init__(self, ca: certs.CertificateAuthority, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0):
        self.faults = Faults()
        self.upstream = ("127.0.0.1", upstream_port)
        self.client_context = ssl.create_default_context(cafile=str(ca.cert_path))
        pair = ca.issue("sandbox-api", hosts=[host, "localhost", "kubernetes.default.svc"])
        handler = type("Handler", (_Handler,), {"proxy": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        context.set_alpn_protocols(["http/1.1"])
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host, self.port = host, int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.httpd.serve_forever, name="dr-sandbox-proxy", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(*self.upstream, context=self.client_context, timeout=3600)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


class _Handler(BaseHTTPRequestHandler):
    proxy: Proxy
    protocol_version = "HTTP/1.1"
    upstream: http.client.HTTPSConnection | None = None

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        if self.upstream is not None:
            self.upstream.close()

    def do_GET(self) -> None:
        self._forward()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _forward(self) -> None:
        body = self._body()
        # Health probes are spared, as a load balancer's own checks are: `dr sandbox up` waits on /healthz.
        health = self.path.split("?")[0] in ("/healthz", "/readyz", "/livez")
        fault = None if health else self.proxy.faults.maybe_fail()
        if fault is not None:
            code, reason = fault
            payload = status_body(code, reason, f"injected by the sandbox's fault knobs ({code})")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if code in (429, 503):
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(payload)
            return
        if "upgrade" in (self.headers.get("Connection") or "").lower():
            self._splice(body)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            try:
                if self.upstream is None:
                    self.upstream = self.proxy.connect()
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                answer = self.upstream.getresponse()
                break
            except (OSError, http.client.HTTPException):
                # A kept-alive upstream connection the API server closed: once more on a new one.
                if self.upstream is not None:
                    self.upstream.close()
                self.upstream = None
                if attempt == 2:
                    payload = status_body(503, "ServiceUnavailable", "the sandbox's API server does not answer")
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
        self._relay(answer)

    def _relay(self, answer: http.client.HTTPResponse) -> None:
        self.send_response_only(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        watch = "watch=" in self.path and "watch=false" not in self.path and "watch=0" not in self.path
        bodiless = self.command == "HEAD" or answer.status in (204, 304) or answer.status < 200
        streamed = (answer.getheader("Content-Length") is None or watch) and not bodiless
        if not streamed:
            data = answer.read()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cut_at = time.monotonic() + DROPPED_WATCH_SECONDS if watch and self.proxy.faults.drop_watches else None
        try:
            while True:
                if cut_at is not None:
                    assert self.upstream is not None
                    assert self.upstream.sock is not None
                    self.upstream.sock.settimeout(max(0.05, cut_at - time.monotonic()))
                try:
                    chunk = answer.read1(65536)
                except (TimeoutError, http.client.HTTPException):
                    chunk = b""  # cut here (dropped watch) or by the API server: end the stream as it did
                if not chunk or (cut_at is not None and time.monotonic() >= cut_at):
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        if cut_at is not None or not answer.isclosed():
            # The stream was cut here, not ended by the server: this upstream connection is mid-answer.
            if self.upstream is not None:
                self.upstream.close()
            self.upstream = None

    def _splice(self, body: bytes | None) -> None:
        """An upgraded connection (port-forward, exec): the request head once, then raw bytes both ways."""
        upstream = self.proxy.client_context.wrap_socket(
            socket.create_connection(self.proxy.upstream), server_hostname=self.proxy.upstream[0]
        )
        head = f"{self.command} {self.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        upstream.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        self.wfile.flush()
        done = threading.Event()

        def pump(source: Any, target: Any) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        threading.Thread(target=pump, args=(upstream, self.connection), daemon=True).start()
        pump(self.connection, upstream)
        done.wait(5)
        upstream.close()
        self.close_connection = True
