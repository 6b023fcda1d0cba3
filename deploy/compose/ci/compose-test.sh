#!/usr/bin/env bash
# `make compose-test`: proves the operators' path for real on a machine with no registry. Installs the engine
# and Compose from Debian's archive, starts a private dockerd, builds the base images from Debian packages,
# lints (hadolint, `docker compose config`), then runs tests/compose against the stack built from
# docker-compose.yml + deploy/compose/ci/docker-compose.ci.yml. Always stops the daemon at the end, leaving no
# container, network or daemon behind (the test itself checks the first two before the daemon goes).
set -euo pipefail
cd "$(dirname "$0")/../../.."

ci=deploy/compose/ci
venv=${VENV:-.venv}
"$ci/install-docker.sh"
DOCKER_HOST=$("$ci/dockerd.sh" start)
export DOCKER_HOST
trap '"$ci/dockerd.sh" stop' EXIT

"$ci/base-images.sh"

echo "compose-test: lint" >&2
"$venv/bin/hadolint" Dockerfile.web Dockerfile.worker deploy/pgbouncer/Dockerfile deploy/pgbouncer-exporter/Dockerfile
for files in "docker-compose.yml" "docker-compose.yml docker-compose.dev.yml" "docker-compose.yml $ci/docker-compose.ci.yml"; do
  args=()
  for file in $files; do args+=(-f "$file"); done
  docker compose "${args[@]}" config --quiet || { echo "compose-test: invalid compose config: $files" >&2; exit 1; }
done

"$venv/bin/pytest" tests/compose "$@"
