#!/usr/bin/env bash
# The test command (`make test`, `.ci/run`): install what the tests need, lint, then run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/hub -x
# A lint failure fails the run, but pytest still runs so one CI log shows both.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CAMFLEET_VENV:-.venv}

bash scripts/setup.sh
bash scripts/services.sh

lint_rc=0
bash scripts/lint.sh || lint_rc=$?

export PYTHONDONTWRITEBYTECODE=1
echo "[test] python -m pytest $*"
test_rc=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || test_rc=$?

if ((lint_rc != 0)); then
    echo "[test] FAILED: ruff found problems (see above)" >&2
fi
if ((test_rc == 5)); then
    echo "[test] FAILED: pytest collected no tests" >&2
fi
((lint_rc == 0 && test_rc == 0))
