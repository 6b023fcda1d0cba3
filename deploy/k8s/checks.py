"""Structural checks of rendered manifests, the mistakes no schema sees: a selector that matches no pod, an
autoscaler or budget aimed at nothing, a PodDisruptionBudget that blocks every drain, a probe on a path the image
does not serve, an image without a fixed tag, a container without requests and limits, a reference to a
ConfigMap or Secret that will not exist.

Every function takes the documents of one `kubectl kustomize` output and returns problems as sentences (empty:
none). Pods that operators create are known by the labels those operators put on them (OPERATOR_POD_LABELS).
"""

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
REPLICATED_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# Operator resources whose `spec.resources` size the pods the operator creates.
SIZED_BY_OPERATOR = (("postgresql.cnpg.io", "Cluster"), ("rabbitmq.com", "RabbitmqCluster"))

# What each of our images answers to an HTTP probe. items/web: the routes of project/urls.py (a test resolves them
# against the URLconf, so this cannot drift); items/worker: its prometheus_client server (WORKER_METRICS_PORT).
PROBE_PATHS: dict[str, frozenset[str]] = {
    "items/web": frozenset({"/healthz", "/readyz"}),
    "items/worker": frozenset({"/metrics"}),
}

# Labels the operators put on the pods they create, from their sources: CloudNativePG (pkg/utils/labels_
# annotations.go: cnpg.io/cluster, cnpg.io/podRole, cnpg.io/poolerName) and the RabbitMQ Cluster Operator
# (internal/metadata: the app.kubernetes.io labels of a RabbitmqCluster's StatefulSet).
OPERATOR_POD_LABELS = {
    ("postgresql.cnpg.io", "Cluster"): lambda doc: {
        "cnpg.io/cluster": name_of(doc),
        "cnpg.io/podRole": "instance",
    },
    ("postgresql.cnpg.io", "Pooler"): lambda doc: {
        "cnpg.io/cluster": (doc.get("spec", {}).get("cluster") or {}).get("name", ""),
        "cnpg.io/poolerName": name_of(doc),
        "cnpg.io/podRole": "pooler",
    },
    ("rabbitmq.com", "RabbitmqCluster"): lambda doc: {
        "app.kubernetes.io/name": name_of(doc),
        "app.kubernetes.io/component": "rabbitmq",
        "app.kubernetes.io/part-of": "rabbitmq",
    },
}

# Secrets the operators generate, by the kind and name of the resource that asks for them, with their keys.
OPERATOR_SECRETS = {
    ("postgresql.cnpg.io", "Cluster"): lambda name: {
        f"{name}-app": {"username", "password", "host", "port", "dbname", "uri", "jdbc-uri", "pgpass"},
    },
    ("rabbitmq.com", "RabbitmqCluster"): lambda name: {
        f"{name}-default-user": {"username", "password", "host", "port", "provider", "type", "default_user.conf"},
    },
}


def group_of(doc: Doc) -> str:
    api_version = str(doc.get("apiVersion", ""))
    return api_version.split("/")[0] if "/" in api_version else ""


def name_of(doc: Doc) -> str:
    return str((doc.get("metadata") or {}).get("name", ""))


def namespace_of(doc: Doc) -> str:
    return str((doc.get("metadata") or {}).get("namespace") or "default")


def ident(doc: Doc) -> str:
    return f"{doc.get('kind')} {namespace_of(doc)}/{name_of(doc)}"


def pod_template(doc: Doc) -> Doc | None:
    """The pod template of a workload, a Job, a CronJob or a CloudNativePG Pooler; None for anything else."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind in WORKLOAD_KINDS or kind == "Job" or (group_of(doc), kind) == ("postgresql.cnpg.io", "Pooler"):
        return spec.get("template")
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    return None


def containers_of(template: Doc) -> list[Doc]:
    spec = template.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions, or a Service's plain map) against a pod's labels."""
    if not selector:
        return True
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass(frozen=True)
class Pods:
    """Pods that will exist: those of a workload's template, or those an operator creates for a resource."""

    owner: str
    namespace: str
    labels: Mapping[str, str]
    containers: tuple[Doc, ...]  # empty for an operator's pods: their containers are the operator's business
    min_replicas: int | None  # None: run to completion (a Job), no disruption budget applies


