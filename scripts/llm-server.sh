#!/usr/bin/env bash
# Serves the small local model (llama.cpp through xllamacpp) on 127.0.0.1 for trying the
# openai and anthropic brains without an account:
#
#   scripts/llm-server.sh --port 8080 &
#   mesh-worker --role backend --brain openai --base-url http://127.0.0.1:8080/v1 --model local
#   mesh-worker --role security --brain anthropic --base-url http://127.0.0.1:8080 --model local
#
# Arguments go to scripts/llm_server.py (--port, --threads, --ctx, --parallel, --model).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLM_VENV:-.venv-llm}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "llm-server: no venv at $VENV: run \`make llm-setup\` first" >&2
  exit 1
fi
exec "$VENV/bin/python" scripts/llm_server.py "$@"
