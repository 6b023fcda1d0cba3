"""The gate's own checkers (deploy/k8s/checks.py, deploy/k8s/validate.py) catch what they are for: each test feeds
them a deliberately broken manifest, and a correct one, so a checker that stopped looking would fail here."""

import copy
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from deploy.k8s import checks, validate
from tests import support


def require(available: bool, what: str) -> None:
    support.require(available, what, needed_by="make k8s-validate")


@pytest.fixture(scope="module")
def crd_schemas():
    require(validate.crd_dir().is_dir(), f"the operators' CRD schemas are not at {validate.crd_dir()}")
    return validate.load_crd_schemas(validate.crd_dir())


def resources(cpu="100m", memory="64Mi"):
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def container(name="web", image="items/web:1.0", **extra):
    return {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
        "resources": resources(),
        **extra,
    }


def deployment(name="web", labels=None, selector=None, containers=None, **spec):
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "selector": {"matchLabels": selector or labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": containers or [container(name)]}},
            **spec,
        },
    }


def service(name="web", selector=None, target_port="http"):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"selector": selector or {"app": "web"}, "ports": [{"port": 80, "targetPort": target_port}]},
    }


def pdb(name="web", selector=None, **spec):
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"selector": {"matchLabels": selector or {"app": "web"}}, **spec},
    }


def hpa(target="web", minimum=2, kind="Deployment"):
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{target}-hpa", "namespace": "ns"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}, "minReplicas": minimum},
    }


def scaled_object(target="worker", auth="rabbit", minimum=1):
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": target, "namespace": "ns"},
        "spec": {
            "scaleTargetRef": {"name": target},
            "minReplicaCount": minimum,
            "triggers": [{"type": "rabbitmq", "metadata": {"queueName": "items"}, "authenticationRef": {"name": auth}}],
        },
    }


def trigger_auth(name="rabbit", secret="mq-default-user", key="password"):
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": secret, "key": key}]},
    }


def rabbitmq_cluster(name="mq", replicas=3):
    return {
        "apiVersion": "rabbitmq.com/v1beta1",
        "kind": "RabbitmqCluster",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"replicas": replicas, "image": "rabbitmq:3.13.7-management", "resources": resources("1", "1Gi")},
    }


def cnpg_cluster(name="db", **spec):
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"instances": 3, "storage": {"size": "1Gi"}, "resources": resources("1", "1Gi"), **spec},
    }


def network_policy(pod_selector, peers):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "policy", "namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": pod_selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": 5432}]}],
        },
    }


def good_manifests():
    worker = deployment("worker", containers=[container("worker", "items/worker:1.0", ports=[], readinessProbe=None)])
    del worker["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    return [
        deployment("web"),
        service("web"),
        hpa("web", minimum=2),
        pdb("web", maxUnavailable=1),
        worker,
        scaled_object("worker"),
        trigger_auth(secret="mq-default-user", key="password"),
        rabbitmq_cluster("mq"),
        pdb("mq", selector={"app.kubernetes.io/name": "mq"}, maxUnavailable=1),
    ]


# --- the baseline ---------------------------------------------------------------------------------------------


def test_a_correct_set_of_manifests_has_no_structural_problem():
    assert checks.structural_problems(good_manifests()) == []


# --- selectors ------------------------------------------------------------------------------------------------


def test_a_deployment_whose_selector_misses_its_own_pod_labels_is_caught():
    broken = deployment("web", labels={"app": "web"}, selector={"app": "wbe"})
    assert any("does not match its pod template's labels" in p for p in checks.selector_problems([broken]))


def test_a_selector_that_also_selects_another_workloads_pods_is_caught():
    web = deployment("web", labels={"app": "items", "tier": "web"}, selector={"app": "items"})
    worker = deployment("worker", labels={"app": "items", "tier": "worker"})
    problems = checks.selector_problems([web, worker])
    assert problems == [
        "Deployment ns/web: selector {'matchLabels': {'app': 'items'}} also selects the pods of Deployment ns/worker"
    ]


def test_a_service_that_selects_no_pod_is_caught():
    problems = checks.selector_problems([deployment("web"), service("web", selector={"app": "api"})])
    assert problems == ["Service ns/web: selector {'app': 'api'} matches no pod"]


