#!/bin/sh
# For docker compose: renders NGINX_TRUSTED_FRONT (comma-separated CIDRs of the TLS terminators in front of Nginx;
# empty: trust nobody) into the two includes conf.d/items.conf reads, as deploy/stack/prepare.py does natively:
# trusted-front.conf (set_real_ip_from lines) and trusted-front.geo ("CIDR 1;" lines). Writes into $NGINX_CONF_DIR
# (the directory of the nginx.conf in use; default /etc/nginx). POSIX sh: the image may be Alpine.
set -eu

dir=${NGINX_CONF_DIR:-/etc/nginx}
head="# Generated from NGINX_TRUSTED_FRONT: TLS terminators whose X-Forwarded-* Nginx believes."
echo "$head" > "$dir/trusted-front.conf"
echo "$head" > "$dir/trusted-front.geo"
for cidr in $(echo "${NGINX_TRUSTED_FRONT:-}" | tr ',' ' '); do
  echo "set_real_ip_from $cidr;" >> "$dir/trusted-front.conf"
  echo "$cidr 1;" >> "$dir/trusted-front.geo"
done
