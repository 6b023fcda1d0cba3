#!/bin/sh
# For docker compose: renders RATELIMIT_ALLOWLIST (comma-separated CIDRs) into the geo include that
# conf.d/items.conf reads, as deploy/stack/prepare.py does natively. Writes into $NGINX_CONF_DIR (the directory of
# the nginx.conf in use; default /etc/nginx, so it also works from the nginx image's /docker-entrypoint.d/).
# POSIX sh: the image may be Alpine.
set -eu

out=${NGINX_CONF_DIR:-/etc/nginx}/ratelimit-allowlist.geo
echo "# Generated from RATELIMIT_ALLOWLIST: these clients bypass Nginx's rate limits." > "$out"
for cidr in $(echo "${RATELIMIT_ALLOWLIST:-}" | tr ',' ' '); do
  echo "$cidr 1;" >> "$out"
done