def _autoscaled_minimum(docs: Iterable[Doc]) -> dict[tuple[str, str, str], list[tuple[str, int]]]:
    """(kind, namespace, name) of each autoscaling target -> [(autoscaler, its minimum replicas)]."""
    targets: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "HorizontalPodAutoscaler":
            ref, minimum = spec.get("scaleTargetRef") or {}, int(spec.get("minReplicas", 1))
        elif (group_of(doc), doc.get("kind")) == ("keda.sh", "ScaledObject"):
            ref, minimum = spec.get("scaleTargetRef") or {}, int(spec.get("minReplicaCount", 0))
        else:
            continue
        key = (str(ref.get("kind", "Deployment")), namespace_of(doc), str(ref.get("name", "")))
        targets.setdefault(key, []).append((ident(doc), minimum))
    return targets


def pod_sets(docs: list[Doc]) -> list[Pods]:
    autoscaled = _autoscaled_minimum(docs)
    found = []
    for doc in docs:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        operator_labels = OPERATOR_POD_LABELS.get((group_of(doc), str(kind)))
        if kind in WORKLOAD_KINDS or kind in ("Job", "CronJob"):
            template = pod_template(doc) or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            minimum: int | None = None
            if kind in REPLICATED_KINDS:
                scalers = autoscaled.get((str(kind), namespace_of(doc), name_of(doc)))
                minimum = min(m for _, m in scalers) if scalers else int(spec.get("replicas", 1))
            elif kind == "DaemonSet":
                minimum = 1
            found.append(Pods(ident(doc), namespace_of(doc), labels, tuple(containers_of(template)), minimum))
        elif operator_labels is not None:
            labels = dict(operator_labels(doc))
            if kind == "Pooler":
                labels = {**((spec.get("template") or {}).get("metadata") or {}).get("labels", {}), **labels}
            replicas = spec.get("instances", spec.get("replicas", 1))
            found.append(Pods(ident(doc), namespace_of(doc), labels, (), int(replicas)))
    return found


def _matching(pods: list[Pods], namespace: str, selector: Mapping[str, Any] | None) -> list[Pods]:
    return [p for p in pods if p.namespace == namespace and selector_matches(selector, p.labels)]


def _port_names(pods: Iterable[Pods]) -> set[str] | None:
    """Container port names of these pods; None when any of them are an operator's (names unknown here)."""
    names: set[str] = set()
    for p in pods:
        if not p.containers:
            return None
        names |= {port["name"] for c in p.containers for port in c.get("ports") or [] if "name" in port}
    return names


def selector_problems(docs: list[Doc]) -> list[str]:
    """Every selector selects pods that will exist, and named ports are ports those pods declare."""
    pods = pod_sets(docs)
    problems = []
    for doc in docs:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        where = ident(doc)
        if kind in WORKLOAD_KINDS or kind == "Job":
            selector = spec.get("selector")
            labels = ((pod_template(doc) or {}).get("metadata") or {}).get("labels") or {}
            if kind != "Job" and not selector_matches(selector, labels):
                problems.append(f"{where}: selector {selector} does not match its pod template's labels {labels}")
            if kind != "Job":
                others = [p.owner for p in _matching(pods, namespace_of(doc), selector) if p.owner != where]
                if others:
                    problems.append(f"{where}: selector {selector} also selects the pods of {', '.join(others)}")
        elif kind == "Service" and spec.get("selector"):
            matched = _matching(pods, namespace_of(doc), spec["selector"])
            if not matched:
                problems.append(f"{where}: selector {spec['selector']} matches no pod")
            names = _port_names(matched)
            for port in spec.get("ports") or []:
                target = port.get("targetPort")
                if matched and isinstance(target, str) and names is not None and target not in names:
                    problems.append(f"{where}: targetPort {target!r} is not a port of the pods it selects")
        elif kind == "PodDisruptionBudget":
            if not _matching(pods, namespace_of(doc), spec.get("selector")):
                problems.append(f"{where}: selector {spec.get('selector')} matches no pod")
        elif kind == "NetworkPolicy":
            problems += _network_policy_problems(doc, pods)
    return problems


