"""The emulated API's object store: resourceVersions, conflicts, selectors, patches, watches, deletion.

One lock guards everything (the sandbox serves one platform, not a fleet).
Every write bumps a single resourceVersion counter, stores a deep copy, and
appends an event that watchers read in order. The semantics follow the real
API server where the recovery can observe them: 409 on a stale update,
generation bumped on spec changes only, status written only through the
status subresource, finalizers holding a deletion with `deletionTimestamp`,
namespaces taking their objects with them, ownerReferences garbage-collected.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonpatch

from dr.sandbox import resources

Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name
MAX_EVENTS = 20_000


class ApiError(Exception):
    """An error the API answers as a Kubernetes `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- selectors ------------------------------------------------------------------------------

_SET = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_CMP = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*$")


def _requirement(part: str) -> Callable[[dict[str, str]], bool]:
    """One requirement of a label selector as a predicate over an object's labels."""
    if m := _CMP.match(part):
        key, op, value = m.groups()
        return (lambda labels: labels.get(key) != value) if op == "!=" else (lambda labels: labels.get(key) == value)
    if m := _SET.match(part):
        negate, key, op, values = m.groups()
        if op:
            options = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in":
                return lambda labels: labels.get(key) in options
            return lambda labels: labels.get(key) not in options
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate for a label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`."""
    if not selector:
        return lambda _: True
    terms = [_requirement(part) for part in re.split(r",(?![^()]*\))", selector)]
    return lambda labels: all(t(labels) for t in terms)


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """`metadata.name=x`, `metadata.namespace!=y` (the fields the platform filters on)."""
    if not selector:
        return lambda _: True
    terms = []
    for part in selector.split(","):
        m = re.match(r"^\s*(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise ApiError(400, "BadRequest", f"field label not supported: {part!r}")
        field_name, op, value = m.groups()
        attr = field_name.split(".")[1]

        def term(obj: dict[str, Any], a: str = attr, v: str = value, neg: bool = op == "!=") -> bool:
            return bool((obj.get("metadata", {}).get(a, "") == v) != neg)

        terms.append(term)
    return lambda obj: all(t(obj) for t in terms)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge, as the sandbox's documented simplification)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Event:
    rv: int
    type: str
    key: Key
    obj: dict[str, Any]


class Store:
    """Objects by key, one resourceVersion counter, an ordered event log."""

    def __init__(self, registry: resources.Registry) -> None:
        self.registry = registry
        self.objects: dict[Key, dict[str, Any]] = {}
        self.rv = 0
        self.events: list[Event] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.on_change: list[Callable[[Event], None]] = []

    # -- helpers ------------------------------------------------------------------------

    def _key(self, res: resources.Resource, namespace: str | None, name: str) -> Key:
        return (res.group, res.plural, namespace or "" if res.namespaced else "", name)

    def _emit(self, kind: str, key: Key, obj: dict[str, Any]) -> None:
        event = Event(self.rv, kind, key, copy.deepcopy(obj))
        self.events.append(event)
        if len(self.events) > MAX_EVENTS:
            del self.events[: len(self.events) - MAX_EVENTS]
        for hook in list(self.on_change):
            hook(event)
        self.changed.notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)

    def _not_found(self, res: resources.Resource, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{res.plural}{"." + res.group if res.group else ""} "{name}" not found',
            {"name": name, "group": res.group, "kind": res.plural},
        )

    # -- reads --------------------------------------------------------------------------

    def get(self, res: resources.Resource, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(self._key(res, namespace, name))
            if obj is None:
                raise self._not_found(res, name)
            return copy.deepcopy(obj)

    def list(
        self,
        res: resources.Resource,
        namespace: str | None,
        *,
        labels: str | None = None,
        fields: str | None = None,
        limit: int | None = None,
        cont: str | None = None,
    ) -> dict[str, Any]:
        match_labels, match_fields = label_matcher(labels), field_matcher(fields)
        with self.lock:
            items = [
                o
                for (g, p, ns, _), o in sorted(self.objects.items())
                if g == res.group
                and p == res.plural
                and (not namespace or ns == namespace)
                and match_labels(o.get("metadata", {}).get("labels") or {})
                and match_fields(o)
            ]
            start = 0
            if cont:
                try:
                    start = int(json.loads(bytes.fromhex(cont))["start"])
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "BadRequest", "invalid continue token") from None
            page = items[start:]
            meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
            if limit and len(page) > limit:
                page = page[:limit]
                meta["continue"] = json.dumps({"start": start + limit}).encode().hex()
                meta["remainingItemCount"] = len(items) - start - limit
            return {
                "kind": f"{res.kind}List",
                "apiVersion": res.group_version,
                "metadata": meta,
                "items": copy.deepcopy(page),
            }

    def watch(
        self,
        res: resources.Resource,
        namespace: str | None,
        since: int,
        *,
        labels: str | None = None,
        stop: threading.Event,
        timeout: float,
    ) -> Iterator[dict[str, Any]]:
        """Events after resourceVersion `since`, in order, then live ones until `timeout` or `stop`."""
        match = label_matcher(labels)
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        position = since
        try:
            with self.lock:
                if self.events and since and since < self.events[0].rv - 1:
                    raise ApiError(410, "Expired", f"too old resource version: {since} ({self.events[0].rv})")
            while not stop.is_set() and not deadline.is_set():
                with self.lock:
                    pending = [e for e in self.events if e.rv > position]
                    if not pending:
                        self.changed.wait(0.5)
                        continue
                for event in pending:
                    position = event.rv
                    g, p, ns, _ = event.key
                    if (g, p) != (res.group, res.plural) or (namespace and ns != namespace):
                        continue
                    if not match(event.obj.get("metadata", {}).get("labels") or {}):
                        continue
                    yield {"type": event.type, "object": event.obj}
        finally:
            timer.cancel()

    # -- writes -------------------------------------------------------------------------

    def create(self, res: resources.Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            else:
                raise ApiError(
                    422,
                    "Invalid",
                    f"{res.kind} is invalid: metadata.name: Required value",
                    {"kind": res.kind, "causes": [{"field": "metadata.name", "reason": "FieldValueRequired"}]},
                )
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", meta["name"]) or len(meta["name"]) > 253:
            raise ApiError(
                422,
                "Invalid",
                f'{res.kind} "{meta["name"]}" is invalid: metadata.name: Invalid value',
                {"name": meta["name"], "kind": res.kind},
            )
        with self.lock:
            if res.namespaced:
                ns = namespace or meta.get("namespace") or "default"
                if ("", "namespaces", "", ns) not in self.objects:
                    raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
                if self.objects[("", "namespaces", "", ns)].get("metadata", {}).get("deletionTimestamp"):
                    raise ApiError(403, "Forbidden", f"namespace {ns} is being terminated")
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            key = self._key(res, meta.get("namespace"), meta["name"])
            if key in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{res.plural} "{meta["name"]}" already exists',
                    {"name": meta["name"], "kind": res.plural},
                )
            obj["apiVersion"], obj["kind"] = res.group_version, res.kind
            if "status" in res.subresources:
                obj.pop("status", None)  # as the real API: status is written through the subresource only
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            meta.pop("deletionTimestamp", None)
            if res.kind == "Namespace":
                obj.setdefault("spec", {"finalizers": ["kubernetes"]})
                obj["status"] = {"phase": "Active"}
            self._bump(obj)
            self.objects[key] = obj
            self._emit("ADDED", key, obj)
            return copy.deepcopy(obj)

    def update(
        self,
        res: resources.Resource,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            key = self._key(res, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise self._not_found(res, name)
            sent_rv = body.get("metadata", {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.plural} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                    {"name": name, "kind": res.plural},
                )
            return self._store(res, key, current, copy.deepcopy(body), subresource)

    def _store(
        self, res: resources.Resource, key: Key, current: dict[str, Any], new: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        has_status = "status" in res.subresources
        if subresource == "status":
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status", {})
            new = merged
        elif has_status:
            new["status"] = copy.deepcopy(current.get("status"))  # spec writes never touch status
            if new["status"] is None:
                new.pop("status")
        meta = new.setdefault("metadata", {})
        for frozen in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if frozen in current["metadata"]:
                meta[frozen] = current["metadata"][frozen]
            else:
                meta.pop(frozen, None)
        new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
        spec_changed = {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in current.items() if k not in ("metadata", "status")
        }
        meta["generation"] = current["metadata"].get("generation", 1) + (1 if spec_changed else 0)
        if new == current:
            return copy.deepcopy(current)
        self._bump(new)
        self.objects[key] = new
        self._emit("MODIFIED", key, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(key)
        return copy.deepcopy(new)

    def patch(
        self,
        res: resources.Resource,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            key = self._key(res, namespace, name)
            current = self.objects.get(key)
            if patch_type == "application/apply-patch+yaml":
                if current is None:
                    body = copy.deepcopy(patch)
                    body.setdefault("metadata", {})["managedFields"] = [_managed(field_manager, "Apply")]
                    return self.create(res, namespace, body)
                new = merge_patch(current, patch)
                _record_manager(new, field_manager, "Apply")
                return self._store(res, key, current, new, subresource)
            if current is None:
                raise self._not_found(res, name)
            if patch_type == "application/json-patch+json":
                try:
                    new = jsonpatch.apply_patch(current, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
            elif patch_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
                new = merge_patch(current, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {patch_type!r}")
            sent_rv = (patch.get("metadata", {}) if isinstance(patch, dict) else {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}"')
            if field_manager:
                _record_manager(new, field_manager, "Update")
            return self._store(res, key, current, new, subresource)

    def delete(self, res: resources.Resource, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            key = self._key(res, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise self._not_found(res, name)
            if current["metadata"].get("finalizers") or res.kind == "Namespace":
                if not current["metadata"].get("deletionTimestamp"):
                    marked = copy.deepcopy(current)
                    marked["metadata"]["deletionTimestamp"] = now()
                    if res.kind == "Namespace":
                        marked["status"] = {"phase": "Terminating"}
                    self._bump(marked)
                    self.objects[key] = marked
                    self._emit("MODIFIED", key, marked)
                if res.kind == "Namespace":
                    self._finish_namespace(key)
                return copy.deepcopy(self.objects.get(key, current))
            self._remove(key)
            return copy.deepcopy(current)

    def _finish_namespace(self, key: Key) -> None:
        ns = key[3]
        for other in [k for k in self.objects if k[2] == ns]:
            obj = self.objects[other]
            if obj["metadata"].get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    obj = copy.deepcopy(obj)
                    obj["metadata"]["deletionTimestamp"] = now()
                    self._bump(obj)
                    self.objects[other] = obj
                    self._emit("MODIFIED", other, obj)
                continue
            self._remove(other, finish_namespace=False)
        done = key in self.objects and not self.objects[key]["metadata"].get("finalizers")
        if done and not any(k[2] == ns for k in self.objects):
            self._remove(key)

    def _remove(self, key: Key, *, finish_namespace: bool = True) -> None:
        obj = self.objects.pop(key, None)
        if obj is None:
            return
        self.rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit("DELETED", key, gone)
        uid = obj["metadata"].get("uid")
        # Garbage collection: dependents whose every owner is gone go too.
        for dep_key, dep in list(self.objects.items()):
            owners = dep.get("metadata", {}).get("ownerReferences") or []
            if owners and any(o.get("uid") == uid for o in owners):
                live = {o["metadata"].get("uid") for o in self.objects.values()}
                if not any(o.get("uid") in live for o in owners):
                    if dep["metadata"].get("finalizers"):
                        continue
                    self._remove(dep_key, finish_namespace=finish_namespace)
        if finish_namespace and key[1] != "namespaces" and key[2]:
            ns_key = ("", "namespaces", "", key[2])
            ns = self.objects.get(ns_key)
            if ns and ns["metadata"].get("deletionTimestamp"):
                self._finish_namespace(ns_key)


def _managed(manager: str | None, operation: str) -> dict[str, Any]:
    return {
        "manager": manager or "unknown",
        "operation": operation,
        "apiVersion": "v1",
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    }


def _record_manager(obj: dict[str, Any], manager: str | None, operation: str) -> None:
    fields = [f for f in obj.setdefault("metadata", {}).get("managedFields") or [] if f.get("manager") != manager]
    obj["metadata"]["managedFields"] = [*fields, _managed(manager, operation)]
