"""The Kubernetes adapter's edges: pinned manifest URLs, and how API failures become dr errors."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from dr import errors
from dr.adapters import kube, providers
from dr.sandbox import backends
from tests.httpstub import JsonHandler

MANIFEST = (
    b"apiVersion: v1\nkind: Namespace\nmetadata: {name: pinned}\n---\n"
    b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: pinned}\n"
)


class _Manifest(JsonHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(MANIFEST)))
        self.end_headers()
        self.wfile.write(MANIFEST)


@pytest.fixture
def manifest_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Manifest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/install.yaml"
    server.shutdown()


def test_a_manifest_url_is_used_only_with_its_pinned_sha256(manifest_url: str) -> None:
    good = hashlib.sha256(MANIFEST).hexdigest()
    docs = kube.load_manifests(manifest_url, sha256=good)
    assert ["Namespace", "ConfigMap"] == [d["kind"] for d in docs]
    with pytest.raises(errors.PermanentError, match=f"sha256 is {good}, not the pinned 0000"):
        kube.load_manifests(manifest_url, sha256="0000")
    with pytest.raises(errors.ConfigError, match="a manifest URL needs its sha256 pinned"):
        kube.load_manifests(manifest_url)


def test_a_directory_is_read_through_its_kustomization_and_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(MANIFEST)
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\n")
    assert 2 == len(kube.load_manifests(str(tmp_path)))
    (tmp_path / "a.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(errors.ConfigError, match="not valid YAML"):
        kube.load_manifests(str(tmp_path))


def test_5xx_and_429_are_transient_with_retry_after_and_4xx_permanent(
    api: backends.Emulated | backends.Real, kubeconfig: Path
) -> None:
    client = kube.Kube(kubeconfig)
    assert client.get("v1", "Namespace", "default") is not None
    assert client.get("v1", "Namespace", "no-such-namespace") is None
    with pytest.raises(errors.PermanentError, match="422"):
        client.apply_one(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name", "namespace": "default"}}
        )
    api.faults.error_rate = 1.0
    seen: dict[str, set[float | None]] = {}
    try:
        # The fault knob answers 500, 503 or 429 at random; urllib3 already waits out a Retry-After up to
        # three times before the adapter sees the answer, so each round may take a few seconds, and a round
        # ends in 503/429 only about one time in five: go on until both kinds were seen (or 40 rounds).
        for _ in range(40):
            with pytest.raises(errors.TransientError) as failed:
                client.objects("v1", "ConfigMap", "default")
            code = failed.value.message.split(": ")[1].split()[0]
            seen.setdefault(code, set()).add(failed.value.retry_after)
            if "500" in seen and set(seen) & {"503", "429"}:
                break
    finally:
        api.faults.error_rate = 0.0
    assert set(seen) <= {"500", "503", "429"}
    assert seen.get("500", {None}) == {None}
    assert {1.0} == seen.get("503", set()) | seen.get("429", set())  # the server's Retry-After, for the back-off


def test_a_kubeconfig_list_is_merged_as_kubectl_merges_it(
    api: backends.Emulated | backends.Real, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KUBECONFIG=a:b with the cluster and user in one file and the context in the other: one cluster, as
    kubectl sees it; the first file to name a context wins, and a missing file in the list is skipped."""
    whole = api.kubeconfig
    credentials, contexts = tmp_path / "credentials", tmp_path / "contexts"
    credentials.write_text(yaml.safe_dump({**whole, "contexts": [], "current-context": ""}))
    wrong = [{**c, "context": {**c["context"], "cluster": "nowhere"}} for c in whole["contexts"]]
    contexts.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "contexts": whole["contexts"]}))
    shadowed = tmp_path / "shadowed"
    shadowed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "contexts": wrong}))
    listed = os.pathsep.join(str(p) for p in (tmp_path / "missing", credentials, contexts, shadowed))
    monkeypatch.setenv("KUBECONFIG", listed)
    made = providers.existing(None, whole["contexts"][0]["name"])
    assert str(made.kubeconfig) == listed  # recorded as given, to resume with
    client = kube.Kube(made.kubeconfig, made.context)
    assert client.get("v1", "Namespace", "default") is not None
