#!/usr/bin/env bash
# Installs the native stack's servers, the load tools, and the offline checkers of make observability-check
# (promtool from `prometheus`, systemd-analyze from `systemd`) from Debian/Ubuntu packages.
set -euo pipefail

packages=(postgresql pgbouncer redis-server rabbitmq-server nginx wrk hey prometheus systemd)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system-deps: all installed (${packages[*]})"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system-deps: installing ${missing[*]}"
$sudo apt-get update -qq
# The packages' own services are not wanted: the native stack runs its own instances on other ports.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# `prometheus` is here for promtool only: nothing runs Debian's Prometheus server (compose has its own, the
# native stack none), so the one it just installed is neither left running nor started at boot.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  $sudo systemctl disable prometheus.service > /dev/null 2>&1 || true
  if [ -d /run/systemd/system ]; then
    $sudo systemctl stop prometheus.service
  else
    $sudo service prometheus stop > /dev/null 2>&1 || true
  fi
fi
