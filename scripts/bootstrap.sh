#!/usr/bin/env bash
# Set up everything nipype-batch's local stack and tests need on a fresh Debian machine:
# Docker daemon, mmdebstrap, Debian's registry, chromium and tmux (apt; the report's browser
# test and the live view's terminal test),
# the Python package with its test extras (pip), and the default base image. Safe to run
# again: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PY="${PYTHON:-python3}"

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v tmux >/dev/null || need_apt+=(tmux)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" iptables ca-certificates >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "bootstrap: starting dockerd (log: /var/log/dockerd.log)"
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /var/log/dockerd.log" >&2; exit 1; }
fi

if ! "$PY" -c "import nipype_batch, moto, pytest, dipy, matplotlib, rich, importlinter, sys; sys.version_info >= (3, 12) or __import__('boto')" >/dev/null 2>&1; then
  echo "bootstrap: installing nipype-batch with its test extras"
  "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
fi

containers/base-image.sh
