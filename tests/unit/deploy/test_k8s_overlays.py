"""deploy/k8s as rendered: every overlay passes every layer of the offline gate, and says what an operator relies
on (shallow readiness, graceful stops, Nginx and Redis configured from deploy/ as compose does, NetworkPolicies,
KEDA on the `items` queue, operators for the stateful parts). Runs `kubectl kustomize` offline."""

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml
from django.urls import Resolver404, resolve

from deploy.k8s import checks, validate
from tests import support

REPO = validate.REPO
OVERLAYS = [p.name for p in validate.overlay_dirs()]
APP_COMPONENTS = ("web", "worker", "migrate")


def require(available: bool, what: str) -> None:
    support.require(available, what, needed_by="make k8s-validate")


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    require(shutil.which("kubectl") is not None, "kubectl is not installed")
    return {name: validate.render(validate.OVERLAYS / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def manifests(rendered) -> dict[str, list[checks.Doc]]:
    return {name: validate.documents(text) for name, text in rendered.items()}


@pytest.fixture(scope="session")
def crd_schemas():
    require(validate.crd_dir().is_dir(), f"the operators' CRD schemas are not at {validate.crd_dir()}")
    return validate.load_crd_schemas(validate.crd_dir())


def find(docs, kind, name=None):
    found = [d for d in docs if d.get("kind") == kind and (name is None or checks.name_of(d) == name)]
    assert found, f"no {kind} {name or ''} rendered"
    return found


def one(docs, kind, name):
    return find(docs, kind, name)[0]


def component(docs, name) -> checks.Doc:
    """The workload (Deployment, StatefulSet or Job) whose pods are app.kubernetes.io/component=NAME."""
    for doc in docs:
        template = checks.pod_template(doc)
        labels = ((template or {}).get("metadata") or {}).get("labels") or {}
        if doc.get("kind") != "Pooler" and labels.get("app.kubernetes.io/component") == name:
            return doc
    raise AssertionError(f"no workload for component {name}")


def pod_spec(doc) -> checks.Doc:
    return (checks.pod_template(doc) or {})["spec"]


def main_container(doc) -> checks.Doc:
    return pod_spec(doc)["containers"][0]


def config_map_data(docs, name) -> dict[str, str]:
    """A generated ConfigMap by its name before kustomize's hash suffix."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", checks.name_of(d))]
    assert len(found) == 1, f"ConfigMap {name}: {len(found)} rendered"
    return found[0]["data"]


def env_names(docs, container) -> set[str]:
    names = {e["name"] for e in container.get("env") or []}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            data = next(
                d["data"]
                for d in docs
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["configMapRef"]["name"]
            )
            names |= set(data)
    return names


# --- every layer of the gate ----------------------------------------------------------------------------------


def test_there_are_a_dev_and_a_production_overlay():
    assert {"dev", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_in_object_passes_kubernetes_validate_strict(manifests, crd_schemas, overlay):
    builtin, _ = validate.split_custom(manifests[overlay], crd_schemas)
    assert len(builtin) > 20
    assert validate.builtin_problems(builtin) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_custom_resource_passes_its_operators_crd_schema(manifests, crd_schemas, overlay):
    _, custom = validate.split_custom(manifests[overlay], crd_schemas)
    kinds = {d["kind"] for d in custom}
    assert {"Cluster", "Pooler", "RabbitmqCluster", "ScaledObject", "TriggerAuthentication"} <= kinds
    assert validate.custom_resource_problems(custom, crd_schemas) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_passes_the_structural_checks(manifests, overlay):
    assert checks.structural_problems(manifests[overlay], validate.EXTERNAL_SECRETS) == []


def test_every_checkov_skip_says_why():
    lines = validate.CHECKOV_CONFIG.read_text().splitlines()
    config = yaml.safe_load("\n".join(lines))
    assert config["skip-download"] is True
    assert config["skip-check"], "no skip: then say so by removing the key"
    for check in config["skip-check"]:
        at = lines.index(f"  - {check}")
        comment: list[str] = []
        for line in reversed(lines[:at]):
            if not line.strip().startswith("#"):
                break
            comment.insert(0, line.strip().lstrip("# "))
        reason = " ".join(comment)
        assert reason.startswith(f"{check} ("), f"{check}: the comment above it must name it"
        assert len(reason) > 80, f"{check}: a reason, not a label: {reason!r}"


# --- web ------------------------------------------------------------------------------------------------------


def test_web_readiness_is_shallow_and_never_waits_on_the_shared_dependencies(manifests):
    for docs in manifests.values():
        web = main_container(component(docs, "web"))
        assert web["readinessProbe"]["httpGet"]["path"] == "/healthz"  # not /readyz: database, cache, broker
        assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert web["startupProbe"]["httpGet"]["path"] == "/healthz"
        startup = web["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_the_probe_paths_of_the_web_image_are_routes_of_the_app():
    for path in checks.PROBE_PATHS["items/web"]:
        try:
            resolve(path)
        except Resolver404:
            pytest.fail(f"{path} is not a route of project/urls.py")


def gunicorn_graceful_timeout() -> int:
    tree = ast.parse((REPO / "deploy/web/gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "graceful_timeout" for t in node.targets):
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)
            return node.value.value
    raise AssertionError("no graceful_timeout in deploy/web/gunicorn.conf.py")


def test_web_pods_get_longer_to_stop_than_the_pre_stop_pause_plus_gunicorns_graceful_timeout(manifests):
    for docs in manifests.values():
        web = component(docs, "web")
        pause = main_container(web)["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 5  # Nginx re-resolves the headless Service every 5 s
        assert pod_spec(web)["terminationGracePeriodSeconds"] > pause + gunicorn_graceful_timeout()


def test_web_runs_the_images_start_script_non_root_on_a_read_only_root_with_an_empty_dir_for_metrics(manifests):
    for docs in manifests.values():
        web = component(docs, "web")
        container = main_container(web)
        assert container["args"] == ["/app/deploy/web/start"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod_spec(web)["securityContext"]["runAsNonRoot"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(web)["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp/prometheus-web"]]  # PROMETHEUS_MULTIPROC_DIR of Dockerfile.web


def test_every_pod_we_define_runs_as_non_root_on_a_read_only_root_without_capabilities(manifests):
    for docs in manifests.values():
        for doc in docs:
            if checks.pod_template(doc) is None or doc["kind"] == "Pooler":
                continue
            assert pod_spec(doc)["securityContext"]["runAsNonRoot"] is True, checks.ident(doc)
            assert pod_spec(doc)["automountServiceAccountToken"] is False, checks.ident(doc)
            for container in checks.containers_of(checks.pod_template(doc) or {}):
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, checks.ident(doc)
                assert context["allowPrivilegeEscalation"] is False, checks.ident(doc)
                assert context["capabilities"]["drop"] == ["ALL"], checks.ident(doc)


def test_web_scales_on_cpu_and_spreads_over_zones_and_nodes(manifests):
    for docs in manifests.values():
        hpa = one(docs, "HorizontalPodAutoscaler", "items-web")
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        keys = {c["topologyKey"] for c in pod_spec(component(docs, "web"))["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


# --- Nginx from deploy/nginx, as compose runs it -------------------------------------------------------------


def test_nginx_runs_deploy_nginx_byte_for_byte(manifests):
    for docs in manifests.values():
        data = config_map_data(docs, "items-nginx-conf")
        assert data["nginx.conf"] == (REPO / "deploy/nginx/nginx.conf").read_text()
        assert data["items.conf.template"] == (REPO / "deploy/nginx/conf.d/items.conf.template").read_text()
        scripts = sorted(p.name for p in (REPO / "deploy/nginx").glob("*.sh"))
        assert {"40-ratelimit-allowlist.sh", "41-trusted-front.sh"} <= set(scripts)
        for script in scripts:  # compose runs each of them before Nginx (the command line below)
            assert data.get(script) == (REPO / "deploy/nginx" / script).read_text(), script
        volume = next(v for v in pod_spec(component(docs, "nginx"))["volumes"] if v["name"] == "nginx-conf")
        assert {i["key"]: i["path"] for i in volume["configMap"]["items"]}.items() >= {s: s for s in scripts}.items()
        assert (
            config_map_data(docs, "items-entrypoint")["entrypoint.sh"]
            == (REPO / "deploy/compose/entrypoint.sh").read_text()
        )
        assert config_map_data(docs, "items-redis-conf")["redis.conf"] == (REPO / "deploy/redis/redis.conf").read_text()


def compose_service(name) -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][name]


def command_line(container) -> list[str]:
    return container["command"] + container["args"]


def compose_command_line(service) -> list[str]:
    return service["entrypoint"] + service.get("command", [])


def test_nginx_and_redis_render_their_templates_with_composes_own_command_line(manifests):
    nginx, redis, state = compose_service("nginx"), compose_service("redis"), compose_service("redis-state")
    for overlay, docs in manifests.items():
        assert command_line(main_container(component(docs, "nginx"))) == compose_command_line(nginx)
        assert command_line(main_container(component(docs, "redis"))) == compose_command_line(redis)
        # The state store: compose's line, to which an overlay may add its size and nothing else (production does).
        line, composes = command_line(main_container(component(docs, "redis-state"))), compose_command_line(state)
        assert line[: len(composes)] == composes, overlay
        assert line[len(composes) :] in ([], ["--maxmemory", redis_maxmemory(docs, "redis-state")]), overlay
    assert command_line(main_container(component(manifests["dev"], "redis-state"))) == compose_command_line(state)


def redis_maxmemory(docs, name) -> str:
    """The maxmemory a Redis container runs with: its last `--maxmemory` argument, or redis.conf's."""
    args = main_container(component(docs, name))["args"]
    given = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--maxmemory"]
    if given:
        return given[-1]
    found = re.search(r"^maxmemory\s+(\S+)", (REPO / "deploy/redis/redis.conf").read_text(), flags=re.M)
    assert found, "no maxmemory in deploy/redis/redis.conf"
    return found[1]


def redis_bytes(size: str) -> int:
    found = re.fullmatch(r"(\d+)(b|kb|mb|gb)?", size.lower())
    assert found, f"maxmemory {size!r}: a size as redis.conf writes it"
    return int(found[1]) * {None: 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[found[2]]


def test_each_redis_container_has_room_above_its_maxmemory(manifests):
    """A full state store refuses writes (keyed POSTs 503, never a duplicate); an OOM-killed one refuses everything
    until it has replayed its AOF. Half again above maxmemory: Redis's own overhead and the AOF rewrite's fork."""
    for docs in manifests.values():
        for name in ("redis", "redis-state"):
            limit = checks.quantity("memory", main_container(component(docs, name))["resources"]["limits"]["memory"])
            assert limit >= 1.5 * redis_bytes(redis_maxmemory(docs, name)), name


def test_the_state_store_never_evicts_and_the_app_finds_each_store_where_compose_does(manifests):
    """Idempotency-Key records and rate-limit counters on STATE_REDIS_URL, a Redis with noeviction: on the cache
    (volatile-lru, filled by reads) a key could be evicted and a retried POST store a second item."""
    compose_env = yaml.safe_load((REPO / "docker-compose.yml").read_text())["x-app-env"]
    assert "maxmemory-policy volatile-lru" in (REPO / "deploy/redis/redis.conf").read_text()
    for docs in manifests.values():
        data = config_map_data(docs, "items-config")
        policy = {}
        for variable, name in (("REDIS_URL", "redis"), ("STATE_REDIS_URL", "redis-state")):
            # compose's service NAME is Service items-NAME here
            assert data[variable] == compose_env[variable].replace(f"//{name}:", f"//items-{name}:"), variable
            selector = one(docs, "Service", f"items-{name}")["spec"]["selector"]
            owners = [p.owner for p in checks.pod_sets(docs) if checks.selector_matches(selector, p.labels)]
            assert owners == [checks.ident(component(docs, name))], variable
            args = main_container(component(docs, name))["args"]
            policy[variable] = args[args.index("--maxmemory-policy") + 1] if "--maxmemory-policy" in args else None
        assert policy == {"REDIS_URL": None, "STATE_REDIS_URL": "noeviction"}  # the cache keeps redis.conf's
        for name in ("web", "worker"):
            assert {"REDIS_URL", "STATE_REDIS_URL"} <= env_names(docs, main_container(component(docs, name)))
        state = component(docs, "redis-state")
        assert state["kind"] == "StatefulSet" and state["spec"]["volumeClaimTemplates"]  # its keys survive a restart


def placeholders(path: Path) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", path.read_text()))


def test_every_placeholder_of_the_nginx_and_redis_templates_is_set_in_their_containers(manifests):
    nginx_templates = placeholders(REPO / "deploy/nginx/nginx.conf") | placeholders(
        REPO / "deploy/nginx/conf.d/items.conf.template"
    )
    assert {"NGINX_LISTEN", "NGINX_UPSTREAM", "NGINX_RESOLVER", "NGINX_CACHE_DIR"} <= nginx_templates
    for docs in manifests.values():
        nginx = main_container(component(docs, "nginx"))
        assert nginx_templates <= env_names(docs, nginx)
        for name in ("redis", "redis-state"):
            assert placeholders(REPO / "deploy/redis/redis.conf") <= env_names(
                docs, main_container(component(docs, name))
            ), name


def test_nginx_and_redis_get_every_variable_compose_gives_them_and_their_start_scripts_read(manifests):
    scripts = set()
    for path in (REPO / "deploy/nginx").glob("*.sh"):
        scripts |= set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", path.read_text()))
    assert {"RATELIMIT_ALLOWLIST", "NGINX_TRUSTED_FRONT", "NGINX_CONF_DIR"} <= scripts
    for docs in manifests.values():
        nginx = env_names(docs, main_container(component(docs, "nginx")))
        assert scripts | set(compose_service("nginx")["environment"]) <= nginx
        for name in ("redis", "redis-state"):
            given = env_names(docs, main_container(component(docs, name)))
            assert set(compose_service(name)["environment"]) <= given, name


def test_nginx_believes_no_forwarded_header_unless_an_overlay_names_its_front(manifests):
    """Empty NGINX_TRUSTED_FRONT: the peer is the client. Production's plain L4 LoadBalancer (externalTrafficPolicy
    Local) sends no X-Forwarded-For, so anything trusted there would let a client forge its address."""
    for docs in manifests.values():
        assert config_map_data(docs, "items-nginx-env")["NGINX_TRUSTED_FRONT"] == ""
    assert one(manifests["production"], "Service", "items-nginx")["spec"]["externalTrafficPolicy"] == "Local"


def test_nginx_balances_over_the_ready_web_pods_itself_and_keeps_the_allow_list_beside_its_config(manifests):
    for docs in manifests.values():
        nginx = main_container(component(docs, "nginx"))
        env = {e["name"]: e.get("value") for e in nginx["env"]}
        assert env["NGINX_UPSTREAM"].startswith("items-web.$(POD_NAMESPACE).svc.")
        assert env["NGINX_UPSTREAM"].endswith(" resolve")
        assert one(docs, "Service", "items-web")["spec"]["clusterIP"] == "None"  # headless: one address per pod
        assert config_map_data(docs, "items-nginx-env")["NGINX_CONF_DIR"] == "/etc/items-nginx"
        assert "/etc/items-nginx/nginx.conf" in nginx["args"][-1]
        ref = next(e for e in nginx["env"] if e["name"] == "RATELIMIT_ALLOWLIST")["valueFrom"]["configMapKeyRef"]
        assert ref["name"].startswith("items-config-")  # the app's own allow-list: both layers agree


def test_each_client_meets_one_nginx_pod_and_production_keeps_its_address(manifests):
    for docs in manifests.values():
        assert one(docs, "Service", "items-nginx")["spec"]["sessionAffinity"] == "ClientIP"
    production = one(manifests["production"], "Service", "items-nginx")["spec"]
    assert production["type"] == "LoadBalancer"
    assert production["externalTrafficPolicy"] == "Local"


# --- worker, migrate ------------------------------------------------------------------------------------------


def test_the_worker_is_scaled_by_keda_on_the_items_queue_of_this_overlays_broker(manifests):
    for docs in manifests.values():
        worker = component(docs, "worker")
        scaled = one(docs, "ScaledObject", "items-worker")
        assert scaled["spec"]["scaleTargetRef"]["name"] == checks.name_of(worker)
        trigger = scaled["spec"]["triggers"][0]
        assert (trigger["type"], trigger["metadata"]["queueName"], trigger["metadata"]["mode"]) == (
            "rabbitmq",
            "items",
            "QueueLength",
        )
        assert trigger["metadata"]["host"] == f"amqp://items-mq.{checks.namespace_of(scaled)}.svc:5672/"
        assert scaled["spec"]["minReplicaCount"] >= 1
        assert not [h for h in docs if h["kind"] == "HorizontalPodAutoscaler" and "worker" in checks.name_of(h)]


def test_the_worker_stops_warm_within_a_grace_period_that_lets_it_ack_its_batch(manifests):
    for docs in manifests.values():
        worker = component(docs, "worker")
        assert main_container(worker)["args"] == ["/app/deploy/worker/start"]
        assert "preStop" not in main_container(worker).get("lifecycle", {})  # SIGTERM at once: Celery's warm shutdown
        assert pod_spec(worker)["terminationGracePeriodSeconds"] >= 60  # compose's stop_grace_period


def test_migrations_run_as_one_job_straight_to_the_primary_and_never_in_an_init_container(manifests):
    for docs in manifests.values():
        migrate = component(docs, "migrate")
        assert migrate["kind"] == "Job"
        container = main_container(migrate)
        assert container["args"] == ["/app/deploy/migrate/start"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DATABASE_URL"] == "postgres://items@items-db-rw:5432/items"  # past the transaction pool
        for doc in docs:
            for init in (pod_spec(doc).get("initContainers") or []) if checks.pod_template(doc) else []:
                assert "migrate" not in " ".join(init.get("command", []) + init.get("args", []))


def test_the_app_reaches_postgres_through_the_pooler_and_rabbitmq_by_its_service(manifests):
    for docs in manifests.values():
        for name in ("web", "worker"):
            env = {e["name"]: e.get("value") for e in main_container(component(docs, name))["env"]}
            assert env["DATABASE_URL"] == "postgres://items@items-db-pooler-rw:5432/items"
            assert env["BROKER_URL"] == "amqp://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@items-mq:5672//"


# --- configuration and secrets --------------------------------------------------------------------------------


def readme_variables() -> set[str]:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table[: table.index("\n## ", 3)]))


def test_every_setting_given_to_the_app_is_a_variable_the_readme_documents(manifests):
    documented = readme_variables()
    for docs in manifests.values():
        for name in APP_COMPONENTS:
            undocumented = env_names(docs, main_container(component(docs, name))) - documented
            assert not undocumented, f"{name}: {undocumented} are not in README.md's configuration table"


def test_production_mode_gets_allowed_hosts_in_every_overlay(manifests):
    for docs in manifests.values():
        data = config_map_data(docs, "items-config")
        assert data["APP_ENV"] == "production"
        assert data["ALLOWED_HOSTS"]


def test_no_secret_is_committed_and_the_ones_you_create_are_documented(manifests):
    guide = (REPO / "docs/kubernetes.md").read_text()
    for docs in manifests.values():
        assert not [d for d in docs if d["kind"] == "Secret"]
    for name in validate.EXTERNAL_SECRETS:
        assert f"`{name}`" in guide, f"docs/kubernetes.md must say how to create the Secret {name}"


def test_images_built_here_carry_the_overlays_tag(manifests):
    base = (REPO / "deploy/k8s/base").glob("*.yaml")
    assert {"items/web", "items/worker"} <= {
        m for path in base for m in re.findall(r"image: (items/\w+)\s", path.read_text())
    }
    for docs in manifests.values():
        images = {
            c["image"]
            for d in docs
            if checks.pod_template(d)
            for c in checks.containers_of(checks.pod_template(d) or {})
            if "image" in c
        }
        assert {i.rsplit(":", 1)[0] for i in images if i.startswith("items/")} == {"items/web", "items/worker"}
        assert all(":" in i.rsplit("/", 1)[-1] for i in images)


# --- NetworkPolicies ------------------------------------------------------------------------------------------


def sources(docs, target_labels: dict, port) -> set[str]:
    """Who may open a connection to the pods with these labels on this port (a number or a port name), by the
    NetworkPolicies: 'anyone', 'namespace NAME', or the kind and name of the pods' owner."""
    pods = checks.pod_sets(docs)
    allowed: set[str] = set()
    for policy in docs:
        if policy["kind"] != "NetworkPolicy" or not checks.selector_matches(
            policy["spec"]["podSelector"], target_labels
        ):
            continue
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port or p.get("port") in port_aliases(port) for p in ports):
                continue
            if not rule.get("from"):
                allowed.add("anyone")
            for peer in rule.get("from") or []:
                if "namespaceSelector" in peer:
                    allowed.add(f"namespace {peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}")
                elif "podSelector" in peer:
                    for p in pods:
                        if checks.selector_matches(peer["podSelector"], p.labels):
                            kind, name = p.owner.split(" ")
                            allowed.add(f"{kind} {name.split('/')[1]}")
                else:
                    allowed.add(f"other peer {peer}")
    return allowed


def port_aliases(port) -> set:
    return {"http": {8000, 8080}, "metrics": {9808}}.get(port, set()) | {
        8000: {"http"},
        8080: {"http"},
        9808: {"metrics"},
    }.get(port, set())


def labels(component_name):
    return {"app.kubernetes.io/name": "items", "app.kubernetes.io/component": component_name}


DB = {"cnpg.io/cluster": "items-db", "cnpg.io/podRole": "instance"}
POOLER = {"cnpg.io/cluster": "items-db", "cnpg.io/poolerName": "items-db-pooler-rw", "cnpg.io/podRole": "pooler"}
POOLER_RO = {**POOLER, "cnpg.io/poolerName": "items-db-pooler-ro"}
MQ = {"app.kubernetes.io/name": "items-mq", "app.kubernetes.io/component": "rabbitmq"}


def test_every_pod_is_closed_to_ingress_unless_a_policy_admits_it(manifests):
    for docs in manifests.values():
        deny = [p for p in find(docs, "NetworkPolicy") if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
        assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"]


def test_only_nginx_is_reachable_from_outside(manifests):
    for docs in manifests.values():
        assert sources(docs, labels("nginx"), 8080) == {"anyone"}
        for pod in checks.pod_sets(docs):
            if pod.labels.get("app.kubernetes.io/component") == "nginx":
                continue
            for port in (80, 8000, 5432, 5672, 6379, 9808, 15672):
                assert "anyone" not in sources(docs, dict(pod.labels), port), (pod.owner, port)


def test_the_database_is_reachable_only_from_web_worker_and_migrate(manifests):
    for docs in manifests.values():
        assert sources(docs, POOLER, 5432) == {"Deployment items-web", "Deployment items-worker"}
        assert sources(docs, POOLER_RO, 5432) == {"Deployment items-web"}  # reads only
        assert sources(docs, DB, 5432) == {
            "Pooler items-db-pooler-rw",
            "Pooler items-db-pooler-ro",
            "Job items-migrate",
            "Cluster items-db",
        }


def test_metrics_are_reachable_only_from_the_monitoring_namespace(manifests):
    for docs in manifests.values():
        # web's port serves the API too: Nginx must reach it, and answers /metrics with 404 to the public side.
        assert sources(docs, labels("web"), 8000) == {"Deployment items-nginx", "namespace monitoring"}
        assert sources(docs, labels("worker"), 9808) == {"namespace monitoring"}
        assert sources(docs, labels("redis"), 9121) == {"namespace monitoring"}
        assert sources(docs, labels("redis-state"), 9121) == {"namespace monitoring"}
        assert sources(docs, DB, 9187) == {"namespace monitoring"}
        assert sources(docs, POOLER, 9127) == {"namespace monitoring"}
        assert sources(docs, POOLER_RO, 9127) == {"namespace monitoring"}
        assert sources(docs, MQ, 15692) == {"namespace monitoring"}


def test_the_broker_and_the_cache_are_reachable_only_from_the_app_and_keda(manifests):
    for docs in manifests.values():
        assert sources(docs, MQ, 5672) == {"Deployment items-web", "Deployment items-worker", "namespace keda"}
        assert sources(docs, labels("redis"), 6379) == {"Deployment items-web", "Deployment items-worker"}
        assert sources(docs, labels("redis-state"), 6379) == {"Deployment items-web", "Deployment items-worker"}


def test_nginx_itself_answers_metrics_only_to_loopback():
    conf = (REPO / "deploy/nginx/conf.d/items.conf.template").read_text()
    assert re.search(r"geo \$metrics_denied \{\s*default\s+1;\s*127\.0\.0\.1/32 0;\s*::1/128\s+0;\s*\}", conf)


# --- Prometheus -----------------------------------------------------------------------------------------------


def test_prometheus_scrapes_web_worker_and_every_exporter_on_a_declared_port(manifests):
    for docs in manifests.values():
        for name, port in (("web", 8000), ("worker", 9808), ("redis", 9121), ("redis-state", 9121)):
            workload = component(docs, name)
            annotations = (checks.pod_template(workload) or {})["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(port)
            declared = {
                p["containerPort"]
                for c in checks.containers_of(checks.pod_template(workload) or {})
                for p in c.get("ports", [])
            }
            assert port in declared
        assert (
            one(docs, "Cluster", "items-db")["spec"]["inheritedMetadata"]["annotations"]["prometheus.io/port"] == "9187"
        )
        pooler = one(docs, "Pooler", "items-db-pooler-rw")["spec"]["template"]["metadata"]["annotations"]
        assert pooler["prometheus.io/port"] == "9127"
        rabbit = one(docs, "RabbitmqCluster", "items-mq")["spec"]["override"]["statefulSet"]["spec"]["template"]
        assert rabbit["metadata"]["annotations"]["prometheus.io/port"] == "15692"


# --- the stateful parts ---------------------------------------------------------------------------------------


def test_reads_go_to_the_replicas_pooler_in_production_and_to_the_primary_in_dev(manifests):
    for overlay, docs in manifests.items():
        pooler = one(docs, "Pooler", "items-db-pooler-ro")["spec"]
        assert (pooler["type"], pooler["pgbouncer"]["poolMode"]) == ("ro", "transaction")
        config = {}
        for doc in find(docs, "ConfigMap"):
            if checks.name_of(doc).startswith("items-config"):
                config = doc["data"]
        expected = "" if overlay == "dev" else "postgres://items@items-db-pooler-ro:5432/items"
        assert config["REPLICA_DATABASE_URL"] == expected, overlay


def test_postgres_is_an_operator_cluster_behind_a_transaction_pooler(manifests):
    for docs in manifests.values():
        pooler = one(docs, "Pooler", "items-db-pooler-rw")["spec"]
        assert (pooler["cluster"]["name"], pooler["type"], pooler["pgbouncer"]["poolMode"]) == (
            "items-db",
            "rw",
            "transaction",
        )
        assert one(docs, "Cluster", "items-db")["spec"]["bootstrap"]["initdb"] == {
            "database": "items",
            "owner": "items",
        }


def test_production_replicates_synchronously_backs_up_nightly_and_keeps_a_quorum_of_brokers(manifests):
    docs = manifests["production"]
    cluster = one(docs, "Cluster", "items-db")["spec"]
    assert cluster["instances"] >= 3
    assert cluster["postgresql"]["synchronous"]["number"] >= 1
    assert cluster["backup"]["barmanObjectStore"]["wal"]
    backup = one(docs, "ScheduledBackup", "items-db-nightly")["spec"]
    assert backup["cluster"]["name"] == "items-db" and backup["method"] == "barmanObjectStore"
    assert one(docs, "RabbitmqCluster", "items-mq")["spec"]["replicas"] == 3


def test_dev_runs_everything_once(manifests):
    docs = manifests["dev"]
    assert one(docs, "HorizontalPodAutoscaler", "items-web")["spec"]["minReplicas"] == 1
    assert one(docs, "ScaledObject", "items-worker")["spec"]["minReplicaCount"] == 1
    assert one(docs, "Deployment", "items-nginx")["spec"]["replicas"] == 1
    assert one(docs, "StatefulSet", "items-redis")["spec"]["replicas"] == 1
    assert one(docs, "StatefulSet", "items-redis-state")["spec"]["replicas"] == 1
    cluster = one(docs, "Cluster", "items-db")["spec"]
    assert cluster["instances"] == 1
    assert "synchronous" not in cluster["postgresql"]  # a lone primary has no replica to confirm commits
    assert one(docs, "Pooler", "items-db-pooler-rw")["spec"]["instances"] == 1
    assert one(docs, "RabbitmqCluster", "items-mq")["spec"]["replicas"] == 1
    assert not [d for d in docs if d["kind"] == "ScheduledBackup"]


def test_an_upgrade_can_apply_the_settings_and_the_migrate_job_before_anything_else(manifests):
    """docs/kubernetes.md, "Upgrade": `kubectl apply -l 'app.kubernetes.io/component in (config,migrate)'`."""
    for docs in manifests.values():
        first = [
            d
            for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in ("config", "migrate")
        ]
        assert sorted(d["kind"] for d in first) == ["ConfigMap", "Job"]
        job = next(d for d in first if d["kind"] == "Job")
        wanted = {s["configMapRef"]["name"] for s in main_container(job)["envFrom"]}
        assert wanted == {checks.name_of(d) for d in first if d["kind"] == "ConfigMap"}


def test_the_kubernetes_objects_in_the_guide_pass_their_schemas(crd_schemas):
    """The HPA on the shed rate and the restore Cluster of docs/kubernetes.md are applied by copy and paste."""
    guide = (REPO / "docs/kubernetes.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, flags=re.S)]
    objects = [b for b in blocks if isinstance(b, dict) and "apiVersion" in b and "kind" in b]
    assert {o["kind"] for o in objects} >= {"HorizontalPodAutoscaler", "Cluster"}
    builtin, custom = validate.split_custom(objects, crd_schemas)
    assert validate.builtin_problems(builtin) == []
    assert validate.custom_resource_problems(custom, crd_schemas) == []
