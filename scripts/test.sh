#!/usr/bin/env bash
# The test command (`make test`, `.ci/run`): install what the tests need, lint, then run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/hub -x
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/services.sh
bash scripts/lint.sh

export PYTHONDONTWRITEBYTECODE=1
echo "[test] python -m pytest $*"
exec "${CAMFLEET_VENV:-.venv}"/bin/python -m pytest -q -p no:cacheprovider "$@"