def test_a_service_target_port_the_pods_do_not_declare_is_caught():
    problems = checks.selector_problems([deployment("web"), service("web", target_port="https")])
    assert problems == ["Service ns/web: targetPort 'https' is not a port of the pods it selects"]


def test_a_pod_disruption_budget_that_selects_no_pod_is_caught():
    problems = checks.selector_problems([deployment("web"), pdb("web", selector={"app": "wbe"}, maxUnavailable=1)])
    assert problems == ["PodDisruptionBudget ns/web: selector {'matchLabels': {'app': 'wbe'}} matches no pod"]


def test_a_network_policy_peer_that_matches_no_pod_is_caught():
    policy = network_policy(
        {"cnpg.io/cluster": "db", "cnpg.io/podRole": "instance"}, [{"podSelector": {"matchLabels": {"app": "wbe"}}}]
    )
    problems = checks.selector_problems([deployment("web"), cnpg_cluster("db"), policy])
    assert problems == ["NetworkPolicy ns/policy: ingress peer {'matchLabels': {'app': 'wbe'}} matches no pod"]


def test_network_policies_may_select_the_pods_operators_create_by_their_labels():
    policy = network_policy(
        {"cnpg.io/cluster": "db", "cnpg.io/podRole": "instance"}, [{"podSelector": {"matchLabels": {"app": "web"}}}]
    )
    assert checks.selector_problems([deployment("web"), cnpg_cluster("db"), policy]) == []
    wrong_cluster = network_policy({"cnpg.io/cluster": "other"}, [])
    assert checks.selector_problems([cnpg_cluster("db"), wrong_cluster]) == [
        "NetworkPolicy ns/policy: podSelector {'matchLabels': {'cnpg.io/cluster': 'other'}} matches no pod"
    ]


def test_match_expressions_are_understood():
    labels = {"app": "web", "tier": "front"}
    assert checks.selector_matches({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, labels)
    assert not checks.selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels
    )
    assert checks.selector_matches({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, labels)
    assert not checks.selector_matches({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)


# --- autoscalers and references -------------------------------------------------------------------------------


def test_an_autoscaler_aimed_at_a_workload_that_does_not_exist_is_caught():
    problems = checks.reference_problems([deployment("web"), hpa("wbe")])
    assert problems == ["HorizontalPodAutoscaler ns/wbe-hpa: scale target Deployment wbe does not exist"]
    problems = checks.reference_problems([scaled_object("worker"), trigger_auth()], ["mq-default-user"])
    assert problems == ["ScaledObject ns/worker: scale target Deployment worker does not exist"]


def test_a_scaled_object_whose_trigger_authentication_does_not_exist_is_caught():
    problems = checks.reference_problems([deployment("worker"), scaled_object("worker", auth="rabit")])
    assert problems == ["ScaledObject ns/worker: authenticationRef rabit does not exist"]


def test_two_autoscalers_on_one_workload_are_caught():
    problems = checks.reference_problems(
        [deployment("worker"), hpa("worker"), scaled_object("worker"), trigger_auth()], ["mq-default-user"]
    )
    assert problems == [
        "Deployment ns/worker is scaled by several autoscalers: HorizontalPodAutoscaler ns/worker-hpa, "
        "ScaledObject ns/worker"
    ]


def test_an_autoscaled_workload_that_sets_its_own_replicas_is_caught():
    problems = checks.reference_problems([deployment("web", replicas=3), hpa("web")])
    assert problems == [
        "Deployment ns/web: sets replicas, which HorizontalPodAutoscaler ns/web-hpa owns (each apply would reset it)"
    ]


def test_references_to_missing_config_maps_secrets_keys_and_service_accounts_are_caught():
    web = deployment("web")
    pod = web["spec"]["template"]["spec"]
    pod["serviceAccountName"] = "web"
    pod["containers"][0]["envFrom"] = [{"configMapRef": {"name": "settings"}}]
    pod["containers"][0]["env"] = [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "unknown", "key": "x"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "mq-default-user", "key": "pasword"}}},
        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "yours", "key": "anything"}}},
    ]
    problems = checks.reference_problems([web, rabbitmq_cluster("mq")], external_secrets=["yours"])
    assert sorted(problems) == [
        "Deployment ns/web: ConfigMap settings does not exist",
        "Deployment ns/web: Secret mq-default-user has no key 'pasword' (it has default_user.conf, host, password, "
        "port, provider, type, username)",
        "Deployment ns/web: Secret unknown is neither generated by an operator nor a documented one",
        "Deployment ns/web: ServiceAccount web does not exist",
    ]


