#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then runs pytest, one worker per CPU core
# (pytest-xdist; a test file's tests stay in one worker, so the ESPnet runs a file
# shares are made once). Extra arguments go to pytest (-n 0: no workers).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "${root}/scripts/setup.sh"
cd "${root}"
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
