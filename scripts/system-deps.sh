#!/usr/bin/env bash
# Debian packages the platform needs (`run`: the tools' sandbox) and the tests need on top (`test`:
# redis-server, wrk for the benchmarks, chromium for the console's browser test). PostgreSQL+
# pgvector, the Kafka-protocol broker and llama.cpp come from PyPI wheels, see pyproject.toml.
set -euo pipefail
mode="${1:-test}"
missing=()
# The python/shell tools' sandbox (bubblewrap namespaces): without it the tools service is
# unhealthy and those tools are refused.
command -v bwrap >/dev/null || missing+=(bubblewrap)
if [ "$mode" = "test" ]; then
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v wrk >/dev/null || missing+=(wrk)
  # The web console's browser test drives Debian's Chromium through Playwright.
  command -v chromium >/dev/null || missing+=(chromium)
  # The rlimits-level tests, run as root, need an interpreter an unprivileged uid can read
  # (Debian's, not one under /root).
  [ -x /usr/bin/python3 ] || missing+=(python3)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
