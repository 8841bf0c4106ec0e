#!/usr/bin/env bash
# Debian packages the integration tests (and the wrk-driven benchmarks, the tools' sandbox) need (PostgreSQL+pgvector and the Kafka-protocol broker
# come from PyPI wheels, see pyproject.toml).
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v wrk >/dev/null || missing+=(wrk)
# The python/shell tools' sandbox (bubblewrap namespaces); the rlimits-level tests, run as root,
# need an interpreter an unprivileged uid can read (Debian's, not one under /root).
command -v bwrap >/dev/null || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
