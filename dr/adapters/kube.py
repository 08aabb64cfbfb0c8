"""Kubernetes adapter: a kubeconfig's cluster through the kubernetes client, and the moves a recovery makes.

Everything goes through the dynamic client, so one code path serves built-in
kinds and CRDs (Argo CD's Applications, ESO's ExternalSecrets) alike. This
module owns the one place where the client's exceptions become `dr.errors`:
5xx, 429 (honouring Retry-After), timeouts and refused connections are
`TransientError`; 4xx are `PermanentError` with the API's own message.

`apply` does what `kubectl apply --server-side` does for a bundle: namespaces
first, CRDs next and waits for them to be Established (their custom
resources cannot be created before), then the rest. Waits list once per tick
and sleep on a watch (`sleep_on_watch`), so that a change wakes them at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from dr import errors, logs, safeyaml, waiting

FIELD_MANAGER: Final = "dr"
RUNBOOK: Final = "runbooks/cluster.md"
CLUSTER_KINDS_FIRST: Final = ("Namespace", "CustomResourceDefinition")

if TYPE_CHECKING:
    import kubernetes
    import urllib3

# The kubernetes client (about half a second to import) and requests are imported where a cluster is first
# reached, not here: `dr --help`, `dr plan` and `dr snapshot list` never talk to Kubernetes.

log = logs.get("dr.kube")

Obj = dict[str, Any]


# An API server answers 5xx and 429 in passing (a leader election, etcd compacting, a rolling upgrade): each
# idempotent request is retried a few times with backoff before the step sees the error. The last answer is
# returned as it is, so the step's error says what the API server said. POST is left out: creating twice is not
# idempotent (a retried create gets 409, which `create` handles, but a surprise is not worth a saved second).
def _retries() -> urllib3.util.Retry:
    import urllib3

    return urllib3.util.Retry(
        total=4,
        backoff_factor=0.2,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )


class Conflict(errors.PermanentError):
    """409: the object exists already, or changed since it was read (optimistic concurrency lost)."""


@contextlib.contextmanager
def mapped(what: str, *, runbook: str = RUNBOOK) -> Iterator[None]:
    """Translate the kubernetes client's exceptions raised while doing `what`."""
    import kubernetes
    import urllib3

    try:
        yield
    except kubernetes.client.ApiException as exc:
        message = _status_message(exc)
        if exc.status in (429, 500, 502, 503, 504):
            retry_after = _retry_after(exc)
            raise errors.TransientError(
                f"{what}: {exc.status} {message}", retry_after=retry_after, runbook=runbook
            ) from exc
        if exc.status == 409:
            raise Conflict(f"{what}: {exc.status} {message}", runbook=runbook) from exc
        raise errors.PermanentError(f"{what}: {exc.status} {message}", runbook=runbook) from exc
    except kubernetes.dynamic.exceptions.ResourceNotFoundError as exc:
        raise errors.PermanentError(f"{what}: {exc}", hint="is the CRD installed?", runbook=runbook) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        if isinstance(reason, (urllib3.exceptions.SSLError, ssl.SSLError)):
            # A certificate the kubeconfig's CA does not sign will not sign itself on a retry.
            raise errors.PermanentError(
                f"{what}: TLS refused the API server ({reason})",
                hint="the kubeconfig's certificate-authority does not match the server: fetch a fresh kubeconfig",
                runbook=runbook,
            ) from exc
        raise errors.TransientError(f"{what}: cannot reach the Kubernetes API ({exc})", runbook=runbook) from exc


def _status_message(exc: kubernetes.client.ApiException) -> str:
    try:
        body = yaml.safe_load(exc.body or "") or {}
        return str(body.get("message") or exc.reason)
    except yaml.YAMLError:
        return str(exc.reason)


