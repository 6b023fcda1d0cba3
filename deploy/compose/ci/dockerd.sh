#!/usr/bin/env bash
# A private Docker engine for `make compose-test`: its own data root, exec root, socket and pidfile, so it
# neither needs nor touches a system dockerd. `start` prints the DOCKER_HOST to use; `stop` ends the daemon
# and its containerd and removes the default bridge it made, leaving no daemon or network behind.
set -euo pipefail

base=${COMPOSE_CI_DIR:-/var/tmp/items-compose-ci}
run=/run/items-dockerd  # short: unix socket paths under the exec root are limited to 108 bytes
socket=$run/docker.sock
pidfile=$run/dockerd.pid
log() { echo "dockerd: $*" >&2; }

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case ${1:-} in
  start)
    if ! running; then
      mkdir -p "$base/docker" "$run"
      dockerd --data-root "$base/docker" --exec-root "$run/exec" --host "unix://$socket" --pidfile "$pidfile" \
        > "$base/dockerd.log" 2>&1 &
      for _ in $(seq 100); do
        DOCKER_HOST=unix://$socket docker info > /dev/null 2>&1 && break
        sleep 0.2
      done
      DOCKER_HOST=unix://$socket docker info > /dev/null 2>&1 \
        || { log "did not start; see $base/dockerd.log"; tail -n 20 "$base/dockerd.log" >&2; exit 1; }
      log "running (log: $base/dockerd.log)"
    fi
    echo "unix://$socket"
    ;;
  stop)
    if running; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid"
      for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && { log "still running after 30 s; killing"; kill -KILL "$pid"; }
    fi
    # The containerd dockerd started under the same exec root, if it outlived dockerd.
    pkill -f "containerd --config $run/exec/containerd/containerd.toml" 2>/dev/null || true
    ip link show docker0 > /dev/null 2>&1 && ip link delete docker0 2>/dev/null || true
    rm -rf "$run"
    log "stopped"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 64
    ;;
esac
