#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the pinned stack, torch==2.13.0 first (the build the
# package index serves: CPU here, CUDA from PyPI's Linux default), then requirements*.txt resolved against it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements.txt requirements-test.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt
  rm -f .venv/.installed-*; touch "$stamp"
fi
