#!/usr/bin/env bash
# The project's main job: set up .venv if needed, then run the recipe egs/synth/spk1
# end to end (arguments go to its run.sh) and print the results table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "${root}/scripts/setup.sh"
cd "${root}/egs/synth/spk1"
./run.sh --python "${root}/.venv/bin/python" "$@"
