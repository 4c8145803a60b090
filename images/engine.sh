#!/usr/bin/env bash
# A Docker engine from Debian's packages, for CI and for machines without one (root only):
# installs docker.io and debootstrap (images/base.sh makes the local base with it) if
# missing, starts dockerd if nothing answers, and waits until it does.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "$0: installing and starting Docker needs root" >&2; exit 1; }
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  log=${TMPDIR:-/tmp}/dockerd.log
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "$0: dockerd did not start; see $log" >&2; exit 1; }
fi
echo "docker engine $(docker version --format '{{.Server.Version}}')"