def test_a_config_map_key_that_does_not_exist_is_caught():
    web = deployment("web")
    web["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MISSING"}}}
    ]
    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "ns"},
        "data": {"PRESENT": "1"},
    }
    assert checks.reference_problems([web, settings]) == ["Deployment ns/web: ConfigMap settings has no key 'MISSING'"]


def test_a_scheduled_backup_needs_an_existing_cluster_with_an_object_store():
    backup = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "ScheduledBackup",
        "metadata": {"name": "nightly", "namespace": "ns"},
        "spec": {"schedule": "0 0 3 * * *", "cluster": {"name": "db"}},
    }
    assert checks.reference_problems([backup]) == ["ScheduledBackup ns/nightly: cluster db does not exist"]
    assert checks.reference_problems([backup, cnpg_cluster("db")]) == [
        "ScheduledBackup ns/nightly: method barmanObjectStore, but Cluster ns/db has no object store"
    ]
    store = {
        "barmanObjectStore": {
            "destinationPath": "s3://b/db",
            "s3Credentials": {
                "accessKeyId": {"name": "s3", "key": "ID"},
                "secretAccessKey": {"name": "s3", "key": "KEY"},
            },
        }
    }
    assert checks.reference_problems([backup, cnpg_cluster("db", backup=store)], ["s3"]) == []


# --- disruption budgets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "caught"),
    [
        ({"minAvailable": 2}, True),  # = the HPA's minimum: no eviction ever
        ({"minAvailable": "100%"}, True),
        ({"minAvailable": "60%"}, True),  # ceil(0.6 x 2) = 2
        ({"maxUnavailable": 0}, True),
        ({"maxUnavailable": "0%"}, True),
        ({"minAvailable": 1}, False),
        ({"minAvailable": "50%"}, False),
        ({"maxUnavailable": 1}, False),
    ],
)
def test_a_pod_disruption_budget_must_leave_room_below_the_smallest_replica_count(budget, caught):
    problems = checks.disruption_budget_problems([deployment("web"), hpa("web", minimum=2), pdb("web", **budget)])
    assert bool(problems) is caught, problems


def test_a_disruption_budget_on_an_operators_pods_counts_the_operators_replicas():
    budget = pdb("mq", selector={"app.kubernetes.io/name": "mq"}, minAvailable=1)
    assert checks.disruption_budget_problems([rabbitmq_cluster("mq", replicas=3), budget]) == []
    assert checks.disruption_budget_problems([rabbitmq_cluster("mq", replicas=1), budget]) == [
        "PodDisruptionBudget ns/mq: minAvailable 1 of 1 replica(s) lets no pod be evicted"
    ]


# --- probes ---------------------------------------------------------------------------------------------------


def test_a_probe_on_a_path_the_image_does_not_serve_is_caught():
    web = deployment("web", containers=[container(livenessProbe={"httpGet": {"path": "/health", "port": "http"}})])
    assert checks.probe_problems([web]) == [
        "Deployment ns/web container web: livenessProbe asks /health, which the image does not serve "
        "(/healthz, /readyz)"
    ]


def test_a_probe_on_a_port_the_container_does_not_declare_is_caught():
    web = deployment("web", containers=[container(livenessProbe={"tcpSocket": {"port": "metrics"}})])
    assert checks.probe_problems([web]) == [
        "Deployment ns/web container web: livenessProbe port 'metrics' is not a declared port"
    ]
    by_number = deployment("web", containers=[container(livenessProbe={"tcpSocket": {"port": 8000}})])
    assert checks.probe_problems([by_number]) == []


def test_an_http_probe_on_an_image_whose_paths_are_unknown_is_caught():
    other = deployment("other", containers=[container("other", "nginx:1.28.0")])
    assert checks.probe_problems([other]) == [
        "Deployment ns/other container other: readinessProbe asks /healthz of an image with no known paths"
    ]


