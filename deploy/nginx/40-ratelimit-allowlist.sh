#!/bin/sh
# For the nginx image (/docker-entrypoint.d/): renders RATELIMIT_ALLOWLIST (comma-separated CIDRs) into the geo
# include that conf.d/items.conf reads, as deploy/stack/stack.py does natively. POSIX sh: the image may be Alpine.
set -eu

out=/etc/nginx/ratelimit-allowlist.geo
echo "# Generated from RATELIMIT_ALLOWLIST: these clients bypass Nginx's rate limits." > "$out"
for cidr in $(echo "${RATELIMIT_ALLOWLIST:-}" | tr ',' ' '); do
  echo "$cidr 1;" >> "$out"
done
