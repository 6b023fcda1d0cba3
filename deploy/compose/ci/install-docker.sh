#!/usr/bin/env bash
# Installs what `make compose-test` needs on a Debian 12 host, from Debian's archive only: the engine (docker.io),
# debootstrap, and Compose v2 and buildx, which bookworm lacks (its docker-compose is v1): those two come as the
# trixie packages' static binaries, checked against the SHA-256 sums below before installing.
set -euo pipefail

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
plugins=/usr/libexec/docker/cli-plugins
log() { echo "install-docker: $*" >&2; }
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"

missing=()
for package in docker.io debootstrap; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if (( ${#missing[@]} )); then
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

# package version sha256-of-the-.deb
debs=(
  "docker-compose 2.26.1-4 47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea"
  "docker-buildx 0.13.1+ds1-3 fcf8c48204d1603c8f209451d7827eb91bf30759578baf7704e9e1a87e5f1d7f"
)
for spec in "${debs[@]}"; do
  read -r package version sum <<< "$spec"
  plugin=$plugins/$package
  if [[ -x $plugin ]]; then continue; fi
  deb=$(mktemp --suffix=.deb)
  url="$mirror/pool/main/d/$package/${package}_${version}_amd64.deb"
  log "fetching $url"
  curl -fsSL -o "$deb" "$url"
  echo "$sum  $deb" | sha256sum -c --quiet - || { log "checksum mismatch for $url"; rm -f "$deb"; exit 1; }
  $sudo dpkg -i "$deb" > /dev/null
  rm -f "$deb"
done
docker compose version > /dev/null || { log "docker compose does not run"; exit 1; }