# --- images ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("items/web", "has no tag (that is :latest)"),
        ("items/web:latest", "is :latest"),
        ("registry.example.com:5000/items/web", "has no tag (that is :latest)"),
        ("registry.example.com:5000/items/web:1.2.3", None),
        ("items/web@sha256:" + "0" * 64, None),
        ("nginx:1.28.0-bookworm", None),
    ],
)
def test_every_image_needs_an_explicit_tag_or_digest_and_never_latest(image, problem):
    problems = checks.image_problems([deployment("web", containers=[container(image=image)])])
    assert problems == ([f"Deployment ns/web container web: image {image} {problem}"] if problem else [])


def test_the_images_operator_resources_name_are_checked_too():
    assert checks.image_problems([cnpg_cluster("db", imageName="ghcr.io/cloudnative-pg/postgresql")]) == [
        "Cluster ns/db: image ghcr.io/cloudnative-pg/postgresql has no tag (that is :latest)"
    ]


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("items/web", "items/web"),
        ("items/web:1.0", "items/web"),
        ("registry.example.com/items/web:1.0", "items/web"),
        ("localhost:5000/items/worker@sha256:abc", "items/worker"),
        ("nginx:1.28.0-bookworm", "nginx"),
    ],
)
def test_the_image_repository_leaves_out_registry_tag_and_digest(image, repository):
    assert checks.image_repository(image) == repository


# --- resources ------------------------------------------------------------------------------------------------


def test_a_container_without_requests_or_limits_is_caught():
    no_limits = container(resources={"requests": {"cpu": "1", "memory": "1Gi"}})
    nothing = container("sidecar", resources={})
    problems = checks.resource_problems([deployment("web", containers=[no_limits, nothing])])
    assert problems == [
        "Deployment ns/web container web: no cpu limit",
        "Deployment ns/web container web: no memory limit",
        "Deployment ns/web container sidecar: no cpu request and limit",
        "Deployment ns/web container sidecar: no memory request and limit",
    ]


def test_a_request_above_its_limit_is_caught():
    greedy = container(
        resources={"requests": {"cpu": "1500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1G"}}
    )
    assert checks.resource_problems([deployment("web", containers=[greedy])]) == [
        "Deployment ns/web container web: cpu request 1500m is above its limit 1",
        "Deployment ns/web container web: memory request 1Gi is above its limit 1G",
    ]


def test_operator_resources_that_size_their_pods_need_requests_and_limits():
    unsized = cnpg_cluster("db", resources={})
    assert checks.resource_problems([unsized, rabbitmq_cluster("mq")]) == [
        "Cluster ns/db: no cpu request and limit",
        "Cluster ns/db: no memory request and limit",
    ]


@pytest.mark.parametrize(
    ("resource", "text", "value"),
    [
        ("cpu", "250m", 0.25),
        ("cpu", "2", 2.0),
        ("cpu", "0.5", 0.5),
        ("memory", "64Mi", 64 * 2**20),
        ("memory", "1G", 10**9),
        ("memory", "1024", 1024.0),
    ],
)
def test_quantities_are_read_as_kubernetes_writes_them(resource, text, value):
    assert checks.quantity(resource, text) == value


