"""The cleaning tool's output directory: a run's outputs replace an earlier run's as a
set, never one by one.

A run builds everything in a fresh directory inside the output directory (carrying the
tool's marker); only when the set is complete are the earlier run's outputs moved
aside (all of them, first) and the new ones moved in (``summary.json`` last), so that
outputs of two runs never stand side by side: a run without ``collapsed/`` leaves no
older ``collapsed/``, and a run that fails or is killed before the swap leaves the
earlier outputs as they were. What lies aside and the build directories of killed runs
are removed only when the tool's marker is in them. Files in the output directory
that are not the tool's outputs (logs, shape files of a recipe) are left alone.
"""

import os
import tempfile
from pathlib import Path

from espnet_plugin_intertopk.safe_io import atomic, ownership

TOOL = "spk_subcenter_clean"
# Everything a run may write, in the order it is moved into place.
OUTPUTS = ("report.tsv", "images", "data", "collapsed", "summary.json")
BUILD_PREFIX = ".tmp-build-"
ASIDE_PREFIX = ".tmp-aside-"


def _marked_dir(parent: Path, prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    return ownership.claim_dir(directory, TOOL, "a scratch directory")


def _remove_leftovers(output_dir: Path) -> None:
    """Build and aside directories of killed runs, when the marker proves them ours."""
    for entry in output_dir.iterdir():
        if entry.name.startswith((BUILD_PREFIX, ASIDE_PREFIX)) and entry.is_dir():
            if ownership.made_by(entry) == TOOL:
                ownership.remove_owned(entry, TOOL)


def start(output_dir: Path) -> Path:
    """Claim ``output_dir`` for the tool (a new or empty directory, or one it made)
    and return a fresh directory inside it to build a run's outputs in."""
    ownership.claim_dir(output_dir, TOOL, "--output_dir")
    _remove_leftovers(output_dir)
    return _marked_dir(output_dir, BUILD_PREFIX)


def swap_in(build: Path, output_dir: Path) -> None:
    """Replace the earlier run's outputs in ``output_dir`` with those in ``build``."""
    aside = _marked_dir(output_dir, ASIDE_PREFIX)
    for name in OUTPUTS:
        if os.path.lexists(output_dir / name):
            os.replace(output_dir / name, aside / name)
    atomic.fsync_dir(output_dir)
    for name in OUTPUTS:
        if os.path.lexists(build / name):
            os.replace(build / name, output_dir / name)
    atomic.fsync_dir(output_dir)
    ownership.remove_owned(aside, TOOL)
    discard(build)


def discard(build: Path) -> None:
    """Remove a build directory (nothing when it is already gone)."""
    ownership.remove_owned(build, TOOL)
