#!/usr/bin/env bash
# Installs what the second, independent verifier of exports (tests/verifier/verify.py,
# written from docs/verification.md) needs into a Python venv at .venv-verify: PyPI
# `cryptography` (Ed25519). Idempotent: returns at once when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VERIFY_VENV:-.venv-verify}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import cryptography' >/dev/null 2>&1; then
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
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/verifier/requirements.txt
echo "verifier-setup: ready ($VENV)"
