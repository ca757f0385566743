#!/usr/bin/env bash
# ruff over every source folder that exists, then mypy over each package (CAMFLEET_MYPY=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

DIRS=()
for dir in contract hub edge-agent trainer tests bench scripts; do
    [[ -d "$dir" ]] && DIRS+=("$dir")
done
echo "[lint] ruff check ${DIRS[*]}"
"${CAMFLEET_VENV:-.venv}"/bin/ruff check "${DIRS[@]}"

if [[ "${CAMFLEET_MYPY:-1}" == 1 ]]; then
    for pkg in contract hub edge-agent trainer; do
        [[ -d "$pkg/src" ]] || continue
        echo "[lint] mypy $pkg/src"
        "${CAMFLEET_VENV:-.venv}"/bin/mypy --config-file "$pkg/pyproject.toml" "$pkg/src"
    done
fi
