"""Output directories a tool may replace or remove only when it provably made them.

A tool that creates an output directory first writes a marker file into it naming the
tool and the directory's own device and inode. The marker proves ownership only when
it is a plain file in a directory that is no symbolic link and whose device and inode
are the ones it names: a copy (``cp -a``) of a tool's directory, a marker copied into a
user's directory, or a link to a tool's directory proves nothing; a rename keeps the
proof. A ``.done`` or any other file proves nothing either.

A tool never removes the output it replaces: ``replace_dir`` renames it aside
(``.<name>.old-<k>`` beside it, one rename), keeps the ``KEEP_ASIDE`` newest such
copies and removes older ones only when their marker proves them the tool's (logged).
Removal deletes the marker last, so a removal killed half-way is still provably the
tool's and is finished by the next run. Outputs are also refused when they are,
contain or lie inside one of the tool's inputs.

Command line, for the shell recipe and for adopting a directory marked by an earlier
version (whose marker named the tool only):
``python -m espnet_plugin_intertopk.safe_io.ownership claim|remove|adopt DIR TOOL``.
"""

import argparse
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly

MARKER = ".made_by_espnet_plugin_intertopk"
# Replaced outputs kept aside per output path; older ones are removed.
KEEP_ASIDE = 2
# A marker write killed half-way leaves this temporary file: the directory still
# counts as empty (it is left in place: a name proves nothing).
_MARKER_TEMP = atomic.TEMP_PREFIX + MARKER


