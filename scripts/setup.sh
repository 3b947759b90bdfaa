#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment .venv with the pinned working set
# (constraints.txt) and the package installed in editable mode with its test extras.
# Re-running is cheap: nothing is installed when pyproject.toml and constraints.txt are
# unchanged since the last successful install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
python="${PYTHON:-python3.11}"
command -v "${python}" >/dev/null 2>&1 || python=python3

stamp=.venv/.installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ]; then
    exit 0
fi
rm -f "${stamp}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $(${python} --version)"
    "${python}" -m venv .venv
fi
echo "setup: installing the pinned environment (first time: a few minutes, ~5 GB)"
# pip 23.2.1 (what Python 3.11.7 ships) is known to resolve espnet 202511; newer pips
# refuse one of its optional dependencies (ci_sdr -> padertorch from a git URL).
pip_install() {
    # pip's output without one harmless warning; pipefail keeps pip's exit status.
    .venv/bin/python -m pip install --quiet --progress-bar off "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
if ! pip_install "pip==23.2.1" || ! pip_install -c constraints.txt -e '.[test]'; then
    echo "setup: pip install failed (its message is above); .venv is not marked ready" >&2
    exit 1
fi
if ! check="$(.venv/bin/python -c "import espnet_plugin_intertopk" 2>&1)"; then
    echo "${check}" >&2
    echo "setup: the environment does not import (see above); .venv is not marked ready" >&2
    exit 1
fi
echo "${want}" > "${stamp}"
echo "setup: done"
