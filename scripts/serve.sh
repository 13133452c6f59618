#!/usr/bin/env bash
# Installs the service into .venv and serves the shipped model on http://127.0.0.1:8000.
# Extra arguments go to `csd-sr serve` (see `csd-sr serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch==2.13.0 is the CPU build; elsewhere add: --extra-index-url https://download.pytorch.org/whl/cpu
.venv/bin/pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/csd-sr serve "$@"
