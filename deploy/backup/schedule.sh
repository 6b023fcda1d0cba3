#!/usr/bin/env bash
# The compose `backup` service: one backup at start, then one every BACKUP_INTERVAL_S (default a day). A failed
# backup is logged and retried at the next tick; the service keeps running. SIGTERM stops it at once.
set -uo pipefail

interval=${BACKUP_INTERVAL_S:-86400}
[[ $interval =~ ^[1-9][0-9]*$ ]] || { echo "schedule: BACKUP_INTERVAL_S=$interval is not a positive number of seconds" >&2; exit 64; }
trap 'exit 0' TERM INT
here=$(dirname "$0")
while :; do
  "$here/pg-backup.sh" || echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) schedule: backup failed; next try in ${interval}s" >&2
  sleep "$interval" &
  wait $!
done
