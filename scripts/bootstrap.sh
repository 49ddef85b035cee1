#!/usr/bin/env bash
# Set up everything nipype-batch's local stack and tests need on a fresh Debian machine:
# Docker daemon, mmdebstrap, Debian's registry, chromium and tmux (apt; the report's browser
# test and the live view's terminal test), with --arm64 qemu-user-static and binfmt_misc (arm64
# images run emulated, for `pytest -m arm64`),
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
# --arm64: arm64 (Graviton) job images built and run here, emulated (`pytest -m arm64`)
ARM64=""
[ "${1:-}" = "--arm64" ] && ARM64=1
if [ -n "$ARM64" ]; then
  command -v update-binfmts >/dev/null || need_apt+=(binfmt-support)
  command -v arch-test >/dev/null || need_apt+=(arch-test)  # mmdebstrap's foreign arch check
  [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -e /usr/bin/qemu-aarch64-static ] \
    || need_apt+=(qemu-user-static)
fi
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

if [ -n "$ARM64" ] && [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    || echo "bootstrap: binfmt_misc cannot be mounted here: arm64 containers will not run"
fi
if [ -n "$ARM64" ] && [ -e /proc/sys/fs/binfmt_misc/register ] \
    && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  $SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 \
    || echo "bootstrap: qemu-aarch64 could not be registered: arm64 containers will not run"
fi
