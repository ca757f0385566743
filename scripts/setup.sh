#!/usr/bin/env bash
# Create .venv and install torch (CPU), the four camfleet packages (editable) and the test tools.
# Needs only Python >= 3.11 and PyPI; no root. Quick when nothing changed (stamp keyed on the inputs).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CAMFLEET_VENV:-.venv}
PYTHON=${PYTHON:-python3}
PACKAGES=(contract hub edge-agent trainer)
TORCH_SPEC="torch==2.13.0"
TORCHVISION_SPEC="torchvision==0.28.*"
STAMP="$VENV/.camfleet-setup-stamp"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" --version 2>&1); camfleet needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"

# Everything that changes what gets installed goes into the stamp key.
stamp_key() {
    {
        "$PYTHON" --version 2>&1
        echo "$TORCH_SPEC $TORCHVISION_SPEC"
        sha256sum scripts/setup.sh requirements-dev.txt
        for pkg in "${PACKAGES[@]}"; do
            if [[ -f "$pkg/pyproject.toml" ]]; then sha256sum "$pkg/pyproject.toml"; else echo "missing $pkg"; fi
        done
    } | sha256sum | cut -d' ' -f1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtualenv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"

KEY=$(stamp_key)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]]; then
    say "virtualenv up to date ($VENV)"
    exit 0
fi

pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check --progress-bar off "$@"; }

torch_is_cpu() {
    "$PY" - <<'PY' 2>/dev/null
import sys
import torch
ok = torch.__version__.startswith("2.13.0") and torch.version.cuda is None
print(f"[setup] torch {torch.__version__} (cuda: {torch.version.cuda})")
sys.exit(0 if ok else 1)
PY
}

pip_install --upgrade pip
# torch first, pinned: pip takes the local CPU wheel; a plain "torch" would pull several GB of CUDA packages.
if ! torch_is_cpu; then
    say "installing $TORCH_SPEC (CPU build)"
    pip_install "$TORCH_SPEC"
fi
pip_install "$TORCHVISION_SPEC"

EDITABLE=()
for pkg in "${PACKAGES[@]}"; do
    if [[ -f "$pkg/pyproject.toml" ]]; then
        EDITABLE+=(-e "./$pkg")
    else
        say "skipping $pkg: $pkg/pyproject.toml does not exist yet"
    fi
done
say "installing ${EDITABLE[*]:-no packages} and the test tools"
pip_install "${EDITABLE[@]}" -r requirements-dev.txt

torch_is_cpu || die "torch is no longer the 2.13.0 CPU build: a dependency replaced it; pin it or drop that dependency"

echo "$KEY" >"$STAMP"
say "done ($VENV)"
