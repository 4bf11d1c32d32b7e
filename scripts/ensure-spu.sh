#!/usr/bin/env bash
# Create .venv-spu: SecretFlow SPU 0.9.5 for Private FLAME's dealer-free option (correlations: cheetah).
# SPU pins numpy<2 and jax<=0.4.34 and has wheels only for Python < 3.12, so it gets its own virtualenv.
#   bash scripts/ensure-spu.sh [--optional]
# With --optional (what `make test` uses) a machine without a suitable Python or without PyPI gets a warning
# instead of a failure; the cheetah tests then skip, naming `make spu`.
set -uo pipefail
cd "$(dirname "$0")/.."
optional=0; [ "${1:-}" = "--optional" ] && optional=1
VENV=.venv-spu; STAMP=$VENV/.fedshield-spu-installed
[ -f "$STAMP" ] && exit 0
fail() {
  echo "make spu: $1" >&2
  if [ $optional = 1 ]; then echo "make spu: skipped; the dealer-free Private FLAME tests will be skipped" >&2; exit 0; fi
  exit 1
}
py="${PYTHON_SPU:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3.10 python3.9; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import venv' >/dev/null 2>&1; then py=$cand; break; fi
  done
fi
[ -n "$py" ] || fail "no Python 3.9-3.11 found (SPU 0.9.5 has no wheels for newer Pythons); set PYTHON_SPU=/path/to/python3.11"
command -v "$py" >/dev/null 2>&1 || fail "$py not found; set PYTHON_SPU=/path/to/python3.11"
"$py" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] < (3, 12) else 1)' \
  || fail "$py is not Python 3.9-3.11; set PYTHON_SPU=/path/to/python3.11"
rm -rf "$VENV"
"$py" -m venv "$VENV" || fail "$py -m venv $VENV failed"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "spu==0.9.5" "numpy<2" "jax<=0.4.34" \
  "jaxlib<=0.4.34" "cryptography>=41" || { rm -rf "$VENV"; fail "pip could not install spu==0.9.5 into $VENV"; }
touch "$STAMP"