def _retry_after(exc: kubernetes.client.ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def load_manifests(source: str, *, base: Path | None = None, sha256: str | None = None) -> list[Obj]:
    """Documents from a YAML file, a directory (its kustomization's `resources:`, else its YAML files) or a URL.

    A URL must come with its sha256: a pinned install is the one that was reviewed, byte for byte.
    """
    import requests

    if source.startswith(("https://", "http://")):
        if not sha256:
            raise errors.ConfigError(
                f"{source}: a manifest URL needs its sha256 pinned", hint="set platform.argocd_sha256"
            )
        try:
            answer = requests.get(source, timeout=60)
            answer.raise_for_status()
        except requests.RequestException as exc:
            raise errors.TransientError(f"cannot download {source}: {exc}") from exc
        digest = hashlib.sha256(answer.content).hexdigest()
        if digest != sha256:
            raise errors.PermanentError(f"{source}: sha256 is {digest}, not the pinned {sha256}")
        return _parse(answer.text, source)
    path = Path(source) if base is None else base / source
    if path.is_dir():
        kustomization = path / "kustomization.yaml"
        if kustomization.exists():
            entries = (_parse_one(kustomization.read_text(), str(kustomization)) or {}).get("resources") or []
            return [doc for entry in entries for doc in load_manifests(str(path / entry))]
        return [doc for file in sorted(path.glob("*.y*ml")) for doc in load_manifests(str(file))]
    try:
        return _parse(path.read_text(), str(path))
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read manifests: {exc}", runbook=RUNBOOK) from exc


def _parse_one(text: str, where: str) -> Any:
    try:
        return safeyaml.load(text)
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"{where}: not valid YAML: {exc}", runbook=RUNBOOK) from exc


def _parse(text: str, where: str) -> list[Obj]:
    try:
        docs = [d for d in safeyaml.load_all(text) if d]
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"{where}: not valid YAML: {exc}", runbook=RUNBOOK) from exc
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise errors.ConfigError(f"{where}: every document needs apiVersion and kind", runbook=RUNBOOK)
    return docs


def client_configuration(kubeconfig: Path | None, context: str | None) -> Any:
    """The client configuration a kubeconfig and context give, without contacting the server: `ConfigError`
    for a file that does not load or a context it does not have."""
    import kubernetes

    with mapped("loading the kubeconfig"):
        try:
            configuration = kubernetes.client.Configuration()
            if kubeconfig is None and not _in_cluster_possible():
                kubernetes.config.load_kube_config(context=context, client_configuration=configuration)
            elif kubeconfig is None:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            else:
                kubernetes.config.load_kube_config(str(kubeconfig), context=context, client_configuration=configuration)
        except kubernetes.config.ConfigException as exc:
            raise errors.ConfigError(
                f"cannot use the kubeconfig {kubeconfig or '(KUBECONFIG / ~/.kube/config)'}: {exc}",
                hint="check cluster.kubeconfig / cluster.context, or KUBECONFIG",
                runbook=RUNBOOK,
            ) from exc
    return configuration


