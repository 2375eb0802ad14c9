#!/usr/bin/env bash
# Provision a real Docker engine + Compose v2 on a Debian 12 host (root).
# Follows ../shared/DOCKER.md: docker.io from bookworm, docker-compose 2.x from
# trixie (pinned low so nothing else moves), dockerd started by hand when no
# engine answers. Idempotent: every step is skipped when already done.
set -euo pipefail

log() { printf 'provision-docker: %s\n' "$*" >&2; }

need_apt=0
command -v dockerd >/dev/null 2>&1 || need_apt=1
command -v debootstrap >/dev/null 2>&1 || need_apt=1

if [[ ! -f /etc/apt/sources.list.d/trixie.sources ]]; then
  log "adding trixie source (pinned at priority 100) for docker-compose v2"
  cat >/etc/apt/sources.list.d/trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >/etc/apt/preferences.d/trixie <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
  need_apt=1
fi
docker compose version >/dev/null 2>&1 || need_apt=1

if [[ $need_apt == 1 ]]; then
  log "installing docker.io, debootstrap and docker-compose (trixie)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t trixie docker-compose >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  nohup dockerd --host unix:///var/run/docker.sock >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer within 60 s; see /tmp/dockerd.log"; exit 1; }
fi
log "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null || echo 'no compose v2')"
