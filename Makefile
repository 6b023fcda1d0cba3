# The README's commands. `make run` and `make test` need only Python 3.11+; the rest is documented after them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration lint format system-deps stack stack-down stack-status \
	loadtest loadtest-smoke loadtest-writes loadtest-ab compose-test k8s-validate observability-check

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed; run e.g. 'make PYTHON=python3.12 $(MAKECMDGOALS)'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed ## create .venv and install the pinned dependencies

run: install ## serve the API on http://127.0.0.1:8000 (embedded default: SQLite, in-process cache and tasks)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) --loop uvloop \
		--http project.asgi_stack.server_errors:EnvelopeHttpToolsProtocol --no-access-log

test: install ## run the whole suite: unit tests, then integration tests on the native stack
	$(BIN)/pytest

test-unit: install ## unit tests only (embedded default, seconds)
	$(BIN)/pytest tests/unit

test-integration: install ## integration tests only (start the native stack on free ports)
	$(BIN)/pytest tests/integration

lint: install ## ruff lint and format check, mypy, the import contracts, hadolint on the Dockerfiles, k8s-validate, observability-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint Dockerfile.web Dockerfile.worker deploy/pgbouncer/Dockerfile deploy/pgbouncer-exporter/Dockerfile
	$(MAKE) --no-print-directory k8s-validate
	$(MAKE) --no-print-directory observability-check

# checkov in a virtualenv of its own: its pins (packaging, boto3, aiohttp, ...) conflict with requirements.txt.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed: deploy/k8s/checkov-requirements.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/k8s/checkov-requirements.txt
	@touch $@

k8s-validate: install $(CHECKOV_VENV)/.installed ## deploy/k8s offline: kustomize, kubernetes-validate, CRD schemas, checkov, structure
	$(BIN)/python -m deploy.k8s.validate --checkov $(CHECKOV_VENV)/bin/checkov
	K8S_REQUIRED=1 $(BIN)/pytest -q tests/unit/deploy/test_k8s_checks.py tests/unit/deploy/test_k8s_overlays.py

# promtool is Debian's `prometheus` package and systemd-analyze its `systemd` (make system-deps): offline, ~1 s.
observability-check: install ## Prometheus configs, alert rules and their unit tests, every dashboard query, systemd units
	promtool check config deploy/prometheus/prometheus.yml deploy/prometheus/prometheus.systemd.yml
	promtool test rules deploy/prometheus/tests/*.yml
	$(BIN)/python -m deploy.grafana.check
	deploy/systemd/verify.sh

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

system-deps: ## install the servers of the native stack and the load tools (Debian/Ubuntu, as root)
	deploy/system-deps.sh

stack: install ## start the production topology on this host (see README: Native stack)
	$(BIN)/python -m deploy.stack up

stack-down: ## stop everything `make stack` started
	$(BIN)/python -m deploy.stack down

stack-status: ## show each process of the native stack
	$(BIN)/python -m deploy.stack status

$(VENV)/.loadtest-installed: loadtest/requirements.txt | $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r loadtest/requirements.txt
	@touch $@

loadtest: install $(VENV)/.loadtest-installed ## every load scenario 3x + baselines, 60 s of sustained writes, the write/read A/B; report in loadtest/results/
	$(BIN)/python -m loadtest --start-stack $(LOADTEST_ARGS)
	$(BIN)/python -m loadtest.sustained_writes --start-stack
	$(BIN)/python -m loadtest.ab --start-stack $(AB_ARGS)

loadtest-ab: install ## POST and cache-miss GET, write path on / off (AB_ARGS="--baseline-ref <commit>" adds that commit), 3 rounds
	$(BIN)/python -m loadtest.ab --start-stack $(AB_ARGS)

loadtest-writes: install ## 60 s of sustained POSTs: accepted/s, stored rows/s, queue depth, lost-write check
	$(BIN)/python -m loadtest.sustained_writes --start-stack $(WRITES_ARGS)

loadtest-smoke: install $(VENV)/.loadtest-installed ## every load scenario once, short (< 3 min)
	$(BIN)/python -m loadtest --start-stack --smoke $(LOADTEST_ARGS)

compose-test: install ## build and run the docker compose stack for real (root, Debian; ~4 min): see README, Docker Compose
	deploy/compose/ci/compose-test.sh
