"""What the platform's Helm charts create, as a table: the sandbox has no Helm and no chart repositories.

An Argo CD Application with a Helm source (`chart:` + `repoURL:`) renders
here into the objects the real chart would create that matter to a recovery
and to health: workloads (with the chart's own names and labels), services,
service accounts and the chart's CRDs. Values the charts really read that
change this shape are honoured; anything else in the values is ignored.

- `vault` (helm.releases.hashicorp.com) and `openbao` (openbao.github.io/openbao-helm):
  StatefulSet `<fullname>` (`server.ha.replicas` when `server.ha.enabled`,
  else 1; Parallel; a `data` claim of `server.dataStorage.size`, an `audit`
  one with `server.auditStorage.enabled`), Services
  `<fullname>`, `-internal`, `-active`, `-standby`, a ServiceAccount, and
  Deployment `<fullname>-agent-injector` unless `injector.enabled: false`.
- `external-secrets` (charts.external-secrets.io): Deployments `<fullname>`,
  `-cert-controller`, `-webhook` with the chart's arguments, Service
  `-webhook`, a ServiceAccount, the controller's ClusterRole and
  leader-election Role bound to it, and ESO's upstream CRDs (from its Go
  module, built by `make testbed`) unless `installCRDs: false`.
- `kube-prometheus-stack` (prometheus-community.github.io/helm-charts):
  Deployments `<fullname>-operator`, `-kube-state-metrics`, `-grafana`
  (unless `grafana.enabled: false`), DaemonSet `-prometheus-node-exporter`,
  StatefulSets `prometheus-<fullname>-prometheus` and
  `alertmanager-<fullname>-alertmanager` (the operator's, in reality), and
  the monitoring.coreos.com CRDs.
- `argo-cd` (argoproj.github.io/argo-helm): Deployments `<fullname>-server`,
  `-repo-server`, `-redis`, `-dex-server`, `-notifications-controller`,
  `-applicationset-controller`, StatefulSet `<fullname>-application-controller`,
  and the argoproj.io CRDs unless `crds.install: false`.

`<fullname>` is `fullnameOverride` when set, else the release name (the
charts' own rule whenever the release name contains the chart name). A chart
not in the table is an error that names this module, never an empty render.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from dr.adapters import sandbox_process

Manifest = dict[str, Any]


class UnknownChart(Exception):
    pass


def crd(
    group: str,
    kind: str,
    plural: str,
    *,
    scope: str = "Namespaced",
    versions: tuple[str, ...] = ("v1",),
    status: bool = True,
) -> Manifest:
    """A CRD whose schema accepts any object (the sandbox does not validate custom resources).

    Argo CD's own CRDs have no status subresource (its controller writes status with the object).
    """
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": i == 0,
                    **({"subresources": {"status": {}}} if status else {}),
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
                for i, v in enumerate(versions)
            ],
        },
    }


def _labels(name: str, release: str, component: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release}
    if component:
        labels["component"] = component
    return labels


def workload(
    kind: str,
    name: str,
    namespace: str,
    labels: dict[str, str],
    image: str,
    *,
    replicas: int = 1,
    ports: tuple[int, ...] = (),
    account: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    container: dict[str, Any] = {"name": name.rsplit("-", 1)[-1] if kind != "DaemonSet" else "exporter", "image": image}
    if ports:
        container["ports"] = [{"containerPort": p} for p in ports]
    pod: dict[str, Any] = {"containers": [container]}
    if account:
        pod["serviceAccountName"] = account
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if kind != "DaemonSet":
        spec["replicas"] = replicas
    spec.update(extra or {})
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def service(name: str, namespace: str, selector: dict[str, str], ports: tuple[int, ...], **spec: Any) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "ports": [{"name": f"p{p}", "port": p, "targetPort": p} for p in ports], **spec},
    }


def account(name: str, namespace: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def _get(values: dict[str, Any], dotted: str, default: Any) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def vault(chart: str, full: str, release: str, ns: str, values: dict[str, Any]) -> list[Manifest]:
    ha = bool(_get(values, "server.ha.enabled", False))
    replicas = int(_get(values, "server.ha.replicas", 3)) if ha else 1
    labels = _labels(chart, release, "server")
    claims = [
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": str(_get(values, "server.dataStorage.size", "10Gi"))}},
            },
        }
    ]
    if _get(values, "server.auditStorage.enabled", False):
        audit = str(_get(values, "server.auditStorage.size", "10Gi"))
        claims.append(
            {
                "metadata": {"name": "audit"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": audit}}},
            }
        )
    image = "quay.io/openbao/openbao:2.5.3" if chart == "openbao" else "hashicorp/vault:1.18.1"
    objects = [
        account(full, ns),
        service(full, ns, labels, (8200, 8201), publishNotReadyAddresses=True),
        service(f"{full}-internal", ns, labels, (8200, 8201), clusterIP="None", publishNotReadyAddresses=True),
        service(f"{full}-active", ns, {**labels, f"{chart}-active": "true"}, (8200, 8201)),
        service(f"{full}-standby", ns, {**labels, f"{chart}-active": "false"}, (8200, 8201)),
        workload(
            "StatefulSet",
            full,
            ns,
            labels,
            image,
            replicas=replicas,
            ports=(8200, 8201),
            account=full,
            extra={
                "serviceName": f"{full}-internal",
                "podManagementPolicy": "Parallel",
                "volumeClaimTemplates": claims,
            },
        ),
    ]
    if _get(values, "injector.enabled", True):
        injector = _labels(f"{chart}-agent-injector", release, "webhook")
        objects.append(workload("Deployment", f"{full}-agent-injector", ns, injector, "hashicorp/vault-k8s:1.5.0"))
    return objects


ESO_VERSION = "v0.16.2"  # the operator testbed/eso builds; the chart of the same version runs it
ESO_CRDS = sandbox_process.TESTBED_BIN / "external-secrets-crds.yaml"  # the module's deploy/crds/bundle.yaml


def external_secrets(chart: str, full: str, release: str, ns: str, values: dict[str, Any]) -> list[Manifest]:
    image = f"oci.external-secrets.io/external-secrets/external-secrets:{ESO_VERSION}"
    port = _get(values, "metrics.listen.port", 8080)
    logging = [f"--loglevel={_get(values, 'log.level', 'info')}", "--zap-time-encoding=epoch"]
    args = {
        "": [f"--concurrent={values.get('concurrent', 1)}", f"--metrics-addr=:{port}", *logging],
        "-cert-controller": ["certcontroller", f"--service-name={full}-webhook", f"--metrics-addr=:{port}", *logging],
        "-webhook": ["webhook", "--port=10250", f"--metrics-addr=:{port}", *logging],
    }
    objects = [account(full, ns), *_eso_rbac(full, ns)]
    for suffix, arguments in args.items():
        labels = _labels(f"{chart}{suffix}", release)
        deploy = workload("Deployment", f"{full}{suffix}", ns, labels, image, account=full)
        deploy["spec"]["template"]["spec"]["containers"][0]["args"] = arguments
        objects.append(deploy)
    objects.append(service(f"{full}-webhook", ns, _labels(f"{chart}-webhook", release), (443,)))
    if values.get("installCRDs", True):
        objects += _eso_crds()
    return objects


def _eso_crds() -> list[Manifest]:
    """ESO's upstream CRDs where `make testbed` put them (schemas the real API server validates against);
    the emulator, which validates no custom resource, gets open ones when they are not built."""
    if ESO_CRDS.is_file():
        with ESO_CRDS.open("rb") as f:
            return [d for d in yaml.load_all(f, Loader=yaml.CSafeLoader) if d]
    group = "external-secrets.io"
    return [
        crd(group, "ExternalSecret", "externalsecrets"),
        crd(group, "SecretStore", "secretstores"),
        crd(group, "ClusterSecretStore", "clustersecretstores", scope="Cluster"),
        crd(group, "ClusterExternalSecret", "clusterexternalsecrets", scope="Cluster"),
        crd(group, "PushSecret", "pushsecrets", versions=("v1alpha1",)),
    ]


def _eso_rbac(full: str, ns: str) -> list[Manifest]:
    """The chart's controller ClusterRole (default values) and leader-election Role, bound to its account:
    what the real operator is allowed on the real API server."""
    es, gen = "external-secrets.io", "generators.external-secrets.io"
    kinds = ["secretstores", "clustersecretstores", "externalsecrets", "clusterexternalsecrets", "pushsecrets"]
    kinds.append("clusterpushsecrets")
    generators = "acraccesstokens clustergenerators ecrauthorizationtokens fakes gcraccesstokens githubaccesstokens"
    generators += " quayaccesstokens passwords stssessiontokens uuids vaultdynamicsecrets webhooks grafanas"
    read = ["get", "list", "watch"]
    rules = [
        _rule(es, kinds, read),
        _rule(es, [k for kind in kinds for k in (kind, f"{kind}/status")], ["get", "update", "patch"]),
        _rule(gen, ["generatorstates"], [*read, "create", "update", "patch", "delete", "deletecollection"]),
        _rule(gen, generators.split(), read),
        _rule("", ["serviceaccounts", "namespaces", "configmaps"], read),
        _rule("", ["secrets"], [*read, "create", "update", "delete", "patch"]),
        _rule("", ["serviceaccounts/token"], ["create"]),
        _rule("", ["events"], ["create", "patch"]),
        _rule(es, ["externalsecrets", "pushsecrets"], ["create", "update", "delete"]),
    ]
    election = [
        {**_rule("", ["configmaps"], ["get", "update", "patch"]), "resourceNames": ["external-secrets-controller"]},
        _rule("", ["configmaps"], ["create"]),
        _rule("coordination.k8s.io", ["leases"], ["get", "create", "update", "patch"]),
    ]
    rbac = "rbac.authorization.k8s.io"
    subjects = [{"kind": "ServiceAccount", "name": full, "namespace": ns}]

    def role(kind: str, name: str, granted: list[dict[str, Any]], namespace: str | None = None) -> list[Manifest]:
        meta = {"name": name, **({"namespace": namespace} if namespace else {})}
        binding = "ClusterRoleBinding" if kind == "ClusterRole" else "RoleBinding"
        ref = {"apiGroup": rbac, "kind": kind, "name": name}
        return [
            {"apiVersion": f"{rbac}/v1", "kind": kind, "metadata": meta, "rules": granted},
            {"apiVersion": f"{rbac}/v1", "kind": binding, "metadata": meta, "roleRef": ref, "subjects": subjects},
        ]

    return [*role("ClusterRole", f"{full}-controller", rules), *role("Role", f"{full}-leaderelection", election, ns)]


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def kube_prometheus_stack(chart: str, full: str, release: str, ns: str, values: dict[str, Any]) -> list[Manifest]:
    def deploy(name: str, image: str) -> Manifest:
        return workload("Deployment", name, ns, _labels(name, release), image)

    objects = [
        deploy(f"{full}-operator", "quay.io/prometheus-operator/prometheus-operator:v0.79.2"),
        deploy(f"{full}-kube-state-metrics", "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.14.0"),
        workload(
            "DaemonSet",
            f"{full}-prometheus-node-exporter",
            ns,
            _labels("prometheus-node-exporter", release),
            "quay.io/prometheus/node-exporter:v1.8.2",
        ),
        workload(
            "StatefulSet",
            f"prometheus-{full}-prometheus",
            ns,
            {"app.kubernetes.io/name": "prometheus", "prometheus": f"{full}-prometheus"},
            "quay.io/prometheus/prometheus:v3.1.0",
            ports=(9090,),
            extra={"serviceName": "prometheus-operated"},
        ),
        workload(
            "StatefulSet",
            f"alertmanager-{full}-alertmanager",
            ns,
            {"app.kubernetes.io/name": "alertmanager", "alertmanager": f"{full}-alertmanager"},
            "quay.io/prometheus/alertmanager:v0.28.0",
            ports=(9093,),
            extra={"serviceName": "alertmanager-operated"},
        ),
        service(f"{full}-alertmanager", ns, {"app.kubernetes.io/name": "alertmanager"}, (9093,)),
        service(f"{full}-prometheus", ns, {"app.kubernetes.io/name": "prometheus"}, (9090,)),
    ]
    if _get(values, "grafana.enabled", True):
        objects.append(deploy(f"{full}-grafana", "docker.io/grafana/grafana:11.4.0"))
    group = "monitoring.coreos.com"
    objects += [
        crd(group, "Prometheus", "prometheuses"),
        crd(group, "Alertmanager", "alertmanagers"),
        crd(group, "PrometheusRule", "prometheusrules"),
        crd(group, "ServiceMonitor", "servicemonitors"),
        crd(group, "PodMonitor", "podmonitors"),
        crd(group, "AlertmanagerConfig", "alertmanagerconfigs", versions=("v1alpha1",)),
    ]
    return objects


def argo_cd(chart: str, full: str, release: str, ns: str, values: dict[str, Any]) -> list[Manifest]:
    image = "quay.io/argoproj/argocd:v2.14.2"
    objects: list[Manifest] = []
    for suffix in ("server", "repo-server", "redis", "dex-server", "notifications-controller"):
        name = f"{full}-{suffix}"
        objects.append(workload("Deployment", name, ns, {"app.kubernetes.io/name": name}, image))
    objects.append(
        workload(
            "Deployment",
            f"{full}-applicationset-controller",
            ns,
            {"app.kubernetes.io/name": f"{full}-applicationset-controller"},
            image,
        )
    )
    objects.append(
        workload(
            "StatefulSet",
            f"{full}-application-controller",
            ns,
            {"app.kubernetes.io/name": f"{full}-application-controller"},
            image,
            account=f"{full}-application-controller",
            extra={"serviceName": f"{full}-application-controller"},
        )
    )
    objects.append(account(f"{full}-application-controller", ns))
    if _get(values, "crds.install", True):
        objects += [
            crd("argoproj.io", "Application", "applications", versions=("v1alpha1",), status=False),
            crd("argoproj.io", "AppProject", "appprojects", versions=("v1alpha1",), status=False),
            crd("argoproj.io", "ApplicationSet", "applicationsets", versions=("v1alpha1",), status=False),
        ]
    return objects


CHARTS: dict[str, Callable[[str, str, str, str, dict[str, Any]], list[Manifest]]] = {
    "vault": vault,
    "openbao": vault,
    "external-secrets": external_secrets,
    "kube-prometheus-stack": kube_prometheus_stack,
    "argo-cd": argo_cd,
}


def render(chart: str, repo_url: str, release: str, namespace: str, values: dict[str, Any]) -> list[Manifest]:
    make = CHARTS.get(chart)
    if make is None:
        raise UnknownChart(
            f"chart {chart!r} from {repo_url} is not in the sandbox's chart table (dr/sandbox/charts.py);"
            f" known: {', '.join(sorted(CHARTS))}"
        )
    full = str(values.get("fullnameOverride") or release)
    return make(chart, full, release, namespace, values)
