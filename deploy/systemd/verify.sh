#!/usr/bin/env bash
# `make observability-check`: `systemd-analyze verify` on the units in this folder, offline, on a machine where
# systemd need not run (CI's does not) and the units are not installed. It verifies them inside a throwaway root
# (--root) laid out as an installed host: systemd's own units and the distribution's (postgresql, pgbouncer,
# redis-server, rabbitmq-server, nginx: whichever this host has), the units in /etc/systemd/system, and every
# program their Exec*= lines name at that path (/opt/items/deploy/*/start from this checkout, mode kept).
# verify exits 0 on an unknown key or a value it cannot parse (it only warns), so any output is a failure.
# The distribution's units are only ordered against (After=/Before=) and wanted (Wants=), which verify accepts
# when they are missing: syntax is still checked then, and the ones missing here are named.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "systemd-verify: $*" >&2; }
command -v systemd-analyze > /dev/null || { say "systemd-analyze is missing (Debian: apt-get install systemd)"; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/usr/sbin" "$root/etc/systemd/system"
for dir in bin lib sbin; do ln -s "usr/$dir" "$root/$dir"; done
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"

units=()
for unit in deploy/systemd/*.service deploy/systemd/*.target; do
  cp "$unit" "$root/etc/systemd/system/"
  units+=("$(basename "$unit")")
done

# Programs as the units name them (ExecStart=, ExecReload=, ... after any of systemd's -@:+! prefixes).
for program in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' deploy/systemd/*.service | sort -u); do
  source=$program
  [[ $program == /opt/items/* ]] && source=${program#/opt/items/}
  [[ -e $source ]] || { say "$program: no $source here"; exit 1; }
  install -D -m "$(stat -L -c %a "$source")" "$source" "$root$program"
done

missing=()
for unit in postgresql.service pgbouncer.service redis-server.service rabbitmq-server.service nginx.service; do
  [[ -e $root/usr/lib/systemd/system/$unit ]] || missing+=("$unit")
done
[[ ${#missing[@]} -eq 0 ]] || say "not installed here, so checked for syntax only: ${missing[*]}"

status=0
output=$(cd "$root" && systemd-analyze verify --man=no --root="$root" "${units[@]}" 2>&1) || status=$?
if [[ $status -ne 0 || -n $output ]]; then
  say "FAILED (exit $status):"
  echo "$output" >&2
  exit 1
fi
echo "systemd-verify: ${units[*]}: OK"
