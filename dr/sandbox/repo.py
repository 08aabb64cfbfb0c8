"""Turning an Argo CD Application's source into manifests, as the repo-server would.

Git sources map a repository URL to a local directory (the sandbox's
`repos` setting; the repository is never cloned). Three source types, as Argo
CD detects them: a directory with `kustomization.yaml` is Kustomize (the
`resources:` list of files and directories, recursively, plus `namespace:`,
`labels`/`commonLabels` and `commonAnnotations`); a directory without one is
a plain Directory source (its YAML files; subdirectories with
`directory.recurse`); a `chart:` is Helm, rendered through `charts`. Any other
kustomize feature is an error that says so, never silently dropped. The
revision of a Git source is a SHA-1 over the directory's files, so that it
changes exactly when the content does, like a commit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from dr.sandbox import charts

Manifest = dict[str, Any]
KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "commonLabels", "commonAnnotations"}


class RenderError(Exception):
    """What Argo CD shows as a ComparisonError."""


def normalise(url: str) -> str:
    return url.strip().removesuffix("/").removesuffix(".git").lower()


def locate(repos: dict[str, str], url: str) -> Path:
    for known, directory in repos.items():
        if normalise(known) == normalise(url):
            return Path(directory)
    raise RenderError(
        f"rpc error: code = Unknown desc = repository not found: {url}"
        f" (the sandbox serves: {', '.join(sorted(repos)) or 'none'}; add one with `dr sandbox up --repo URL=DIR`)"
    )


def revision(root: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _documents(path: Path) -> list[Manifest]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"failed to parse {path.name}: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"{path.name}: every document needs apiVersion and kind")
    return docs


def kustomize(directory: Path, root: Path) -> list[Manifest]:
    path = directory / "kustomization.yaml"
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"failed to read {path.relative_to(root)}: {exc}") from exc
    unsupported = set(spec) - KUSTOMIZE_KEYS
    if unsupported:
        raise RenderError(
            f"{path.relative_to(root)}: kustomize {', '.join(sorted(unsupported))} is not supported by the sandbox"
        )
    out: list[Manifest] = []
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        if not target.is_relative_to(root.resolve()):
            raise RenderError(f"{path.relative_to(root)}: resource {entry!r} is outside the repository")
        if target.is_dir():
            if not (target / "kustomization.yaml").exists():
                raise RenderError(f"{path.relative_to(root)}: {entry}/ has no kustomization.yaml")
            out += kustomize(target, root)
        elif target.is_file():
            out += _documents(target)
        else:
            raise RenderError(f"{path.relative_to(root)}: resource {entry!r} does not exist")
    labels = {**(spec.get("commonLabels") or {})}
    for group in spec.get("labels") or []:
        labels.update(group.get("pairs") or {})
    for doc in out:
        meta = doc.setdefault("metadata", {})
        if spec.get("namespace") and doc["kind"] not in CLUSTER_KINDS:
            meta["namespace"] = spec["namespace"]
        if labels:
            meta["labels"] = {**(meta.get("labels") or {}), **labels}
        if spec.get("commonAnnotations"):
            meta["annotations"] = {**(meta.get("annotations") or {}), **spec["commonAnnotations"]}
    return out


# Kinds kustomize knows to be cluster-scoped (its `namespace:` leaves them alone).
CLUSTER_KINDS = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterSecretStore",
    "ClusterExternalSecret",
    "PersistentVolume",
    "StorageClass",
}


def directory(path: Path, recurse: bool) -> list[Manifest]:
    found = sorted(path.rglob("*") if recurse else path.iterdir())
    out: list[Manifest] = []
    for file in found:
        if file.is_file() and file.suffix in (".yaml", ".yml", ".json"):
            out += _documents(file)
    return out


def render(
    source: dict[str, Any], repos: dict[str, str], app_name: str, namespace: str
) -> tuple[str, str, list[Manifest]]:
    """(source type, revision, manifests) for one Application source."""
    url = str(source.get("repoURL") or "")
    if source.get("chart"):
        helm = source.get("helm") or {}
        values: dict[str, Any] = {}
        if helm.get("values"):
            try:
                values = yaml.safe_load(helm["values"]) or {}
            except yaml.YAMLError as exc:
                raise RenderError(f"helm values are not valid YAML: {exc}") from exc
        values.update(helm.get("valuesObject") or {})
        release = str(helm.get("releaseName") or app_name)
        try:
            manifests = charts.render(str(source["chart"]), url, release, namespace, values)
        except charts.UnknownChart as exc:
            raise RenderError(str(exc)) from exc
        return "Helm", str(source.get("targetRevision") or ""), manifests
    root = locate(repos, url)
    target = (root / str(source.get("path") or ".")).resolve()
    if not target.is_dir():
        raise RenderError(f"rpc error: code = Unknown desc = {source.get('path')}: app path does not exist")
    rev = revision(root)
    if (target / "kustomization.yaml").exists():
        return "Kustomize", rev, kustomize(target, root)
    return "Directory", rev, directory(target, bool((source.get("directory") or {}).get("recurse")))
