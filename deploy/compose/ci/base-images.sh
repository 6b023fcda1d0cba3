#!/usr/bin/env bash
# Builds the local images docker-compose.ci.yml runs, from Debian packages only (no registry is reachable in
# CI): debootstrap a root filesystem, prepare it, `docker import` it. Root filesystems are cached in
# $COMPOSE_CI_DIR/rootfs, so a second run only re-imports (skipped too when the tag exists).
#   items-ci/python:bookworm  python3 + venv: BASE_IMAGE of Dockerfile.web and Dockerfile.worker
#   items-ci/infra:bookworm   PostgreSQL 15, PgBouncer, Redis, RabbitMQ, Prometheus, exporters
#   items-ci/nginx:unstable        Nginx from unstable: >= 1.27.3, for the upstream `resolve` flag
#   items-ci/debian:trixie    minimal trixie: BASE_IMAGE of deploy/pgbouncer-exporter
# A root filesystem or an image made from another package list is rebuilt (the list is their cache key).
set -euo pipefail

dir=${COMPOSE_CI_DIR:-/var/tmp/items-compose-ci}/rootfs
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { echo "base-images: $*" >&2; }

# name suite packages
images=(
  "python bookworm python3,python3-venv,ca-certificates"
  "infra bookworm ca-certificates,postgresql-15,postgresql-client-15,pgbouncer,redis-server,redis-tools,rabbitmq-server,prometheus,prometheus-postgres-exporter,prometheus-redis-exporter,prometheus-blackbox-exporter"
  "nginx unstable nginx,ca-certificates"
  "debian trixie ca-certificates"
)

bootstrap() {  # name suite packages
  local root="$dir/$1"
  [[ -f $root/.complete && $(< "$root/.complete") == "$2 $3" ]] && return 0
  rm -rf "$root"
  log "debootstrap $2 for $1 (a minute or two)"
  debootstrap --variant=minbase --include="$3" "$2" "$root" "$mirror" > "$dir/$1.log" 2>&1 \
    || { log "debootstrap $1 failed; last lines of $dir/$1.log:"; tail -n 20 "$dir/$1.log" >&2; return 1; }
  echo "$2 $3" > "$root/.complete"
}

prepare() {  # name: what the official images do in their Dockerfiles, for the images we stand in for
  local root="$dir/$1"
  # Builds behind a TLS-inspecting proxy (as on the CI machines) need the host's CA bundle to reach PyPI.
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  if [[ $1 == infra ]]; then
    # Data dirs that named volumes are mounted on: a new volume takes the owner of the image's directory.
    install -d -m 0700 "$root/var/lib/postgresql/data"
    install -d -m 0750 "$root/data"
    install -d -m 0750 "$root/prometheus"
    chroot "$root" chown postgres:postgres /var/lib/postgresql/data
    chroot "$root" chown redis:redis /data
    chroot "$root" chown prometheus:prometheus /prometheus
  fi
}

import() {  # name suite packages
  local tag="items-ci/$1:$2"
  if [[ $(docker image inspect -f '{{index .Config.Labels "items-ci.packages"}}' "$tag" 2> /dev/null) == "$3" ]]; then
    log "$tag exists"
    return 0
  fi
  prepare "$1"
  local path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  [[ $1 == infra ]] && path=/usr/lib/postgresql/15/bin:$path
  tar --exclude=./.complete -C "$dir/$1" -c . | docker import \
    --change "ENV PATH=$path" --change "ENV LANG=C.UTF-8" \
    --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" --change "LABEL items-ci.packages=$3" \
    --change 'CMD ["bash"]' - "$tag" > /dev/null
  log "imported $tag"
}

command -v debootstrap > /dev/null || { log "debootstrap is missing (make compose-test installs it)"; exit 1; }
mkdir -p "$dir"
pids=()
for spec in "${images[@]}"; do
  read -r name suite packages <<< "$spec"
  bootstrap "$name" "$suite" "$packages" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
for spec in "${images[@]}"; do
  read -r name suite packages <<< "$spec"
  import "$name" "$suite" "$packages"
done
