#!/bin/sh
# Entry point of every container in docker-compose.yml (POSIX sh + awk: it runs in Debian, Ubuntu and busybox
# images alike). In order:
#   --init-secrets     generate each missing secret into $SECRETS_DIR once, then exit (the `secrets` service)
#   (always)           export SECRET_KEY, POSTGRES_PASSWORD, RABBITMQ_PASSWORD from $SECRETS_DIR unless the
#                      environment (.env) already sets them; then expand ${NAME} inside the variables listed in
#                      $ENTRYPOINT_EXPAND (e.g. DATABASE_URL), so URLs can carry a generated password
#   --render SRC:DST   render a deploy/ template: ${UPPER_CASE} placeholders from the environment, the same
#                      syntax deploy/stack/prepare.py renders natively; an unset placeholder is an error
#   [--] command...    exec'd, so it is PID 1 and receives docker's SIGTERM itself
set -eu

SECRETS_DIR=${SECRETS_DIR:-/run/items-secrets}
SECRETS="SECRET_KEY POSTGRES_PASSWORD RABBITMQ_PASSWORD"

say() { echo "entrypoint: $*" >&2; }

secret_file() { echo "$SECRETS_DIR/$(echo "$1" | tr 'A-Z' 'a-z')"; }

init_secrets() {
  umask 022
  mkdir -p "$SECRETS_DIR"
  for name in $SECRETS; do
    file=$(secret_file "$name")
    eval "value=\${$name:-}"
    if [ -n "$value" ]; then
      say "$name comes from the environment (.env)"
    elif [ -s "$file" ]; then
      say "$name: keeping $file"
    else
      # 256 random bits as hex: URL-safe, so it can sit inside DATABASE_URL and BROKER_URL unquoted.
      tmp="$file.tmp.$$"
      od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$tmp"
      chmod 0444 "$tmp"
      ln "$tmp" "$file" 2>/dev/null || say "$name: $file appeared meanwhile; keeping it"
      rm -f "$tmp"
      say "$name: generated $file (first start; set $name in .env to choose your own)"
    fi
  done
}

load_secrets() {
  for name in $SECRETS; do
    eval "value=\${$name:-}"
    file=$(secret_file "$name")
    if [ -z "$value" ] && [ -s "$file" ]; then
      value=$(cat "$file")
      export "$name=$value"
    fi
  done
  for name in ${ENTRYPOINT_EXPAND:-}; do
    eval "value=\${$name:-}"
    value=$(printf '%s\n' "$value" | render_stream) || { say "cannot expand $name"; exit 64; }
    export "$name=$value"
  done
}

# ${UPPER_CASE} -> its value; $lowercase and anything else stays literal (Nginx's own variables, for one).
render_stream() {
  awk '{
    out = ""; rest = $0
    while (match(rest, /\$\{[A-Z_][A-Z0-9_]*\}/)) {
      name = substr(rest, RSTART + 2, RLENGTH - 3)
      if (!(name in ENVIRON)) { printf "entrypoint: %s is not set\n", name > "/dev/stderr"; exit 1 }
      out = out substr(rest, 1, RSTART - 1) ENVIRON[name]
      rest = substr(rest, RSTART + RLENGTH)
    }
    print out rest
  }'
}

if [ "${1:-}" = "--init-secrets" ]; then
  init_secrets
  exit 0
fi

load_secrets
while [ $# -gt 0 ]; do
  case "$1" in
    --render)
      src=${2%%:*}
      dst=${2#*:}
      mkdir -p "$(dirname "$dst")"
      render_stream < "$src" > "$dst.tmp" || { rm -f "$dst.tmp"; say "cannot render $src"; exit 64; }
      mv "$dst.tmp" "$dst"
      shift 2
      ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { say "no command to run"; exit 64; }
exec "$@"