def test_a_malformed_quantity_is_reported_not_crashed_on():
    odd = container(resources={"requests": {"cpu": "one", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
    assert checks.resource_problems([deployment("web", containers=[odd])]) == [
        "Deployment ns/web container web: cpu quantity 'one' is malformed"
    ]


# --- schemas: built-in kinds and the operators' custom resources ----------------------------------------------


def test_kubernetes_validate_rejects_an_unknown_field_and_a_kind_it_has_no_schema_for():
    good = deployment("web")
    misspelt = copy.deepcopy(good)
    misspelt["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    unknown_kind = {"apiVersion": "v1", "kind": "Servise", "metadata": {"name": "x"}}
    assert validate.builtin_problems([good]) == []
    problems = validate.builtin_problems([misspelt, unknown_kind], versions=("1.30.0",))
    assert len(problems) == 2, problems
    assert "'livenesProbe' was unexpected" in problems[0]
    assert problems[1].startswith("WARN") and "Servise" in problems[1]


def test_a_custom_resource_with_a_misspelt_or_invalid_field_fails_its_operators_crd_schema(crd_schemas):
    pooler: checks.Doc = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Pooler",
        "metadata": {"name": "db-pooler-rw", "namespace": "ns"},
        "spec": {"cluster": {"name": "db"}, "type": "rw", "pgbouncer": {"poolMode": "transaction"}},
    }
    assert validate.custom_resource_problems([pooler], crd_schemas) == []
    broken = copy.deepcopy(pooler)
    broken["spec"]["pgbouncer"] = {"poolmode": "transaction", "poolMode": "statement"}
    assert validate.custom_resource_problems([broken], crd_schemas) == [
        "Pooler ns/db-pooler-rw: spec.pgbouncer: Additional properties are not allowed ('poolmode' was unexpected)",
        "Pooler ns/db-pooler-rw: spec.pgbouncer.poolMode: 'statement' is not one of ['session', 'transaction']",
    ]


def test_a_custom_resource_of_a_version_no_crd_defines_is_reported(crd_schemas):
    old = {"apiVersion": "keda.sh/v1beta9", "kind": "ScaledObject", "metadata": {"name": "w", "namespace": "ns"}}
    assert validate.custom_resource_problems([old], crd_schemas) == [
        "ScaledObject ns/w: no CRD schema for keda.sh/v1beta9 ScaledObject"
    ]


def test_strict_schemas_leave_fields_that_preserve_unknown_fields_open():
    schema: checks.Doc = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"}}},
            "free": {"type": "object", "properties": {}, "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    strict = validate.strict_schema(schema)
    assert strict["properties"]["spec"]["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["free"]
    assert "additionalProperties" not in schema["properties"]["spec"]  # the original is untouched


# --- the gate end to end --------------------------------------------------------------------------------------


def test_a_missing_crd_folder_stops_the_gate_with_a_message_naming_it(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "shared" / "k8s-crds"
    monkeypatch.setenv("K8S_CRD_DIR", str(missing))
    assert validate.main([]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "cannot skip" in error


def test_the_crd_folder_is_looked_for_beside_the_repository(monkeypatch):
    monkeypatch.delenv("K8S_CRD_DIR", raising=False)
    assert validate.crd_dir() == validate.REPO.parent / "shared" / "k8s-crds"


def broken_overlay(tmp_path: Path, patch: str) -> Path:
    overlay = tmp_path / "broken"
    overlay.mkdir()
    base = os.path.relpath(validate.REPO / "deploy/k8s/base", overlay)  # kustomize refuses absolute bases
    (overlay / "kustomization.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            namespace: broken
            resources:
              - {base}
            images:
              - {{name: items/web, newTag: "1.0"}}
              - {{name: items/worker, newTag: "1.0"}}
            configMapGenerator:
              - {{name: items-config, behavior: merge, literals: [ALLOWED_HOSTS=example.com]}}
            patches:
            """
        )
        + textwrap.indent(patch, "  ")
    )
    return overlay


def test_the_gate_fails_an_overlay_that_breaks_the_web_selector(tmp_path, capsys, crd_schemas):
    require(shutil.which("kubectl") is not None, "kubectl is not installed")
    overlay = broken_overlay(
        tmp_path,
        textwrap.dedent(
            """\
            - target: {kind: Deployment, name: items-web}
              patch: |
                - {op: replace, path: /spec/template/metadata/labels/app.kubernetes.io~1component, value: api}
            """
        ),
    )
    assert validate.main([str(overlay)]) == 1
    out = capsys.readouterr().out
    assert "Deployment broken/items-web: selector" in out and "does not match its pod template's labels" in out
    assert "Service broken/items-web: selector" in out  # the Service, the PDB and the policies lose it too


def test_the_gate_reports_an_overlay_kustomize_cannot_build(tmp_path, capsys, crd_schemas):
    require(shutil.which("kubectl") is not None, "kubectl is not installed")
    overlay = tmp_path / "unbuildable"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    assert validate.main([str(overlay)]) == 2
    assert "kubectl kustomize" in capsys.readouterr().err