def _resolved(path: os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _both_ways(path: os.PathLike) -> List[Path]:
    """``path`` resolved, and, when it is a link, the link itself (its directory
    resolved): replacing the link would change the user's tree too."""
    path = Path(path).expanduser()
    return [_resolved(path), _resolved(path.parent) / path.name]


def check_apart(
    output: os.PathLike,
    inputs: Union[Iterable[os.PathLike], Dict[str, os.PathLike]],
    what: str,
) -> None:
    """Refuse ``output`` when it is, contains or lies inside one of ``inputs``
    (compared after resolving ``..`` and links).

    Args:
        output: a file or directory the tool will write.
        inputs: files or directories the tool reads (any number: a set lookup per
            path component, not a comparison per input), or a mapping from how the
            message names each (e.g. its option) to it.
        what: the option that names ``output``, for the message.
    """
    if not isinstance(inputs, dict):
        inputs = {str(path): path for path in inputs}
    given_as: Dict[Path, str] = {}  # each input -> its name
    covering: Dict[Path, str] = {}  # each input and its ancestors -> an input's name
    for name, given in inputs.items():
        for inp in _both_ways(given):
            given_as.setdefault(inp, name)
            for path in (inp, *inp.parents):
                covering.setdefault(path, name)
    for out in _both_ways(output):
        hit = covering.get(out)  # out is an input or contains one
        if hit is None:  # out lies inside an input
            hit = next((given_as[p] for p in out.parents if p in given_as), None)
        if hit is not None:
            raise UserError(
                f"{what} {output} overlaps the input {hit}: a tool never writes "
                "into its inputs; give an output path outside them",
                status=2,
            )


def check_outputs_apart(outputs: Dict[str, os.PathLike]) -> None:
    """Refuse two outputs (option -> path) where one is, contains or lies inside the
    other."""
    named = [(what, path) for what, path in outputs.items() if path]
    for i, (what, path) in enumerate(named):
        for other, earlier in named[:i]:
            a, b = _resolved(path), _resolved(earlier)
            if a == b or a in b.parents or b in a.parents:
                raise UserError(
                    f"{what} {path} overlaps {other} {earlier}: give separate paths",
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


def _identity(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def _marker(directory: Path) -> Tuple[List[str], Optional[os.stat_result]]:
    """The words of ``directory``'s marker (a plain file, read without following a
    link) and the directory's own stat; ([], None) without one."""
    try:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode):
            return [], None
        fd = os.open(directory / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return [], None
            return f.read(4096).decode("utf-8").split(), st
    except (OSError, UnicodeDecodeError):
        return [], None


def made_by(directory: os.PathLike) -> Optional[str]:
    """The tool whose marker proves it made ``directory``, or None (no marker, a
    forged or copied one, a link)."""
    words, st = _marker(Path(directory))
    if len(words) != 2 or words[1] != _identity(st):
        return None
    return words[0]


def _names_tool(directory: Path, tool: str) -> bool:
    """Whether ``directory`` has a marker naming ``tool`` that does not prove it: one
    of an earlier version (the name alone), or one bound to other numbers (copied,
    or the file system was moved or remounted)."""
    words = _marker(directory)[0]
    return bool(words) and words[0] == tool and made_by(directory) is None


def adopt(directory: os.PathLike, tool: str) -> None:
    """Bind a marker naming ``tool`` that does not prove it (see ``_names_tool``) to
    ``directory``: only on the user's word that it is the tool's output."""
    directory = Path(directory)
    if made_by(directory) == tool:
        return
    if not _names_tool(directory, tool):
        raise UserError(
            f"{directory} has no marker naming {tool}: nothing to adopt", status=2
        )
    _mark(directory, tool)


def _mark(directory: Path, tool: str) -> None:
    atomic.write_text(directory / MARKER, f"{tool} {_identity(os.lstat(directory))}\n")


def _usable(directory: Path, tool: str, what: str) -> Optional[str]:
    """Refuse ``directory`` unless it is missing, an empty directory or one ``tool``
    provably made; return its owner (None: missing or empty)."""
    if directory.is_symlink():
        raise UserError(
            f"{what} {directory} is a symbolic link: it is left untouched; give the "
            "directory itself or a new path",
            status=2,
        )
    if not os.path.lexists(directory):
        # Refused now, not half-way through a run: a file where a directory above
        # it would have to be made.
        above = next(p for p in directory.absolute().parents if os.path.lexists(p))
        if not above.is_dir():
            raise UserError(
                f"{what} {directory}: {above} is a file, not a directory", status=2
            )
        return None
    if not directory.is_dir():
        raise UserError(f"{what} {directory} is a file, not a directory", status=2)
    owner = made_by(directory)
    if owner is None and any(
        not e.name.startswith(_MARKER_TEMP) for e in directory.iterdir()
    ):
        if _names_tool(directory, tool):
            raise UserError(
                f"{what} {directory} was not made by {tool} as far as its marker "
                "proves (it names the tool, but it is an earlier version's, a copy's, "
                "or one from before the directory moved to another file system): it "
                "is left untouched; if it is "
                f"{tool}'s output, run 'python -m espnet_plugin_intertopk.safe_io."
                f"ownership adopt {directory} {tool}', or give a new directory",
                status=2,
            )
        raise UserError(
            f"{what} {directory} exists and was not made by {tool} (no valid {MARKER} "
            "in it: a copied or linked marker proves nothing): it is left untouched; "
            "give a new or empty directory",
            status=2,
        )
    if owner is not None and owner != tool:
        raise UserError(
            f"{what} {directory} was made by {owner}, not {tool}: give another "
            "directory",
            status=2,
        )
    return owner


def check_replaceable(directory: os.PathLike, tool: str, what: str) -> None:
    """Refuse, changing nothing, what ``claim_dir`` or ``replace_dir`` would refuse."""
    _usable(Path(directory), tool, what)


def claim_dir(directory: os.PathLike, tool: str, what: str) -> Path:
    """Create ``directory`` for ``tool`` (with its marker), or accept it when it is
    empty or provably made by ``tool``; refuse anything else (a user's directory, a
    link, a file).

    Args:
        directory: the output directory.
        tool: the tool's name, stored in the marker.
        what: the option that names ``directory``, for the message.
    """
    directory = Path(directory)
    owner = _usable(directory, tool, what)
    directory.mkdir(parents=True, exist_ok=True)
    if owner is None:
        _mark(directory, tool)
    return directory


def _aside_copies(directory: Path) -> List[Path]:
    """The copies of ``directory`` renamed aside, oldest first."""
    pattern = re.compile(re.escape(f".{directory.name}.old-") + r"(\d+)$")
    found = []
    for entry in directory.parent.iterdir() if directory.parent.is_dir() else []:
        match = pattern.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return [entry for _, entry in sorted(found)]


def replace_dir(directory: os.PathLike, tool: str, what: str) -> Path:
    """A fresh, empty, marked ``directory`` for ``tool``: an earlier one the tool made
    is renamed aside (never removed; see the module's docstring), anything not
    provably the tool's is refused."""
    directory = Path(directory)
    owner = _usable(directory, tool, what)
    if owner is not None:
        copies = _aside_copies(directory)
        last = int(copies[-1].name.rsplit("-", 1)[1]) if copies else 0
        aside = directory.parent / f".{directory.name}.old-{last + 1}"
        os.rename(directory, aside)
        atomic.fsync_dir(directory.parent)
        print(f"{tool}: kept the earlier {directory} as {aside}")
        for old in (copies + [aside])[:-KEEP_ASIDE]:
            if made_by(old) == tool:
                _remove_marker_last(old)
                print(f"{tool}: removed {old}, an older copy it made")
    return claim_dir(directory, tool, what)


def _remove_marker_last(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.name == MARKER:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    os.unlink(directory / MARKER)
    os.rmdir(directory)


def remove_owned(directory: os.PathLike, tool: str) -> None:
    """Remove ``directory`` if ``tool``'s marker proves it made it (the marker last:
    a removal killed half-way is still provably the tool's); a missing directory is
    fine; anything else is refused."""
    directory = Path(directory)
    if not os.path.lexists(directory):
        return
    if made_by(directory) != tool:
        raise UserError(
            f"{directory} was not made by {tool} (no valid {MARKER} naming it): it is "
            "left untouched; move it away or give another path",
            status=2,
        )
    _remove_marker_last(directory)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="ownership", description="claim, remove or adopt a tool's output directory"
    )
    parser.add_argument("action", choices=("claim", "remove", "adopt"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("tool", help="the tool's name (also the prefix of an error)")
    args = parser.parse_args(argv)
    if args.action == "claim":
        exits_cleanly(args.tool)(claim_dir)(args.directory, args.tool, args.directory)
    else:
        act = remove_owned if args.action == "remove" else adopt
        exits_cleanly(args.tool)(act)(args.directory, args.tool)


if __name__ == "__main__":
    main()