class Kube:
    """One cluster, reached through a kubeconfig (or the pod's in-cluster config)."""

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None) -> None:
        import kubernetes

        configuration = client_configuration(kubeconfig, context)
        configuration.retries = _retries()
        self.api = kubernetes.client.ApiClient(configuration=configuration)
        self.server = str(self.api.configuration.host)
        cache = (
            Path(tempfile.gettempdir()) / f"dr-discovery-{hashlib.sha256(self.server.encode()).hexdigest()[:12]}.json"
        )
        with mapped(f"discovering the API of {self.server}"):
            self.dynamic = kubernetes.dynamic.DynamicClient(self.api, cache_file=str(cache))
        self._lock = threading.Lock()
        self._forwards: dict[tuple[str, str, int], _Forward] = {}

    @property
    def ca_pem(self) -> str | None:
        """The cluster CA the kubeconfig trusts (what OpenBao's Kubernetes auth needs to call back)."""
        path = self.api.configuration.ssl_ca_cert
        return Path(path).read_text() if path else None

    def _resource(self, api_version: str, kind: str) -> Any:
        import kubernetes

        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except kubernetes.dynamic.exceptions.ResourceNotFoundError:
            self.dynamic.resources.invalidate_cache()  # a CRD created since the last discovery
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

    # -- reads ----------------------------------------------------------------------------------

    def version(self) -> str:
        import kubernetes

        with mapped(f"reading the version of {self.server}"):
            info = kubernetes.client.VersionApi(self.api).get_code()
        return str(info.git_version)

    def can_i(self, verb: str, resource: str, *, group: str = "", namespace: str | None = None) -> bool:
        """`kubectl auth can-i`: a SelfSubjectAccessReview of this client's own identity.

        `resource` may name a subresource as kubectl does (`pods/portforward`).
        """
        import kubernetes

        name, _, sub = resource.partition("/")
        attributes = kubernetes.client.V1ResourceAttributes(
            verb=verb, group=group, resource=name, subresource=sub or None, namespace=namespace
        )
        body = kubernetes.client.V1SelfSubjectAccessReview(
            spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        )
        with mapped(f"asking whether this identity may {verb} {resource}"):
            review = kubernetes.client.AuthorizationV1Api(self.api).create_self_subject_access_review(body)
        return bool(review.status and review.status.allowed)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        import kubernetes

        with mapped(f"reading {kind} {namespace + '/' if namespace else ''}{name}"):
            try:
                return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()  # type: ignore[no-any-return]
            except kubernetes.dynamic.exceptions.NotFoundError:
                return None
            except kubernetes.dynamic.exceptions.ResourceNotFoundError:
                return None

    def objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> list[Obj]:
        import kubernetes

        with mapped(f"listing {kind}"):
            try:
                found = self._resource(api_version, kind).get(
                    namespace=namespace, label_selector=labels, field_selector=fields
                )
            except kubernetes.dynamic.exceptions.ResourceNotFoundError:
                return []  # the kind is not served (its CRD is not installed): none exist
            items: list[Obj] = found.to_dict().get("items", [])
            return items

    # -- writes --------------------------------------------------------------------------------

    def apply(self, docs: list[Obj], *, deadline: float, manager: str = FIELD_MANAGER) -> list[str]:
        """Server-side apply a bundle: namespaces, then CRDs (waited for), then the rest. Returns what it applied."""
        rank = {kind: i for i, kind in enumerate(CLUSTER_KINDS_FIRST)}
        ordered: list[Obj] = sorted(docs, key=lambda d: rank.get(d["kind"], len(rank)))
        applied = []
        crds = [d for d in ordered if d["kind"] == "CustomResourceDefinition"]
        for doc in ordered:
            if doc["kind"] not in CLUSTER_KINDS_FIRST and crds:
                self.wait_established([c["metadata"]["name"] for c in crds], deadline=deadline)
                crds = []
            self.apply_one(doc, manager=manager)
            applied.append(f"{doc['kind']}/{doc['metadata']['name']}")
        if crds:
            self.wait_established([c["metadata"]["name"] for c in crds], deadline=deadline)
        return applied

    def apply_one(self, doc: Obj, *, manager: str = FIELD_MANAGER) -> Obj:
        meta = doc["metadata"]
        what = (
            f"applying {doc['kind']} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta['name']}"
        )
        with mapped(what):
            resource = self._resource(doc["apiVersion"], doc["kind"])
            namespace = meta.get("namespace") if resource.namespaced else None
            result = self.dynamic.server_side_apply(
                resource, body=doc, name=meta["name"], namespace=namespace, field_manager=manager, force_conflicts=True
            )
        return result.to_dict()  # type: ignore[no-any-return]

    def create(self, doc: Obj) -> Obj:
        """Create one object; `Conflict` if it exists (what a lock needs: exactly one creator wins)."""
        meta = doc["metadata"]
        with mapped(f"creating {doc['kind']} {meta['name']}"):
            resource = self._resource(doc["apiVersion"], doc["kind"])
            result = resource.create(body=doc, namespace=meta.get("namespace") if resource.namespaced else None)
        return result.to_dict()  # type: ignore[no-any-return]

    def patch(self, api_version: str, kind: str, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        """A JSON merge patch; with `metadata.resourceVersion` in it, `Conflict` if the object changed since."""
        with mapped(f"patching {kind} {name}"):
            resource = self._resource(api_version, kind)
            result = resource.patch(
                body=patch, name=name, namespace=namespace, content_type="application/merge-patch+json"
            )
        return result.to_dict()  # type: ignore[no-any-return]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete one object; absent is fine."""
        import kubernetes

        with mapped(f"deleting {kind} {namespace + '/' if namespace else ''}{name}"):
            try:
                self._resource(api_version, kind).delete(name=name, namespace=namespace)
            except kubernetes.dynamic.exceptions.NotFoundError:
                return

    def wait_established(self, names: list[str], *, deadline: float) -> None:
        def established() -> bool | waiting.Pending:
            pending = []
            for name in names:
                crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
                conditions = ((crd or {}).get("status") or {}).get("conditions") or []
                if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    pending.append(name)
            return True if not pending else waiting.Pending(f"not Established: {', '.join(pending)}")

        waiting.wait_until(established, what="the CRDs to be Established", deadline=deadline, interval=0.2)
        self.dynamic.resources.invalidate_cache()

    # -- waiting -------------------------------------------------------------------------------

    def sleep_on_watch(self, api_version: str, kind: str, namespace: str | None, seconds: float) -> None:
        """Wait up to `seconds` for any change of the kind: a watch that ends early when something happens.

        What the steps' waits sleep on: each tick costs one LIST of what they wait for plus this watch,
        whatever the number of objects, and a change is seen at once rather than at the next poll.
        """
        import kubernetes

        try:
            resource = self._resource(api_version, kind)
            watcher = kubernetes.watch.Watch()
            for _ in self.dynamic.watch(resource, namespace=namespace, timeout=max(1, int(seconds)), watcher=watcher):
                watcher.stop()
                break
        except Exception:
            time.sleep(min(seconds, 1.0))

    # -- reaching pods -------------------------------------------------------------------------

    def pod_address(self, pod: Obj, port: int, scheme: str = "http", *, direct: bool = True) -> str:
        """An address on this host that reaches the pod's port.

        The pod's IP when it routes from here (the sandbox, or dr running in the cluster); else a
        port-forward through the API server, as `kubectl port-forward` does: a real cluster's pod
        network is not reachable from an operator's laptop, and the seed never exposes Vault.
        """
        ip = (pod.get("status") or {}).get("podIP")
        if direct and ip and _reachable(ip, port):
            return f"{scheme}://{ip}:{port}"
        return f"{scheme}://{self.port_forward(pod, port)}"

    def port_forward(self, pod: Obj, port: int) -> str:
        """`host:port` on 127.0.0.1 forwarded to the pod's port for as long as this client lives."""
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"], port)
        with self._lock:
            if key not in self._forwards:
                self._forwards[key] = _Forward(self.api, meta["namespace"], meta["name"], port)
            return self._forwards[key].address


class _Forward:
    """A loopback listener whose every connection is one port-forward stream to a pod's port."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, name: str, port: int) -> None:
        import kubernetes

        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace, self.name, self.port = namespace, name, port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name=f"port-forward {name}:{port}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import kubernetes

        try:
            stream = kubernetes.stream.portforward(
                self.core.connect_get_namespaced_pod_portforward, self.name, self.namespace, ports=str(self.port)
            )
            remote = stream.socket(self.port)
            remote.setblocking(True)
        except Exception as exc:
            log.warning("port_forward_failed", pod=f"{self.namespace}/{self.name}", port=self.port, error=str(exc))
            conn.close()
            return
        threading.Thread(target=_copy, args=(remote, conn), daemon=True).start()
        _copy(conn, remote)

    def close(self) -> None:
        self.listener.close()


def _copy(source: Any, target: Any) -> None:
    """Bytes one way until EOF, then shut the other side's write half."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _reachable(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=1.0).close()
        return True
    except OSError:
        return False


def _in_cluster_possible() -> bool:
    return Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists() and bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
    )
