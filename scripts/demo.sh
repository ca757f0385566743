#!/usr/bin/env bash
# The first README command: install into .venv (PyPI only, no root) and run the all-in-one demo.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
exec "${CAMFLEET_VENV:-.venv}"/bin/python -m camfleet_hub demo "$@"
