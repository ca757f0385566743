#!/usr/bin/env bash
# Run the benchmarks in bench/ (they print their figures; docs/BENCHMARKS.md records them).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/services.sh
shopt -s nullglob
BENCHES=(bench/*.py)
((${#BENCHES[@]})) || { echo "[bench] no benchmarks in bench/"; exit 0; }
for bench in "${BENCHES[@]}"; do
    [[ "$(basename "$bench")" == _* ]] && continue
    echo "[bench] $bench"
    "${CAMFLEET_VENV:-.venv}"/bin/python "$bench"
done
