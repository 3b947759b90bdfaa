"""Atomic file writes: a reader (a later stage, a resume) sees either the old file or
the complete new one, never a truncated one, even when the writer is killed.

Each write goes to a temporary file in the destination's directory (so the rename
never crosses file systems), is flushed and fsynced, renamed over the destination, and
the directory is fsynced so that the rename itself survives a power loss.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, os.PathLike]

# Temporary files start with this; a tool may remove leftovers of a killed write.
TEMP_PREFIX = ".tmp-"


def fsync_dir(directory: PathLike) -> None:
    """Make a rename or link in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    ``mode`` is "w" or "wb"; ``kwargs`` go to ``open``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    # Through a link: the file it points to is replaced, the link stays.
    path = Path(os.path.realpath(path))
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=TEMP_PREFIX + path.name + ".", dir=path.parent
        )
    except OSError as err:  # name the file asked for, not the temporary one
        raise type(err)(err.errno, err.strerror, str(path)) from err
    try:
        # mkstemp creates 0600; give the mode a plain open() would (or keep the
        # replaced file's), so that others can still read models and results.
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_text(path: PathLike, text: str) -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: PathLike, data: bytes) -> None:
    """``Path(path).write_bytes(data)``, atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def copy_file(src: PathLike, dst: PathLike) -> None:
    """``shutil.copyfile(src, dst)``, atomically."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def save_torch(obj, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_npz(path: PathLike, **arrays) -> None:
    """``numpy.savez(path, **arrays)``, atomically (``path`` is used as given)."""
    import numpy as np

    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def symlink(target: PathLike, link: PathLike) -> None:
    """Point ``link`` at ``target``, replacing what ``link`` was in one rename, so the
    link never goes missing (ESPnet removes it, then recreates it)."""
    link = Path(link)
    tmp = link.parent / f"{TEMP_PREFIX}{link.name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
