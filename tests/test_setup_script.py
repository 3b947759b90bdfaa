"""scripts/setup.sh against a stand-in interpreter: a failing pip install or import
stops it with the message and leaves .venv unmarked; success writes the stamp once."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in for .venv/bin/python: pip and import behave as $FAKE_MODE says.
case "$*" in
  *"pip install"*"-c constraints.txt"*)
    if [ "$FAKE_MODE" = pip_fails ]; then
      echo "ERROR: ResolutionImpossible: conflicting pins" >&2; exit 1
    fi
    echo "installed" ;;
  *"pip install"*) ;;
  *"-c import espnet_plugin_intertopk"*)
    if [ "$FAKE_MODE" = import_fails ]; then
      echo "ModuleNotFoundError: No module named 'espnet2'" >&2; exit 1
    fi ;;
esac
"""


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def setup(project: Path, mode: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKE_MODE=mode)
    return subprocess.run(
        ["bash", str(project / "scripts" / "setup.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    "mode, message",
    [("pip_fails", "ResolutionImpossible"), ("import_fails", "No module named")],
)
def test_failure_stops_with_the_message_and_writes_no_stamp(project, mode, message):
    proc = setup(project, mode)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "not marked ready" in proc.stderr
    assert "setup: done" not in proc.stdout
    assert not (project / ".venv" / ".installed").exists()


def test_success_writes_the_stamp_and_a_rerun_installs_nothing(project):
    first = setup(project, "ok")
    assert first.returncode == 0 and "setup: done" in first.stdout
    assert (project / ".venv" / ".installed").exists()
    again = setup(project, "ok")
    assert again.returncode == 0 and again.stdout == ""
    # A failed install after a change removes the old mark.
    with open(project / "constraints.txt", "a") as f:
        f.write("numpy==0.0\n")
    assert setup(project, "pip_fails").returncode != 0
    assert not (project / ".venv" / ".installed").exists()
