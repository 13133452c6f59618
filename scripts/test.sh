#!/usr/bin/env bash
# Installs everything the test suite needs into .venv and runs lint, the import contracts and the tests.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch==2.13.0 is the CPU build; elsewhere add: --extra-index-url https://download.pytorch.org/whl/cpu
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'

# Debian packages of the deployment tests (Prometheus, Docker engine, debootstrap): installed
# when missing and running as root; otherwise those tests skip. The tests start the engines.
bash scripts/system-deps.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # the layering of service/ and model/'s independence (pyproject.toml [tool.importlinter])
exec .venv/bin/pytest "$@"
