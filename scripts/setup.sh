#!/usr/bin/env bash
# Create .venv and install torch (CPU build unless one is already there), the four camfleet packages (editable) and the test tools.
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

pip_install --upgrade pip
# torch first, pinned, from where scripts/torch_choice.py says: what is installed, what pip is configured to give
# (a local wheel, a mirror), or PyTorch's CPU index when the plain index would give the multi-GB CUDA build.
CHOICE=$("$PY" scripts/torch_choice.py "$TORCH_SPEC") || die "could not decide where to take $TORCH_SPEC from (see above)"
read -r TORCH_SOURCE TORCH_ARGS <<<"$CHOICE"
# shellcheck disable=SC2206  # the index arguments are words
TORCH_ARGS=(${TORCH_ARGS:-})
if [[ "$TORCH_SOURCE" != installed ]]; then
    say "installing $TORCH_SPEC ($TORCH_SOURCE${TORCH_ARGS[*]:+: ${TORCH_ARGS[*]}})"
    pip_install "${TORCH_ARGS[@]}" "$TORCH_SPEC"
fi
# torchvision from the same place, so its build matches torch's
pip_install "${TORCH_ARGS[@]}" "$TORCHVISION_SPEC"

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

# A CUDA build runs camfleet as well as a CPU one: only a missing or replaced torch version stops the setup.
"$PY" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '${TORCH_SPEC#torch==}')" \
    || die "torch is no longer ${TORCH_SPEC#torch==}: a dependency replaced it; pin it or drop that dependency"
"$PY" -c "import torch; print(f'[setup] torch {torch.__version__} (cuda: {torch.version.cuda})')"

echo "$KEY" >"$STAMP"
say "done ($VENV)"
