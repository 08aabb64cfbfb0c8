"""The External Secrets Operator stand-in: ExternalSecrets become Secrets with values read from OpenBao.

Active once the external-secrets.io CRDs are served and the
`external-secrets` Deployment has a Ready replica. For a `ClusterSecretStore`
with a Vault provider it does what ESO's Vault provider does, for real:

- resolves `server` (`http://<service>.<namespace>.svc:<port>`) to the ready
  pods behind that Service, through the API, active pod first;
- asks the API for a token of `auth.kubernetes.serviceAccountRef` (TokenRequest
  with the ref's `audiences`, else the API's own, as ESO does) and logs in at
  `auth/<mountPath>/login`, so OpenBao calls the cluster's TokenReview;
- reads `<path>/data/<key>` (KV v2) or `<path>/<key>` (v1).

It writes the target Secret (owned by the ExternalSecret, like
`creationPolicy: Owner`), sets `Ready`/`SecretSynced` (or `SecretSyncedError`
with the provider's real error: a 403 from OpenBao, a missing path, a sealed
server), `refreshTime` and `syncedResourceVersion`, refreshes every
`refreshInterval` and at once when the `force-sync` annotation (any
annotation or label) changes, and sets each store's `Ready` from a real login.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests

from dr.sandbox import kube, loop, store

GROUP = "external-secrets.io/v1"
ES = (GROUP, "ExternalSecret")
CSS = (GROUP, "ClusterSecretStore")
STORE = (GROUP, "SecretStore")


class ProviderError(Exception):
    pass


def _vault_error(answer: requests.Response, what: str) -> ProviderError:
    try:
        details = "\n".join(f"* {e}" for e in answer.json().get("errors") or [])
    except ValueError:
        details = answer.text[:200]
    return ProviderError(
        f"{what}: Error making API request.\n\nURL: {answer.request.method} {answer.url}\n"
        f"Code: {answer.status_code}. Errors:\n\n{details}"
    )


class ExternalSecrets(loop.Controller):
    name = "external-secrets"
    watches = (ES, CSS, ("v1", "Secret"), ("apps/v1", "Deployment"))
    resync = 1.0

    def __init__(self, api: kube.Kube, stop: threading.Event, failing: Callable[[], bool] = lambda: False) -> None:
        super().__init__(api, stop)
        self.failing = failing  # the fault knob: every sync fails as if the provider were down
        self.http = requests.Session()
        self.http.trust_env = False  # pod-to-pod traffic: no proxy variables
        self.store_checked: dict[str, float] = {}
        self.synced_at: dict[str, float] = {}

    def active(self) -> bool:
        try:
            self.kube.resource(*ES)
        except kube.KubeError:
            return False
        deploy = self.kube.get("apps/v1", "Deployment", "external-secrets", "external-secrets")
        return bool(deploy and int((deploy.get("status") or {}).get("readyReplicas", 0)) >= 1)

    def reconcile(self) -> None:
        if not self.active():
            return
        stores = {("ClusterSecretStore", s["metadata"]["name"]): s for s in self.kube.list(*CSS)}
        stores.update(
            {
                ("SecretStore", f"{s['metadata']['namespace']}/{s['metadata']['name']}"): s
                for s in self.kube.list(*STORE)
            }
        )
        for found in stores.values():
            self._check_store(found)
        for es in self.kube.list(*ES):
            self._reconcile(es, stores)

    # -- stores --------------------------------------------------------------------------------

    def _check_store(self, found: dict[str, Any]) -> None:
        """Validate by logging in: again every 5 s while Ready, every 2 s while not, at once on a spec change."""
        uid, generation = found["metadata"]["uid"], found["metadata"].get("generation", 1)
        status = found.get("status") or {}
        every = 5.0 if self._ready(status) else 2.0
        if status.get("observedGeneration") == generation and time.monotonic() - self.store_checked.get(uid, 0) < every:
            return
        self.store_checked[uid] = time.monotonic()
        try:
            self._login(found)
            cond = self._cond(True, "Valid", "store validated")
        except ProviderError as exc:
            cond = self._cond(False, "ValidationFailed", f"unable to validate store: {exc}")
        new = {"conditions": [self._keep(status, cond)], "capabilities": "ReadWrite", "observedGeneration": generation}
        if new != status:
            self.kube.patch(found, {"status": new}, status=True)

    @staticmethod
    def _ready(status: dict[str, Any]) -> bool:
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])

    # -- provider ---------------------------------------------------------------------------------

    def _vault(self, found: dict[str, Any]) -> dict[str, Any]:
        vault = ((found.get("spec") or {}).get("provider") or {}).get("vault")
        if not vault:
            raise ProviderError("the sandbox's ESO supports the vault provider only")
        return dict(vault)

    def _addresses(self, server: str) -> list[str]:
        """The pods behind a cluster Service URL, as the cluster's DNS and kube-proxy would pick them."""
        url = urlparse(server)
        host = url.hostname or ""
        parts = host.split(".")
        if len(parts) < 2 or parts[2:3] not in (["svc"], []):
            return [server.rstrip("/")]  # not a cluster address: used as is
        name, namespace = parts[0], parts[1]
        svc = self.kube.get("v1", "Service", namespace, name)
        if svc is None:
            raise ProviderError(f'dial tcp: lookup {host}: no such host (Service "{namespace}/{name}" not found)')
        spec = svc.get("spec") or {}
        port = url.port or 80
        target = next((p.get("targetPort", p["port"]) for p in spec.get("ports") or [] if p.get("port") == port), port)
        selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
        pods = self.kube.list("v1", "Pod", namespace, labels=selector) if selector else []
        ready = [p for p in pods if self._pod_ready(p) or spec.get("publishNotReadyAddresses")]
        ready = [p for p in ready if (p.get("status") or {}).get("podIP")]
        if not ready:
            raise ProviderError(
                f"dial tcp {host}:{port}: connect: connection refused (no endpoints for {namespace}/{name})"
            )
        ready.sort(
            key=lambda p: (
                not any(v == "true" for k, v in (p["metadata"].get("labels") or {}).items() if k.endswith("-active"))
            )
        )
        return [f"{url.scheme}://{p['status']['podIP']}:{target}" for p in ready]

    @staticmethod
    def _pod_ready(pod: dict[str, Any]) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )

    def _call(self, addresses: list[str], method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        error: ProviderError | None = None
        for address in addresses:
            try:
                answer = self.http.request(method, f"{address}{path}", timeout=5, **kwargs)
            except requests.RequestException as exc:
                error = ProviderError(f"{what}: {exc}")
                continue
            if answer.status_code < 400:
                data: dict[str, Any] = answer.json()
                return data
            error = _vault_error(answer, what)
            if answer.status_code not in (429, 500, 502, 503):
                break  # an answer (403, 404) is the answer; a sealed or standby node is worth another
        assert error is not None
        raise error

    def _login(self, found: dict[str, Any]) -> tuple[list[str], str]:
        vault = self._vault(found)
        addresses = self._addresses(str(vault.get("server") or ""))
        auth = (vault.get("auth") or {}).get("kubernetes")
        if not auth:
            raise ProviderError("the sandbox's ESO supports Vault's kubernetes auth only")
        ref = auth.get("serviceAccountRef") or {}
        namespace = ref.get("namespace") or found["metadata"].get("namespace") or "default"
        try:
            issued = self.kube.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{ref.get('name')}/token",
                {
                    "spec": {
                        "expirationSeconds": 600,
                        **({"audiences": ref["audiences"]} if ref.get("audiences") else {}),
                    }
                },
            )
        except kube.KubeError as exc:
            raise ProviderError(f"cannot create service account token: {exc.message}") from exc
        jwt = issued["status"]["token"]
        mount = auth.get("mountPath") or "kubernetes"
        login = self._call(
            addresses,
            "POST",
            f"/v1/auth/{mount}/login",
            "unable to log in with Kubernetes auth",
            json={"role": auth.get("role"), "jwt": jwt},
        )
        return addresses, str(login["auth"]["client_token"])

    def _read(self, found: dict[str, Any], keys: list[str]) -> dict[str, dict[str, Any]]:
        vault = self._vault(found)
        addresses, token = self._login(found)
        mount = str(vault.get("path") or "secret").strip("/")
        values = {}
        for key in keys:
            path = f"/v1/{mount}/data/{key}" if vault.get("version", "v2") == "v2" else f"/v1/{mount}/{key}"
            try:
                data = self._call(
                    addresses,
                    "GET",
                    path,
                    f"cannot read secret data from Vault: key {key}",
                    headers={"X-Vault-Token": token},
                )
            except ProviderError as exc:
                if "Code: 404" in str(exc):
                    raise ProviderError(f"Secret does not exist: key {key}") from exc
                raise
            inner = data.get("data") or {}
            values[key] = inner.get("data", inner) if vault.get("version", "v2") == "v2" else inner
        return values

    # -- external secrets ----------------------------------------------------------------------------

    @staticmethod
    def _version(es: dict[str, Any]) -> str:
        """ESO's syncedResourceVersion: generation plus a hash of labels and annotations (force-sync changes it)."""
        meta = es["metadata"]
        digest = hashlib.sha256(
            json.dumps([meta.get("labels") or {}, meta.get("annotations") or {}], sort_keys=True).encode()
        )
        return f"{meta.get('generation', 1)}-{digest.hexdigest()[:32]}"

    def _due(self, es: dict[str, Any], status: dict[str, Any]) -> bool:
        if status.get("syncedResourceVersion") != self._version(es) or not self._ready(status):
            return True
        synced = self.synced_at.get(es["metadata"]["uid"])
        if synced is None:
            return True  # not synced by this process yet (the sandbox restarted): once now
        interval = loop.go_duration((es.get("spec") or {}).get("refreshInterval"), 3600)
        return interval > 0 and time.monotonic() - synced >= interval

    def _reconcile(self, es: dict[str, Any], stores: dict[tuple[str, str], dict[str, Any]]) -> None:
        meta, spec = es["metadata"], es.get("spec") or {}
        status = es.get("status") or {}
        target = (spec.get("target") or {}).get("name") or meta["name"]
        if self.kube.get("v1", "Secret", meta["namespace"], target) is None:
            status = {**status, "syncedResourceVersion": ""}  # the Secret was deleted: make it again now
        if not self._due(es, status) and not (self.failing() and self._ready(status)):
            return
        ref = spec.get("secretStoreRef") or {}
        kind = ref.get("kind") or "SecretStore"
        key = ref.get("name", "") if kind == "ClusterSecretStore" else f"{meta['namespace']}/{ref.get('name')}"
        found = stores.get((kind, key))
        try:
            if self.failing():
                raise ProviderError("connection refused (sandbox fault knob eso_failing)")
            if found is None:
                raise ProviderError(f'could not get SecretStore "{ref.get("name")}": {kind} not found')
            data = self._resolve(found, spec)
            self._write_secret(es, target, data)
            cond, extra = self._cond(True, "SecretSynced", "secret synced"), {"refreshTime": store.now()}
            self.synced_at[meta["uid"]] = time.monotonic()
        except ProviderError as exc:
            cond, extra = self._cond(False, "SecretSyncedError", f"could not get secret data from provider: {exc}"), {}
        new = {
            **{k: v for k, v in status.items() if k == "refreshTime"},
            **extra,
            "conditions": [self._keep(status, cond)],
            "syncedResourceVersion": self._version(es),
            "binding": {"name": target},
        }
        if new != (es.get("status") or {}):
            self.kube.patch(es, {"status": new}, status=True)

    def _resolve(self, found: dict[str, Any], spec: dict[str, Any]) -> dict[str, str]:
        entries = spec.get("data") or []
        extracts = [e["extract"]["key"] for e in spec.get("dataFrom") or [] if "extract" in e]
        keys = sorted({e["remoteRef"]["key"] for e in entries} | set(extracts))
        read = self._read(found, keys)
        out: dict[str, str] = {}
        for key in extracts:
            out.update({k: str(v) for k, v in read[key].items()})
        for entry in entries:
            remote = entry["remoteRef"]
            values = read[remote["key"]]
            prop = remote.get("property")
            if prop:
                if prop not in values:
                    raise ProviderError(f"key {remote['key']}: property {prop!r} does not exist")
                out[entry["secretKey"]] = str(values[prop])
            else:
                out[entry["secretKey"]] = json.dumps(values)
        return out

    def _write_secret(self, es: dict[str, Any], name: str, data: dict[str, str]) -> None:
        meta = es["metadata"]
        template = ((es.get("spec") or {}).get("target") or {}).get("template") or {}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": template.get("type", "Opaque"),
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {"reconcile.external-secrets.io/managed": "true"},
                "ownerReferences": [
                    {
                        "apiVersion": GROUP,
                        "kind": "ExternalSecret",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        self.kube.apply(body, "external-secrets")

    @staticmethod
    def _cond(ok: bool, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": "Ready",
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": store.now(),
        }

    @staticmethod
    def _keep(status: dict[str, Any], cond: dict[str, Any]) -> dict[str, Any]:
        for old in status.get("conditions") or []:
            if (
                old.get("type") == cond["type"]
                and old.get("status") == cond["status"]
                and old.get("message") == cond["message"]
            ):
                return {**cond, "lastTransitionTime": old.get("lastTransitionTime")}
        return cond
