#!/usr/bin/env sh
# Creates ./.venv with a Python >= 3.12 and installs ilijax into it with its test extra.
# Usage: sh scripts/bootstrap.sh [--fresh]     (--fresh deletes an existing .venv first)
set -eu
cd "$(dirname "$0")/.."

ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }

find_python() {
  for c in "${PYTHON:-}" python3.13 python3.12 python3 python; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && ok "$c" && { command -v "$c"; return 0; }
  done
  # pyenv installs that are not on PATH
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for v in $(ls -1 "$root/versions" 2>/dev/null | sort -rV); do
    p="$root/versions/$v/bin/python"
    [ -x "$p" ] && ok "$p" && { echo "$p"; return 0; }
  done
  return 1
}

if [ "${1:-}" = "--fresh" ]; then rm -rf .venv; fi
if [ ! -x .venv/bin/python ] || ! ok .venv/bin/python; then
  py=$(find_python) || { echo "ilijax needs Python >= 3.12; none found (set PYTHON=/path/to/python)" >&2; exit 1; }
  echo "using $py ($("$py" --version 2>&1))"
  rm -rf .venv
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
