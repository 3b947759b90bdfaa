"""Output directories a tool may reuse or remove only when it made them.

A tool that creates an output directory first writes a marker file into it naming the
tool. Later runs may empty or remove a directory only when that marker is there; a
non-empty directory without it belongs to the user and is refused. Outputs are also
refused when they are, contain or lie inside one of the tool's inputs.
"""

import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, Optional

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError

MARKER = ".made_by_espnet_plugin_intertopk"


def _resolved(path: os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def check_apart(output: os.PathLike, inputs: Iterable[os.PathLike], what: str) -> None:
    """Refuse ``output`` when it is, contains or lies inside one of ``inputs``.

    Args:
        output: a file or directory the tool will write.
        inputs: files or directories the tool reads.
        what: the option that names ``output``, for the message.
    """
    out = _resolved(output)
    for given in inputs:
        inp = _resolved(given)
        if out == inp or inp in out.parents or out in inp.parents:
            raise UserError(
                f"{what} {output} overlaps the input {given}: a tool never writes "
                "into its inputs; give an output path outside them",
                status=2,
            )


def check_output_files(outputs: Dict[str, Optional[Path]]) -> None:
    """Refuse (UserError, status 2) an output file given on the command line that is a
    directory, whose directory does not exist, or that another output option names
    too (``outputs``: option -> path, None when not given)."""
    given = [(option, path) for option, path in outputs.items() if path is not None]
    for option, path in given:
        if path.is_dir():
            raise UserError(f"{option} {path} is a directory", status=2)
        if not path.parent.is_dir():
            raise UserError(
                f"{option} {path}: directory {path.parent} does not exist", status=2
            )
    for i, (option, path) in enumerate(given):
        for other, earlier in given[:i]:
            if path.resolve() == earlier.resolve():
                raise UserError(
                    f"{option} {path} is the {other} file: give another path",
                    status=2,
                )


def made_by(directory: os.PathLike) -> Optional[str]:
    """The tool named by ``directory``'s marker, or None when there is none."""
    marker = Path(directory) / MARKER
    if not marker.is_file():
        return None
    return marker.read_text().strip() or None


def claim_dir(directory: os.PathLike, tool: str, what: str) -> Path:
    """Create ``directory`` for ``tool`` (with its marker), or accept it when it is
    empty or was made by ``tool``; refuse a non-empty directory the user made.

    Args:
        directory: the output directory.
        tool: the tool's name, stored in the marker.
        what: the option that names ``directory``, for the message.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{what} {directory} is a file, not a directory", status=2)
    owner = made_by(directory) if directory.is_dir() else None
    if directory.is_dir() and owner is None and any(directory.iterdir()):
        raise UserError(
            f"{what} {directory} exists and was not made by {tool} (no {MARKER} in "
            "it): it is left untouched; give a new or empty directory",
            status=2,
        )
    if owner is not None and owner != tool:
        raise UserError(
            f"{what} {directory} was made by {owner}, not {tool}: give another "
            "directory",
            status=2,
        )
    directory.mkdir(parents=True, exist_ok=True)
    if owner is None:
        atomic.write_text(directory / MARKER, tool + "\n")
    return directory


def remove_owned(directory: os.PathLike, tool: str) -> None:
    """Remove ``directory`` if ``tool``'s marker proves it made it; a missing
    directory is fine; anything else is refused."""
    directory = Path(directory)
    if not directory.exists():
        return
    if made_by(directory) != tool:
        raise UserError(
            f"{directory} was not made by {tool} (no {MARKER} naming it): it is "
            "left untouched; move it away or give another path",
            status=2,
        )
    shutil.rmtree(directory)
