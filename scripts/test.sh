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
# Two pytest-xdist workers, each taking whole files (module fixtures start once): much of the suite waits on the
# processes it starts, so two workers finish in ~0.7 of one's time even on 2 cores. CAMFLEET_TEST_WORKERS=0 runs
# in one process. The slowest tests are listed at the end, so a CI log shows where the time goes.
WORKERS=${CAMFLEET_TEST_WORKERS:-2}
echo "[test] python -m pytest -n $WORKERS $*"
test_rc=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist loadfile --durations=25 "$@" || test_rc=$?

if ((lint_rc != 0)); then
    echo "[test] FAILED: ruff found problems (see above)" >&2
fi
if ((test_rc == 5)); then
    echo "[test] FAILED: pytest collected no tests" >&2
fi
((lint_rc == 0 && test_rc == 0))
