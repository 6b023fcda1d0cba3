#!/usr/bin/env bash
# Restores a backup made by pg-backup.sh into the database named by the libpq variables (PGHOST, PGUSER,
# PGPASSWORD or PGPASSWORD_FILE, PGDATABASE...). It replaces what is there: the public schema is dropped and recreated first,
# and the whole restore runs in one transaction, so a failure leaves the database as it was.
#   pg-restore.sh BACKUP_FILE.sql.gz
set -euo pipefail

# Under docker compose the password may live in the generated secrets volume rather than in the environment.
if [[ -z ${PGPASSWORD:-} && -n ${PGPASSWORD_FILE:-} ]]; then
  PGPASSWORD=$(< "$PGPASSWORD_FILE")
  export PGPASSWORD
fi

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) pg-restore: $*" >&2; }
file=${1:-}
[[ -n $file ]] || { echo "usage: $0 BACKUP_FILE.sql.gz" >&2; exit 64; }
[[ -r $file ]] || { log "cannot read $file"; exit 66; }
gzip -t "$file" || { log "$file is not a complete gzip file"; exit 65; }

log "restoring $file into ${PGDATABASE:-items} on ${PGHOST:-local socket}"
{
  echo "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;"
  gunzip -c "$file"
} | psql --quiet --no-psqlrc --single-transaction --set ON_ERROR_STOP=1 --output /dev/null
log "done"
