#!/usr/bin/env bash
# One backup of the items database: pg_dump as plain SQL, gzipped, named by UTC time, written to a temp file
# and renamed only when complete (a half-written backup never looks like a good one). Then deletes backups
# older than BACKUP_RETENTION_DAYS. Connection from the standard libpq variables (PGHOST, PGPORT, PGUSER,
# PGPASSWORD or PGPASSWORD_FILE, PGDATABASE), so the same script serves the native stack and docker compose.
#   BACKUP_DIR             where backups go (default ./backups)
#   BACKUP_RETENTION_DAYS  keep this many days of backups (default 7; 0 keeps everything)
set -euo pipefail

# Under docker compose the password may live in the generated secrets volume rather than in the environment.
if [[ -z ${PGPASSWORD:-} && -n ${PGPASSWORD_FILE:-} ]]; then
  PGPASSWORD=$(< "$PGPASSWORD_FILE")
  export PGPASSWORD
fi

dir=${BACKUP_DIR:-./backups}
retention=${BACKUP_RETENTION_DAYS:-7}
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) pg-backup: $*" >&2; }

[[ $retention =~ ^[0-9]+$ ]] || { log "BACKUP_RETENTION_DAYS=$retention is not a whole number of days"; exit 64; }
mkdir -p "$dir"
name="${PGDATABASE:-items}-$(date -u +%Y%m%dT%H%M%SZ).sql.gz"
tmp="$dir/.$name.partial"
trap 'rm -f "$tmp"' EXIT

started=$(date +%s)
# --no-owner/--no-privileges: restorable as whichever role owns the target database.
pg_dump --no-owner --no-privileges | gzip -6 > "$tmp"
mv "$tmp" "$dir/$name"
log "wrote $dir/$name ($(wc -c < "$dir/$name") bytes, $(( $(date +%s) - started )) s)"

if (( retention > 0 )); then
  find "$dir" -maxdepth 1 -name "${PGDATABASE:-items}-*.sql.gz" -mtime "+$((retention - 1))" -print -delete |
    while read -r old; do log "deleted $old (older than $retention days)"; done
fi
