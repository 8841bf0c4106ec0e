#!/usr/bin/env bash
# The full suite: lint, types, then every test (unit, integration on real servers, e2e).
set -euo pipefail
venv=${VENV:-.venv}
export CI=${CI:-true}
"$venv/bin/ruff" check soma orchestrator tests bench scripts
"$venv/bin/ruff" format --check soma orchestrator tests bench scripts
"$venv/bin/mypy" soma orchestrator
set +e
"$venv/bin/python" -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
