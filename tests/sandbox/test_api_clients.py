"""The sandbox's API (real and emulated) through the real kubernetes client, typed and dynamic: what dr will see."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from dr.sandbox import backends
from tests.polling import eventually

ApiException = kubernetes.client.ApiException


def core(client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client)


def test_discovery_version_and_defaults(
    client: kubernetes.client.ApiClient, api: backends.Emulated | backends.Real
) -> None:
    """/version answers; default namespaces, the kubernetes Service and kube-root-ca.crt exist."""
    expected = {"real": "v1.37.2", "emulated": "v1.31.0-dr-sandbox"}[api.name]
    assert expected == kubernetes.client.VersionApi(client).get_code().git_version
    names = {n.metadata.name for n in core(client).list_namespace().items}
    assert {"default", "kube-system", "kube-public"} <= names
    service = core(client).read_namespaced_service("kubernetes", "default")
    assert "https" == service.spec.ports[0].name
    deadline = time.monotonic() + 30  # the real controller manager publishes it a few seconds after start
    while True:
        try:
            ca = core(client).read_namespaced_config_map("kube-root-ca.crt", "default")
            break
        except ApiException:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert "BEGIN CERTIFICATE" in ca.data["ca.crt"]


def test_dynamic_client_finds_builtin_types(client: kubernetes.client.ApiClient) -> None:
    """The dynamic client resolves kinds through discovery, for core and grouped APIs."""
    dyn = DynamicClient(client)
    for api_version, kind in (
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("coordination.k8s.io/v1", "Lease"),
        ("rbac.authorization.k8s.io/v1", "Role"),
    ):
        assert kind == dyn.resources.get(api_version=api_version, kind=kind).kind


def test_crud_conflict_and_status_errors(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """Create, read, update; a stale resourceVersion is 409 Conflict; missing is 404; a bad name is 422."""
    api = core(client)
    created = api.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    assert created.metadata.uid
    assert created.metadata.creation_timestamp
    stale = created.metadata.resource_version
    created.data = {"a": "2"}
    updated = api.replace_namespaced_config_map("cm", namespace, created)
    assert int(updated.metadata.resource_version) > int(stale)
    updated.metadata.resource_version = stale
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_config_map("cm", namespace, updated)
    assert (409, "Conflict") == (conflict.value.status, _reason(conflict.value))
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_config_map("absent", namespace)
    assert (404, "NotFound") == (missing.value.status, _reason(missing.value))
    with pytest.raises(ApiException) as invalid:
        api.create_namespaced_config_map(namespace, {"metadata": {"name": "Not_Valid"}})
    assert (422, "Invalid") == (invalid.value.status, _reason(invalid.value))
    with pytest.raises(ApiException) as exists:
        api.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    assert (409, "AlreadyExists") == (exists.value.status, _reason(exists.value))
    named = api.create_namespaced_config_map(namespace, {"metadata": {"generateName": "gen-"}})
    assert named.metadata.name.startswith("gen-")
    api.delete_namespaced_config_map("cm", namespace)
    with pytest.raises(ApiException):
        api.read_namespaced_config_map("cm", namespace)


def _reason(exc: ApiException) -> str:
    import json

    return str(json.loads(exc.body)["reason"])


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=vault", ["a", "b"]),
        ("app==vault", ["a", "b"]),
        ("app!=vault", ["c", "d"]),
        ("tier in (db,cache)", ["b", "c"]),
        ("tier notin (db)", ["a", "c", "d"]),
        ("tier", ["b", "c"]),
        ("!tier", ["a", "d"]),
        ("app=vault,tier=db", ["b"]),
    ],
)
def test_label_selectors(
    client: kubernetes.client.ApiClient, namespace: str, selector: str, expected: list[str]
) -> None:
    """Every label selector form filters as the real API does."""
    api = core(client)
    for name, labels in (
        ("a", {"app": "vault"}),
        ("b", {"app": "vault", "tier": "db"}),
        ("c", {"app": "eso", "tier": "cache"}),
        ("d", {}),
    ):
        api.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})
    found = sorted(i.metadata.name for i in api.list_namespaced_config_map(namespace, label_selector=selector).items)
    assert expected == [n for n in found if n in "abcd" and len(n) == 1]


def test_field_selector_and_paging(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """metadata.name field selector; limit/continue pages through everything exactly once."""
    api = core(client)
    for i in range(7):
        api.create_namespaced_config_map(namespace, {"metadata": {"name": f"p{i}"}})
    picked = api.list_namespaced_config_map(namespace, field_selector="metadata.name=p3").items
    assert ["p3"] == [i.metadata.name for i in picked]
    seen, token = [], None
    while True:
        page = api.list_namespaced_config_map(namespace, limit=3, _continue=token, label_selector="")
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert sorted(n for n in seen if n.startswith("p")) == [f"p{i}" for i in range(7)]
    assert len(seen) == len(set(seen))


def test_watch_from_a_resource_version_in_order(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """A watch from resourceVersion N gets every later event, in order: ADDED, MODIFIED, DELETED."""
    api = core(client)
    start = api.list_namespaced_config_map(namespace).metadata.resource_version
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "w"}, "data": {"v": "1"}})
    api.patch_namespaced_config_map("w", namespace, {"data": {"v": "2"}})
    api.delete_namespaced_config_map("w", namespace)
    events = []
    for event in kubernetes.watch.Watch().stream(
        api.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=2
    ):
        if event["object"].metadata.name == "w":
            events.append((event["type"], (event["object"].data or {}).get("v")))
        if len(events) == 3:
            break
    assert [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")] == events


def test_live_watch_sees_new_events(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """Events written after the watch started arrive on it."""
    api = core(client)
    threading.Timer(0.3, lambda: api.create_namespaced_config_map(namespace, {"metadata": {"name": "late"}})).start()
    for event in kubernetes.watch.Watch().stream(api.list_namespaced_config_map, namespace, timeout_seconds=5):
        if event["object"].metadata.name == "late":
            assert "ADDED" == event["type"]
            break
    else:
        pytest.fail("the live event never arrived")


def test_patches_merge_json_strategic(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """Merge patch removes with null; JSON patch applies ops; strategic merge behaves as merge."""
    api = core(client)
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "pt"}, "data": {"a": "1", "b": "2"}})
    dyn = DynamicClient(client).resources.get(api_version="v1", kind="ConfigMap")
    dyn.patch(
        name="pt",
        namespace=namespace,
        body={"data": {"a": None, "c": "3"}},
        content_type="application/merge-patch+json",
    )
    assert {"b": "2", "c": "3"} == api.read_namespaced_config_map("pt", namespace).data
    dyn.patch(
        name="pt",
        namespace=namespace,
        body=[{"op": "replace", "path": "/data/b", "value": "20"}],
        content_type="application/json-patch+json",
    )
    assert "20" == api.read_namespaced_config_map("pt", namespace).data["b"]
    api.patch_namespaced_config_map("pt", namespace, {"data": {"d": "4"}})  # strategic merge by default
    assert {"b": "20", "c": "3", "d": "4"} == api.read_namespaced_config_map("pt", namespace).data


def test_server_side_apply_creates_and_records_the_manager(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """apply-patch+yaml creates when absent, updates when present, and records the field manager."""
    dyn = DynamicClient(client).resources.get(api_version="v1", kind="ConfigMap")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": namespace},
        "data": {"k": "v1"},
    }
    dyn.server_side_apply(body=body, name="ssa", namespace=namespace, field_manager="dr")
    body["data"] = {"k": "v2"}
    applied = dyn.server_side_apply(body=body, name="ssa", namespace=namespace, field_manager="dr")
    assert "v2" == applied.data.k
    assert ["dr"] == [m.manager for m in applied.metadata.managedFields]


def _crd(plural: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.example.dr"},
        "spec": {
            "group": "example.dr",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


def _established(client: kubernetes.client.ApiClient, name: str) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(client)
    deadline = time.monotonic() + 10
    while True:
        status = ext.read_custom_resource_definition(name).status  # none until the CRD controller's first pass
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_status_subresource_is_isolated(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """Spec writes do not touch status and status writes do not touch spec; generation follows spec only."""
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(_crd("gadgets", "Gadget"))
    _established(client, "gadgets.example.dr")
    gadgets = DynamicClient(client).resources.get(api_version="example.dr/v1", kind="Gadget")
    body = {"apiVersion": "example.dr/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 1}}
    created = gadgets.create(body={**body, "status": {"ready": 99}}, namespace=namespace)
    assert created.get("status") is None
    merge = "application/merge-patch+json"
    gadgets.status.patch(body={"status": {"ready": 1}}, name="g", namespace=namespace, content_type=merge)
    after_spec = gadgets.patch(
        body={"spec": {"size": 3}, "status": {"ready": 42}}, name="g", namespace=namespace, content_type=merge
    )
    assert (3, 1, 2) == (after_spec.spec.size, after_spec.status.ready, after_spec.metadata.generation)
    after_status = gadgets.status.patch(
        body={"spec": {"size": 9}, "status": {"ready": 3}}, name="g", namespace=namespace, content_type=merge
    )
    assert (3, 3, 2) == (after_status.spec.size, after_status.status.ready, after_status.metadata.generation)


def test_crd_appears_in_discovery_and_is_established(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """A created CRD becomes Established, its kind resolves through discovery, and its objects are servable."""
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(_crd("widgets", "Widget"))
    _established(client, "widgets.example.dr")
    widgets = DynamicClient(client).resources.get(api_version="example.dr/v1", kind="Widget")
    widgets.create(
        body={"apiVersion": "example.dr/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}},
        namespace=namespace,
    )
    assert 3 == widgets.get(name="w1", namespace=namespace).spec.size


def test_finalizers_hold_a_deletion(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """With a finalizer, delete only sets deletionTimestamp; removing the finalizer completes it."""
    api = core(client)
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "held", "finalizers": ["dr.test/hold"]}})
    api.delete_namespaced_config_map("held", namespace)
    held = api.read_namespaced_config_map("held", namespace)
    assert held.metadata.deletion_timestamp is not None
    api.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        api.read_namespaced_config_map("held", namespace)
    assert 404 == gone.value.status


def test_namespace_deletion_and_owner_garbage_collection(client: kubernetes.client.ApiClient) -> None:
    """Deleting a namespace removes its objects; deleting an owner removes its dependents."""
    api = core(client)
    api.create_namespace({"metadata": {"name": "doomed"}})
    owner = api.create_namespaced_config_map("doomed", {"metadata": {"name": "owner"}})
    api.create_namespaced_secret(
        "doomed",
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )
    api.delete_namespaced_config_map("owner", "doomed")

    def gone(read: Any, *args: str) -> bool:
        try:
            read(*args)
        except ApiException as exc:
            return 404 == exc.status
        return False

    # Both happen in controllers (the garbage collector, the namespace controller): eventually, not at once.
    eventually(lambda: gone(api.read_namespaced_secret, "child", "doomed"), "the dependent to be collected", 30)
    api.create_namespaced_config_map("doomed", {"metadata": {"name": "left"}})
    api.delete_namespace("doomed")
    eventually(lambda: gone(api.read_namespaced_config_map, "left", "doomed"), "the namespace's objects to go", 30)
    eventually(lambda: gone(api.read_namespace, "doomed"), "the namespace to go", 30)


def test_token_request_and_review(
    client: kubernetes.client.ApiClient, namespace: str, api: backends.Emulated | backends.Real
) -> None:
    """A TokenRequest JWT reviews as the service account with its uid and the requested audiences; forgeries fail."""
    core_api = core(client)
    account = core_api.create_namespaced_service_account(namespace, {"metadata": {"name": "eso"}})
    issued = core_api.create_namespaced_service_account_token(
        "eso", namespace, {"spec": {"audiences": ["vault"], "expirationSeconds": 600}}
    )
    auth = kubernetes.client.AuthenticationV1Api(client)
    review = auth.create_token_review({"spec": {"token": issued.status.token, "audiences": ["vault"]}})
    assert review.status.authenticated is True
    assert f"system:serviceaccount:{namespace}:eso" == review.status.user.username
    assert account.metadata.uid == review.status.user.uid
    assert ["vault"] == review.status.audiences
    head, body, _ = issued.status.token.split(".")
    forged = auth.create_token_review({"spec": {"token": f"{head}.{body}.AAAA"}})
    assert not forged.status.authenticated  # the real API omits the field when false
    wrong_audience = auth.create_token_review({"spec": {"token": issued.status.token, "audiences": ["other"]}})
    assert not wrong_audience.status.authenticated


def test_unknown_bearer_token_is_401(api: backends.Emulated | backends.Real, tmp_path: Path) -> None:
    """A kubeconfig with a wrong token gets 401 Unauthorized."""
    config = copy.deepcopy(api.kubeconfig)
    config["users"][0]["user"]["token"] = "not-the-token"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ApiException) as denied:
        core(kubernetes.config.new_client_from_config(str(path))).list_namespace()
    assert 401 == denied.value.status


def test_fault_knobs_answer_with_retry_after_and_drop_watches(
    api: backends.Emulated | backends.Real, client: kubernetes.client.ApiClient
) -> None:
    """Injected 429/503 answers carry Retry-After; with drop_watches a long watch ends within seconds."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cadata=api.ca.pem)
    request = urllib.request.Request(f"{api.url}/api/v1/namespaces", headers={"Authorization": f"Bearer {api.token}"})
    api.faults.error_rate = 1.0
    try:
        codes: dict[int, str | None] = {}
        for _ in range(40):
            try:
                urllib.request.urlopen(request, context=context, timeout=5)
            except urllib.error.HTTPError as exc:
                codes[exc.code] = exc.headers.get("Retry-After")
        assert set(codes) <= {429, 500, 503}
        assert all("1" == after for code, after in codes.items() if code in (429, 503))
        assert set(codes) & {429, 503}
    finally:
        api.faults.error_rate = 0.0
    api.faults.drop_watches = True
    try:
        start = time.monotonic()
        for _ in kubernetes.watch.Watch().stream(core(client).list_namespace, timeout_seconds=60):
            pass
        assert time.monotonic() - start < 10
    finally:
        api.faults.drop_watches = False


