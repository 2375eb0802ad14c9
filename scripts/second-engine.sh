#!/usr/bin/env bash
# A second, real Docker engine on this machine that stands in for a remote
# host: its own network namespace (ps-remote, address 10.77.0.2, reached over
# a veth pair from 10.77.0.1), its own data root, and dockerd listening on
# tcp://10.77.0.2:2375 (reachable only through that veth). Root only.
#   second-engine.sh start [IMAGE...]   # start it; copy the named images into it
#   second-engine.sh stop               # stop it and remove everything it had
set -euo pipefail
ns=ps-remote
addr=10.77.0.2
root=/var/lib/ps-remote-docker
run=/run/ps-remote
log() { printf 'second-engine: %s\n' "$*" >&2; }
endpoint="tcp://$addr:2375"

stop() {
  if [[ -f $run/docker.pid ]]; then
    kill "$(cat "$run/docker.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [[ -e /proc/$(cat "$run/docker.pid" 2>/dev/null || echo 0) ]] || break; sleep 0.2; done
  fi
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip link del ps-veth0 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  # what dockerd mounted under its roots (overlays, the netns bind of exec-root/netns/default), deepest first
  awk -v a="$root" -v b="$run" '$2 == a || index($2, a "/") == 1 || $2 == b || index($2, b "/") == 1 {print $2}' /proc/mounts \
    | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  rm -rf "$root" "$run"
}

case ${1:-} in
  start)
    shift
    if DOCKER_HOST=$endpoint docker info >/dev/null 2>&1; then
      log "already running at $endpoint"
    else
      stop
      mkdir -p "$root" "$run"
      ip netns add "$ns"
      ip link add ps-veth0 type veth peer name ps-veth1
      ip link set ps-veth1 netns "$ns"
      ip addr add 10.77.0.1/24 dev ps-veth0
      ip link set ps-veth0 up
      ip netns exec "$ns" ip addr add "$addr/24" dev ps-veth1
      ip netns exec "$ns" ip link set ps-veth1 up
      ip netns exec "$ns" ip link set lo up
      # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts dockerd needs
      nohup nsenter --net=/run/netns/"$ns" dockerd -H "$endpoint" -H "unix://$run/docker.sock" \
        --data-root "$root" --exec-root "$run/exec" --pidfile "$run/docker.pid" >"$run/dockerd.log" 2>&1 &
      for _ in $(seq 120); do DOCKER_HOST=$endpoint docker info >/dev/null 2>&1 && break; sleep 0.5; done
      DOCKER_HOST=$endpoint docker info >/dev/null 2>&1 || { log "dockerd did not answer; see $run/dockerd.log"; exit 1; }
      log "engine at $endpoint"
    fi
    missing=()
    for image in "$@"; do
      DOCKER_HOST=$endpoint docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
    done
    if ((${#missing[@]})); then  # one stream: layers the images share travel once
      docker save "${missing[@]}" | DOCKER_HOST=$endpoint docker load -q >/dev/null
      log "copied ${missing[*]}"
    fi
    echo "$endpoint"
    ;;
  stop) stop ;;
  *) echo "usage: $0 start [IMAGE...] | stop" >&2; exit 2 ;;
esac
