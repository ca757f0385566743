#!/usr/bin/env bash
# Regenerate requirements/<service>.lock: every third-party package a service image installs, pinned with hashes,
# for Linux x86-64 / arm64 on Python 3.11 (the Dockerfiles' base). The camfleet packages themselves are left out:
# the images install them from this checkout. Needs uv (pip install uv==0.13.8) and the package index.
#   bash scripts/lock.sh            then commit requirements/*.lock
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
command -v "$UV" >/dev/null || { echo "[lock] uv not found (pip install uv==0.13.8, or set UV=/path/to/uv)" >&2; exit 1; }

declare -A SOURCES=([hub]=hub [agent]=edge-agent [trainer]=trainer)
for service in hub agent trainer; do
    printf './contract\n./%s\n' "${SOURCES[$service]}" >"requirements/$service.in"
    "$UV" pip compile "requirements/$service.in" --quiet --universal --python-version 3.11 --generate-hashes \
        --no-emit-package camfleet-contract --no-emit-package "camfleet-${service}" \
        --custom-compile-command "bash scripts/lock.sh" --output-file "requirements/$service.lock"
    echo "[lock] requirements/$service.lock: $(grep -c '==' "requirements/$service.lock") packages"
done
