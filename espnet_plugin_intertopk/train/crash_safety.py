"""Crash-safe checkpoints for ESPnet's trainer, without editing ESPnet.

``Trainer.run`` saves ``checkpoint.pth`` and ``<N>epoch.pth`` with ``torch.save`` in
place and replaces the ``latest.pth`` / ``<phase>.<key>.best.pth`` / averaged-model
links by removing them and creating them again: a kill (a preempted job) in between
leaves a truncated checkpoint that no resume can read, or no link at all. For the
duration of ``run`` (``crash_safe_saving``):

* every ``torch.save`` to a path writes a temporary file in the same directory,
  fsyncs it and renames it into place (``safe_io.atomic``), so a path holds either
  the previous complete file or the new complete one;
* a ``.pth`` link in the output directory is replaced by one rename (the removal
  ESPnet does first is skipped), so it never goes missing.

What a kill can still leave is a checkpoint that is newer than the files ESPnet
writes after it (``<N>epoch.pth`` and the links); ``repair_run_dir`` rebuilds those
from the checkpoint before a resumed run starts, so ``--resume true`` always continues
from the last complete epoch with every file a later stage reads in place.
"""

import contextlib
import logging
import os
import pathlib
from pathlib import Path
from typing import Iterator, Sequence, Tuple

import torch
from espnet2.train.reporter import Reporter

from espnet_plugin_intertopk.safe_io import atomic


def _is_model_link(path: Path, output_dir: Path) -> bool:
    return path.suffix == ".pth" and path.parent.resolve() == output_dir


@contextlib.contextmanager
def crash_safe_saving(output_dir: os.PathLike) -> Iterator[None]:
    """Make ``torch.save`` to a path and the replacement of the model links in
    ``output_dir`` atomic while the block runs (ESPnet's ``Trainer.run``)."""
    output_dir = Path(output_dir).resolve()
    save, unlink, symlink_to = torch.save, pathlib.Path.unlink, pathlib.Path.symlink_to

    def atomic_save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return save(obj, f, *args, **kwargs)
        with atomic.atomic_open(f, "wb") as out:
            save(obj, out, *args, **kwargs)

    def deferred_unlink(self, *args, **kwargs):
        # ESPnet removes a link right before creating it again: keep the old one
        # until the new one replaces it.
        if self.is_symlink() and _is_model_link(self, output_dir):
            return None
        return unlink(self, *args, **kwargs)

    def atomic_symlink_to(self, target, *args, **kwargs):
        if _is_model_link(self, output_dir):
            return atomic.symlink(target, self)
        return symlink_to(self, target, *args, **kwargs)

    torch.save = atomic_save
    pathlib.Path.unlink = deferred_unlink
    pathlib.Path.symlink_to = atomic_symlink_to
    try:
        yield
    finally:
        torch.save = save
        pathlib.Path.unlink = unlink
        pathlib.Path.symlink_to = symlink_to


def repair_run_dir(
    output_dir: os.PathLike, best_model_criterion: Sequence[Tuple[str, str, str]]
) -> None:
    """Bring the files ESPnet writes after ``checkpoint.pth`` in line with it.

    A kill after the checkpoint was saved can leave ``<N>epoch.pth`` of its last
    epoch missing and the links of that epoch not updated; ESPnet would resume
    after epoch N and never write them. ``<N>epoch.pth`` is the checkpoint's model
    state (ESPnet saves the same dict to both); the links follow the reporter's
    history. Temporary files of interrupted writes are removed.
    """
    output_dir = Path(output_dir)
    for leftover in output_dir.glob(atomic.TEMP_PREFIX + "*"):
        leftover.unlink()
    checkpoint_path = output_dir / "checkpoint.pth"
    if not checkpoint_path.exists():
        return
    # mmap: the tensors are read only if the epoch file has to be rewritten.
    checkpoint = torch.load(
        checkpoint_path, map_location="cpu", mmap=True, weights_only=False
    )
    reporter = Reporter()
    reporter.load_state_dict(checkpoint["reporter"])
    last = reporter.get_epoch()
    if last < 1:
        return
    epoch_file = output_dir / f"{last}epoch.pth"
    if not epoch_file.exists():
        logging.warning(f"{epoch_file} is missing (interrupted run): rewriting it")
        atomic.save_torch(checkpoint["model"], epoch_file)
    atomic.symlink(epoch_file.name, output_dir / "latest.pth")
    for phase, key, mode in best_model_criterion:
        if not reporter.has(phase, key):
            continue
        best = output_dir / f"{reporter.get_best_epoch(phase, key, mode)}epoch.pth"
        if best.exists():
            atomic.symlink(best.name, output_dir / f"{phase}.{key}.best.pth")