def test_a_namespace_with_a_finalizer_pending_stays_terminating_until_it_is_removed(
    client: kubernetes.client.ApiClient,
) -> None:
    """The namespace controller deletes what it can, reports what holds it, and finishes once the finalizer goes."""
    api = core(client)
    api.create_namespace({"metadata": {"name": "held-ns"}})
    api.create_namespaced_config_map("held-ns", {"metadata": {"name": "held", "finalizers": ["dr.test/hold"]}})
    api.create_namespaced_config_map("held-ns", {"metadata": {"name": "free"}})
    api.delete_namespace("held-ns")

    def free_gone() -> bool:
        return "free" not in {c.metadata.name for c in api.list_namespaced_config_map("held-ns").items}

    eventually(free_gone, "the namespace's other objects deleted", 30)
    namespace = api.read_namespace("held-ns")
    assert "Terminating" == namespace.status.phase
    assert api.read_namespaced_config_map("held", "held-ns").metadata.deletion_timestamp is not None
    api.patch_namespaced_config_map("held", "held-ns", {"metadata": {"finalizers": None}})

    def namespace_gone() -> bool:
        try:
            api.read_namespace("held-ns")
        except ApiException as exc:
            return 404 == exc.status
        return False

    eventually(namespace_gone, "the namespace to finish", 60)