def _network_policy_problems(doc: Doc, pods: list[Pods]) -> list[str]:
    spec, where, namespace = doc.get("spec") or {}, ident(doc), namespace_of(doc)
    problems = []
    selected = _matching(pods, namespace, spec.get("podSelector"))
    if spec.get("podSelector") and not selected:
        problems.append(f"{where}: podSelector {spec['podSelector']} matches no pod")
    names = _port_names(selected)
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction) or []:
            for peer in rule.get(peers_key) or []:
                own_namespace = "podSelector" in peer and "namespaceSelector" not in peer
                if own_namespace and not _matching(pods, namespace, peer["podSelector"]):
                    problems.append(f"{where}: {direction} peer {peer['podSelector']} matches no pod")
            for port in rule.get("ports") or []:
                value = port.get("port")
                if direction == "ingress" and isinstance(value, str) and names is not None and value not in names:
                    problems.append(f"{where}: port {value!r} is not a port of the pods it selects")
    return problems


def reference_problems(docs: list[Doc], external_secrets: Iterable[str] = ()) -> list[str]:
    """Autoscalers aim at workloads that exist (one each, and the workload leaves `replicas` to it); operator
    resources name clusters that exist; every ConfigMap, Secret and ServiceAccount a pod uses will exist."""
    problems = []
    by_kind_name = {(str(d.get("kind")), namespace_of(d), name_of(d)): d for d in docs}

    def exists(kind: str, namespace: str, name: str) -> bool:
        return (kind, namespace, name) in by_kind_name

    for (kind, namespace, name), scalers in _autoscaled_minimum(docs).items():
        owners = [owner for owner, _ in scalers]
        target = by_kind_name.get((kind, namespace, name))
        if target is None:
            problems += [f"{owner}: scale target {kind} {name} does not exist" for owner in owners]
        elif len(owners) > 1:
            problems.append(f"{kind} {namespace}/{name} is scaled by several autoscalers: {', '.join(owners)}")
        elif "replicas" in (target.get("spec") or {}):
            problems.append(f"{ident(target)}: sets replicas, which {owners[0]} owns (each apply would reset it)")

    for doc in docs:
        spec, namespace, where = doc.get("spec") or {}, namespace_of(doc), ident(doc)
        if (group_of(doc), doc.get("kind")) == ("keda.sh", "ScaledObject"):
            for trigger in spec.get("triggers") or []:
                ref = trigger.get("authenticationRef")
                if ref and not exists(ref.get("kind", "TriggerAuthentication"), namespace, ref["name"]):
                    problems.append(f"{where}: authenticationRef {ref['name']} does not exist")
        if group_of(doc) == "postgresql.cnpg.io" and doc.get("kind") in ("Pooler", "ScheduledBackup"):
            cluster_name = (spec.get("cluster") or {}).get("name", "")
            cluster = by_kind_name.get(("Cluster", namespace, cluster_name))
            if cluster is None:
                problems.append(f"{where}: cluster {cluster_name} does not exist")
            elif doc.get("kind") == "ScheduledBackup":
                to_object_store = spec.get("method", "barmanObjectStore") == "barmanObjectStore"
                store = ((cluster.get("spec") or {}).get("backup") or {}).get("barmanObjectStore")
                if to_object_store and not store:
                    problems.append(f"{where}: method barmanObjectStore, but {ident(cluster)} has no object store")

    problems += _config_and_secret_problems(docs, set(external_secrets))
    return problems


def _secret_refs(doc: Doc) -> Iterator[tuple[str, str | None]]:
    """(secret name, key or None) of every Secret a document uses: pods, KEDA and CloudNativePG included."""
    template = pod_template(doc)
    if template is not None:
        for container in containers_of(template):
            for source in container.get("envFrom") or []:
                if "secretRef" in source:
                    yield source["secretRef"]["name"], None
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    yield ref["name"], ref.get("key")
        for volume in (template.get("spec") or {}).get("volumes") or []:
            if "secret" in volume:
                yield volume["secret"]["secretName"], None
    if (group_of(doc), doc.get("kind")) == ("keda.sh", "TriggerAuthentication"):
        for ref in (doc.get("spec") or {}).get("secretTargetRef") or []:
            yield ref["name"], ref.get("key")
    if (group_of(doc), doc.get("kind")) == ("postgresql.cnpg.io", "Cluster"):
        store = (((doc.get("spec") or {}).get("backup") or {}).get("barmanObjectStore")) or {}
        for ref in (store.get("s3Credentials") or {}).values():
            if isinstance(ref, dict) and "name" in ref:
                yield ref["name"], ref.get("key")


