#!/bin/sh
# CI stand-in for the postgres image's docker-entrypoint.sh, as far as docker-compose.yml relies on it: on the
# first start (empty data dir) create the cluster with POSTGRES_USER as superuser, its SCRAM password from
# POSTGRES_PASSWORD and the database POSTGRES_DB; then exec the server with the given arguments.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  echo "postgres-first-start: created the cluster, role $POSTGRES_USER and database $POSTGRES_DB" >&2
fi
shift  # "postgres", the command docker-compose.yml gives the official image's entrypoint
exec postgres -D "$PGDATA" "$@"
