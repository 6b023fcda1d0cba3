#!/bin/sh
# Writes PgBouncer's auth file from POSTGRES_USER/POSTGRES_PASSWORD (deploy/compose/entrypoint.sh has loaded
# the password), then runs PgBouncer in the foreground as PID 1. The password stays plain text in the file:
# PgBouncer needs it to log in to PostgreSQL with SCRAM.
set -eu
umask 077
printf '"%s" "%s"\n' "$POSTGRES_USER" "$POSTGRES_PASSWORD" > "$PGBOUNCER_AUTH_FILE"
exec pgbouncer "${PGBOUNCER_CONFIG:-/tmp/pgbouncer.ini}"