def _config_and_secret_problems(docs: list[Doc], external_secrets: set[str]) -> list[str]:
    problems = []
    config_maps = {
        (namespace_of(d), name_of(d)): set((d.get("data") or {}) | (d.get("binaryData") or {}))
        for d in docs
        if d.get("kind") == "ConfigMap"
    }
    secrets: dict[tuple[str, str], set[str] | None] = {
        (namespace_of(d), name_of(d)): set((d.get("data") or {}) | (d.get("stringData") or {}))
        for d in docs
        if d.get("kind") == "Secret"
    }
    service_accounts = {(namespace_of(d), name_of(d)) for d in docs if d.get("kind") == "ServiceAccount"}
    for doc in docs:
        generated = OPERATOR_SECRETS.get((group_of(doc), str(doc.get("kind"))))
        if generated:
            for name, keys in generated(name_of(doc)).items():
                secrets[(namespace_of(doc), name)] = keys
    for name in external_secrets:
        for namespace in {namespace_of(d) for d in docs}:
            secrets.setdefault((namespace, name), None)  # created by you: its keys are not known here

    for doc in docs:
        where, namespace = ident(doc), namespace_of(doc)
        for name, key in _secret_refs(doc):
            if (namespace, name) not in secrets:
                problems.append(f"{where}: Secret {name} is neither generated by an operator nor a documented one")
                continue
            known_keys = secrets[(namespace, name)]
            if key is not None and known_keys is not None and key not in known_keys:
                problems.append(f"{where}: Secret {name} has no key {key!r} (it has {', '.join(sorted(known_keys))})")
        template = pod_template(doc)
        if template is None:
            continue
        pod_spec = template.get("spec") or {}
        account = pod_spec.get("serviceAccountName")
        if account and doc.get("kind") != "Pooler" and (namespace, account) not in service_accounts:
            problems.append(f"{where}: ServiceAccount {account} does not exist")
        refs: list[tuple[str, str | None]] = []
        for container in containers_of(template):
            refs += [(s["configMapRef"]["name"], None) for s in container.get("envFrom") or [] if "configMapRef" in s]
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    refs.append((ref["name"], ref["key"]))
        for volume in pod_spec.get("volumes") or []:
            if "configMap" in volume:
                source = volume["configMap"]
                refs.append((source["name"], None))
                refs += [(source["name"], item["key"]) for item in source.get("items") or []]
        for name, key in refs:
            if (namespace, name) not in config_maps:
                problems.append(f"{where}: ConfigMap {name} does not exist")
            elif key is not None and key not in config_maps[(namespace, name)]:
                problems.append(f"{where}: ConfigMap {name} has no key {key!r}")
    return problems


def disruption_budget_problems(docs: list[Doc]) -> list[str]:
    """A PodDisruptionBudget must let at least one pod go at the smallest replica count, or no node drains."""
    pods = pod_sets(docs)
    problems = []
    for doc in docs:
        if doc.get("kind") != "PodDisruptionBudget":
            continue
        spec = doc.get("spec") or {}
        counts = [p.min_replicas for p in _matching(pods, namespace_of(doc), spec.get("selector"))]
        replicas = min((c for c in counts if c is not None), default=None)
        if replicas is None or replicas == 0:
            continue
        if "minAvailable" in spec:
            must_stay = _scaled(spec["minAvailable"], replicas, round_up=True)
            if must_stay >= replicas:
                problems.append(
                    f"{ident(doc)}: minAvailable {spec['minAvailable']} of {replicas} replica(s) lets no pod be evicted"
                )
        if "maxUnavailable" in spec and _scaled(spec["maxUnavailable"], replicas, round_up=True) < 1:
            problems.append(f"{ident(doc)}: maxUnavailable {spec['maxUnavailable']} lets no pod be evicted")
    return problems


