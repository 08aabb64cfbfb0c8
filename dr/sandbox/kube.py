"""The simulated controllers' Kubernetes client: plain HTTPS to the emulated API, as a real controller talks.

The controllers run inside the sandbox process but never touch its store:
they list, watch, apply and patch over the same HTTPS endpoint that kubectl
and `dr` use, so what they do is visible, ordered and faultable exactly like
a real controller's traffic (fault knobs hit them too). `requests` keeps one
connection pool per controller; paths come from discovery, as client-go's
RESTMapper finds them, so a CRD created at runtime is reachable once it is
served.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import requests


def config(url: str, ca_pem: str, token: str, name: str = "sandbox") -> dict[str, Any]:
    """The admin kubeconfig the sandbox writes for `dr`, kubectl and tests."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "preferences": {},
        "clusters": [
            {
                "name": name,
                "cluster": {"server": url, "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode()},
            }
        ],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin", "namespace": "default"}}],
    }


class KubeError(Exception):
    """A `Status` answer from the API, or no answer at all (code 0)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


class Kube:
    def __init__(self, url: str, token: str, ca_file: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.trust_env = False  # else REQUESTS_CA_BUNDLE or a proxy variable would override our CA
        self.session.verify = ca_file
        self._token, self._ca = token, ca_file
        self._paths: dict[tuple[str, str], tuple[str, bool]] = {}
        self._lock = threading.Lock()

    def clone(self) -> Kube:
        """Another client on its own connections (a watch holds one for as long as it runs)."""
        return Kube(self.url, self._token, self._ca)

    # -- paths --------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(collection path prefix, namespaced) for a kind, from discovery; KubeError 404 when not served."""
        key = (api_version, kind)
        with self._lock:
            if key in self._paths:
                return self._paths[key]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        missing = KubeError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"')
        try:
            listing = self.request("GET", base)
        except KubeError as exc:
            raise (missing if exc.code == 404 else exc) from None
        for entry in listing.get("resources", []):
            if entry.get("kind") == kind and "/" not in entry["name"]:
                found = (f"{base}/{entry['name']}", bool(entry["namespaced"]))
                with self._lock:
                    self._paths[key] = found
                return found
        raise missing

    def path(self, api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
        prefix, namespaced = self.resource(api_version, kind)
        base, plural = prefix.rsplit("/", 1)
        path = f"{base}/namespaces/{namespace}/{plural}" if namespaced and namespace else prefix
        return f"{path}/{name}" if name else path

    def forget(self, api_version: str, kind: str) -> None:
        with self._lock:
            self._paths.pop((api_version, kind), None)

    # -- verbs --------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None, content_type: str = ""
    ) -> dict[str, Any]:
        headers = {"Content-Type": content_type or "application/json"}
        try:
            answer = self.session.request(
                method,
                self.url + path,
                data=json.dumps(body) if body is not None else None,
                params=params,
                headers=headers,
                timeout=30,
            )
        except requests.RequestException as exc:
            raise KubeError(0, "Unreachable", str(exc)) from exc
        try:
            data: dict[str, Any] = answer.json()
        except ValueError:
            data = {}
        if answer.status_code >= 400:
            raise KubeError(answer.status_code, data.get("reason", ""), data.get("message", answer.text[:200]))
        return data

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, *, labels: str | None = None
    ) -> list[dict[str, Any]]:
        try:
            path = self.path(api_version, kind, namespace)
        except KubeError as exc:
            if exc.code == 404:
                return []  # the type is not served (yet): nothing of it exists
            raise
        items: list[dict[str, Any]] = self.request(
            "GET", path, params={"labelSelector": labels} if labels else None
        ).get("items", [])
        for item in items:  # a real API leaves them out of list items; every caller needs them
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("POST", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace")), obj)

    def apply(self, obj: dict[str, Any], manager: str) -> dict[str, Any]:
        """Server-side apply: creates or updates, owned by `manager`."""
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
            obj,
            params={"fieldManager": manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    def patch(self, obj: dict[str, Any], patch: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return self.request(
            "PATCH", path + ("/status" if status else ""), patch, content_type="application/merge-patch+json"
        )

    def delete(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            self.request("DELETE", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]))
        except KubeError as exc:
            if exc.code != 404:
                raise

    def watch(self, api_version: str, kind: str, *, seconds: int = 30) -> Iterator[dict[str, Any]]:
        """Events from now on until the server ends the watch (the caller watches again)."""
        path = self.path(api_version, kind)
        try:
            with self.session.get(
                self.url + path,
                params={"watch": "true", "timeoutSeconds": str(seconds)},
                stream=True,
                timeout=(10, seconds + 10),
            ) as answer:
                if answer.status_code >= 400:
                    raise KubeError(answer.status_code, "", answer.text[:200])
                for line in answer.iter_lines():
                    if line:
                        yield json.loads(line)
        except requests.RequestException as exc:
            raise KubeError(0, "Unreachable", str(exc)) from exc
