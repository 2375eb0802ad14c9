#!/usr/bin/env bash
# Build offline stand-ins for the official postgres, redis, eclipse-mosquitto, caddy and python images
# from Debian packages (debootstrap + docker import), for hosts that reach
# Debian's mirror but no container registry. They keep the official images'
# contract, so the generated compose file works with either.
# Prints KEY=VALUE lines naming the images (for `export $(...)`).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ctx="$here/env/offline-images"
prefix=parallel-stacks-offline
# OFFLINE_IMAGES_PREFIX=name builds the stand-ins under another name (the base stays shared): to try a
# changed Dockerfile or entrypoint without retagging the stand-ins other work on this engine uses.
kinds_prefix=${OFFLINE_IMAGES_PREFIX:-$prefix}
# Debian packages of the base every stand-in starts from; the base's tag carries
# their hash, so a changed list builds a new base (and so new stand-ins).
packages=postgresql-15,redis-server,mosquitto,mosquitto-clients,caddy,python3,python3-psycopg,python3-redis,python3-paho-mqtt,ca-certificates
base="$prefix/base:bookworm-$(printf %s "$packages" | sha256sum | cut -c1-12)"
log() { printf 'offline-images: %s\n' "$*" >&2; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$base"; then
  command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
  rootfs=$(mktemp -d /tmp/ps-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm into $rootfs (about a minute)"
  debootstrap --variant=minbase \
    --include="$packages" \
    bookworm "$rootfs" http://deb.debian.org/debian >/tmp/ps-debootstrap.log 2>&1 \
    || { log "debootstrap failed; see /tmp/ps-debootstrap.log"; exit 1; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  log "imported $base"
fi
for kind in postgres redis mosquitto caddy python; do
  img="$kinds_prefix/$kind:bookworm"
  # rebuilt whenever its Dockerfile or entrypoint changed (a label carries their hash)
  inputs=("$ctx/Dockerfile.$kind")
  [[ -f $ctx/$kind-entrypoint.sh ]] && inputs+=("$ctx/$kind-entrypoint.sh")
  sum=$( (echo "$base"; cat "${inputs[@]}") | sha256sum | cut -c1-16)
  if [[ $(docker image inspect -f '{{ index .Config.Labels "parallel-stacks.context" }}' "$img" 2>/dev/null) != "$sum" ]]; then
    docker build -q --build-arg "BASE=$base" --label "parallel-stacks.context=$sum" -f "$ctx/Dockerfile.$kind" -t "$img" "$ctx" >/dev/null
    log "built $img"
  fi
done
# --adoption: also the stand-ins the adoption tests tag with third-party names
# (nginx, node, a generic web application); built FROM the base with apt in the build.
if [[ ${1:-} == --adoption ]]; then
  build_ctx=$(mktemp -d /tmp/ps-adopt-ctx.XXXXXX)
  cp -r "$ctx"/. "$build_ctx"/
  mkdir -p "$build_ctx/ca"
  cp /usr/local/share/ca-certificates/*.crt "$build_ctx/ca/" 2>/dev/null || true
  touch "$build_ctx/ca/.keep"
  for kind in nginx node webapp; do
    img="$prefix/$kind:bookworm"
    sum=$( (echo "$base"; cat "$ctx/Dockerfile.$kind" "$ctx/webapp.py"; cat "$build_ctx"/ca/*) | sha256sum | cut -c1-16)
    if [[ $(docker image inspect -f '{{ index .Config.Labels "parallel-stacks.context" }}' "$img" 2>/dev/null) != "$sum" ]]; then
      docker build -q --build-arg "BASE=$base" --label "parallel-stacks.context=$sum" -f "$build_ctx/Dockerfile.$kind" -t "$img" "$build_ctx" >/dev/null \
        || { rm -rf "$build_ctx"; log "building $img failed"; exit 1; }
      log "built $img"
    fi
  done
  rm -rf "$build_ctx"
  printf 'NGINX_STANDIN=%s\nNODE_STANDIN=%s\nWEBAPP_STANDIN=%s\n' "$prefix/nginx:bookworm" "$prefix/node:bookworm" "$prefix/webapp:bookworm"
fi
printf 'POSTGRES_IMAGE=%s\nREDIS_IMAGE=%s\nMOSQUITTO_IMAGE=%s\nCADDY_IMAGE=%s\nPYTHON_IMAGE=%s\n' \
  "$kinds_prefix/postgres:bookworm" "$kinds_prefix/redis:bookworm" "$kinds_prefix/mosquitto:bookworm" "$kinds_prefix/caddy:bookworm" "$kinds_prefix/python:bookworm"
