#!/usr/bin/env bash
# Installs the native stack's servers and the load tools from Debian/Ubuntu packages.
set -euo pipefail

packages=(postgresql pgbouncer redis-server rabbitmq-server nginx wrk hey)
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