def _scaled(value: int | str, replicas: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = float(value[:-1]) / 100 * replicas
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


def image_repository(image: str) -> str:
    """`registry:5000/items/web:1.2@sha256:…` -> `items/web` (the repository without registry, tag, digest)."""
    name = image.split("@")[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def _tag_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag (that is :latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return "is :latest"
    return None


def _images(doc: Doc) -> Iterator[tuple[str, str]]:
    """(where, image) of every container image and every image an operator resource names."""
    template = pod_template(doc)
    if template is not None:
        for container in containers_of(template):
            if "image" in container:
                yield f"{ident(doc)} container {container.get('name')}", container["image"]
    spec = doc.get("spec") or {}
    if (group_of(doc), doc.get("kind")) == ("postgresql.cnpg.io", "Cluster") and spec.get("imageName"):
        yield ident(doc), spec["imageName"]
    if (group_of(doc), doc.get("kind")) == ("rabbitmq.com", "RabbitmqCluster") and spec.get("image"):
        yield ident(doc), spec["image"]
    if (group_of(doc), doc.get("kind")) == ("postgresql.cnpg.io", "Pooler"):
        image = (spec.get("pgbouncer") or {}).get("image")
        if image:
            yield ident(doc), image


def image_problems(docs: list[Doc]) -> list[str]:
    """Every image has an explicit tag (or digest), never :latest."""
    return [
        f"{where}: image {image} {problem}"
        for doc in docs
        for where, image in _images(doc)
        if (problem := _tag_problem(image))
    ]


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity(resource: str, value: object) -> float:
    """A Kubernetes quantity as a number: CPUs for cpu, bytes for memory. ValueError if malformed."""
    text = str(value)
    if resource == "cpu":
        match = _CPU.match(text)
        if match:
            return float(match[1]) / (1000 if match[2] else 1)
    else:
        match = _MEMORY.match(text)
        if match:
            return float(match[1]) * _MEMORY_UNITS[match[2]]
    raise ValueError(f"{resource} quantity {text!r} is malformed")


def _resource_problems(where: str, resources: Doc | None) -> list[str]:
    problems = []
    resources = resources or {}
    for resource in ("cpu", "memory"):
        request = (resources.get("requests") or {}).get(resource)
        limit = (resources.get("limits") or {}).get(resource)
        if request is None or limit is None:
            missing = " and ".join(k for k, v in (("request", request), ("limit", limit)) if v is None)
            problems.append(f"{where}: no {resource} {missing}")
            continue
        try:
            if quantity(resource, request) > quantity(resource, limit):
                problems.append(f"{where}: {resource} request {request} is above its limit {limit}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def resource_problems(docs: list[Doc]) -> list[str]:
    """Every container (and every operator resource that sizes its pods) has cpu and memory requests and limits,
    requests at most the limits."""
    problems = []
    for doc in docs:
        template = pod_template(doc)
        if template is not None:
            for container in containers_of(template):
                where = f"{ident(doc)} container {container.get('name')}"
                problems += _resource_problems(where, container.get("resources"))
        if (group_of(doc), doc.get("kind")) in SIZED_BY_OPERATOR:
            problems += _resource_problems(ident(doc), (doc.get("spec") or {}).get("resources"))
    return problems


def probe_problems(docs: list[Doc]) -> list[str]:
    """HTTP probes ask a path the image serves; every probe's port is one the container declares."""
    problems = []
    for doc in docs:
        template = pod_template(doc)
        if template is None:
            continue
        for container in containers_of(template):
            where = f"{ident(doc)} container {container.get('name')}"
            declared = {p.get("name") for p in container.get("ports") or []} | {
                p.get("containerPort") for p in container.get("ports") or []
            }
            known = PROBE_PATHS.get(image_repository(str(container.get("image", ""))))
            for probe_name in PROBES:
                probe = container.get(probe_name)
                if not probe:
                    continue
                handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if handler and handler.get("port") not in declared:
                    problems.append(f"{where}: {probe_name} port {handler.get('port')!r} is not a declared port")
                http = probe.get("httpGet")
                if http is None:
                    continue
                if known is None:
                    problems.append(f"{where}: {probe_name} asks {http.get('path')} of an image with no known paths")
                elif http.get("path") not in known:
                    problems.append(
                        f"{where}: {probe_name} asks {http.get('path')}, which the image does not serve "
                        f"({', '.join(sorted(known))})"
                    )
    return problems


def structural_problems(docs: list[Doc], external_secrets: Iterable[str] = ()) -> list[str]:
    return [
        *selector_problems(docs),
        *reference_problems(docs, external_secrets),
        *disruption_budget_problems(docs),
        *probe_problems(docs),
        *image_problems(docs),
        *resource_problems(docs),
    ]
