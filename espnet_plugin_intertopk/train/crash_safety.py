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
writes after it (``<N>epoch.pth``, the links, the pruning of epoch files outside the
n-best); ``repair_run_dir`` brings those in line with the checkpoint before a resumed
run starts, so ``--resume true`` always continues from the last complete epoch with
every file a later stage reads in place.
"""

import contextlib
import logging
import os
import pathlib
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
from espnet2.train.reporter import Reporter

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError


def _is_model_link(path: Path, output_dir: Path) -> bool:
    return path.suffix == ".pth" and path.parent.resolve() == output_dir


@contextlib.contextmanager
def crash_safe_saving(output_dir: os.PathLike) -> Iterator[None]:
    """Make ``torch.save`` to a path and the replacement of the model links in
    ``output_dir`` atomic while the block runs (ESPnet's ``Trainer.run``)."""
    output_dir = Path(output_dir).resolve()
    save, unlink, symlink_to = torch.save, pathlib.Path.unlink, pathlib.Path.symlink_to

    def atomic_save(obj, f, *args, **kwargs):
        # A file object, or a path to something other than a regular file (a
        # device, a pipe): saved as torch would.
        plain = not isinstance(f, (str, os.PathLike))
        if plain or (os.path.exists(f) and not os.path.isfile(f)):
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


def _same_tensors(path: Path, state: dict) -> bool:
    """Whether ``path`` holds ``state`` (False when it cannot be read)."""
    try:
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # noqa: BLE001 - any reader error: not the same file
        return False
    return (
        isinstance(saved, dict)
        and saved.keys() == state.keys()
        and all(
            not isinstance(v, torch.Tensor) or torch.equal(v, saved[k])
            for k, v in state.items()
        )
    )


def repair_run_dir(
    output_dir: os.PathLike,
    best_model_criterion: Sequence[Tuple[str, str, str]],
    keep_nbest_models: Union[int, Sequence[int]],
) -> Optional[Reporter]:
    """Bring the files ESPnet writes after ``checkpoint.pth`` in line with it; return
    the checkpoint's reporter (None without a checkpoint).

    A kill after the checkpoint was saved can leave ``<N>epoch.pth`` of its last
    epoch missing or stale, the links of that epoch not updated and the epoch files
    that fell out of the n-best not removed; ESPnet would resume after epoch N and
    do none of it. ``<N>epoch.pth`` is the checkpoint's model state (ESPnet saves
    the same dict to both); the links and the pruning follow the reporter's history
    and ESPnet's rules. Temporary files of interrupted writes are removed.
    """
    output_dir = Path(output_dir)
    for leftover in output_dir.glob(atomic.TEMP_PREFIX + "*"):
        if leftover.is_file() or leftover.is_symlink():
            leftover.unlink()
    checkpoint_path = output_dir / "checkpoint.pth"
    if not checkpoint_path.exists():
        return None
    # mmap: the tensors are read only where they are compared or rewritten.
    try:
        checkpoint = torch.load(
            checkpoint_path, map_location="cpu", mmap=True, weights_only=False
        )
        reporter = Reporter()
        reporter.load_state_dict(checkpoint["reporter"])
    except Exception as err:  # noqa: BLE001 - any reader error: unusable
        # Only a file not written by the plugin's atomic saving can be truncated.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{checkpoint_path}: cannot resume from it: it is truncated or damaged "
            f"({reason}); restore it, or move it away to train from epoch 1"
        ) from err
    last = reporter.get_epoch()
    if last < 1:
        return reporter
    epoch_file = output_dir / f"{last}epoch.pth"
    if not _same_tensors(epoch_file, checkpoint["model"]):
        logging.warning(f"{epoch_file} is missing or stale (a killed run): rewriting")
        atomic.save_torch(checkpoint["model"], epoch_file)
    atomic.symlink(epoch_file.name, output_dir / "latest.pth")
    criteria = [c for c in best_model_criterion if reporter.has(c[0], c[1])]
    for phase, key, mode in criteria:
        best = output_dir / f"{reporter.get_best_epoch(phase, key, mode)}epoch.pth"
        if best.exists():
            atomic.symlink(best.name, output_dir / f"{phase}.{key}.best.pth")
    if isinstance(keep_nbest_models, int):
        keep_nbest_models = [keep_nbest_models]
    keep = max(keep_nbest_models, default=1)
    nbest = set().union(*(set(reporter.sort_epochs(*c)[:keep]) for c in criteria))
    for epoch in range(1, last):
        stale = output_dir / f"{epoch}epoch.pth"
        if epoch not in nbest and stale.is_file():
            stale.unlink()
    return reporter


@contextlib.contextmanager
def atomic_config(output_dir: Optional[os.PathLike]) -> Iterator[None]:
    """Make ESPnet's ``(output_dir / "config.yaml").open("w")`` (in ``main_worker``;
    later stages and plain ESPnet read the model's settings from it) an atomic write
    while the block runs. Without an output directory (``--print_config``) nothing
    changes."""
    if output_dir is None:
        yield
        return
    config = (Path(output_dir) / "config.yaml").resolve()
    open_ = pathlib.Path.open

    def open_atomically(self, mode="r", *args, **kwargs):
        if mode == "w" and self.resolve() == config:
            return atomic.atomic_open(self, "w", **kwargs)
        return open_(self, mode, *args, **kwargs)

    pathlib.Path.open = open_atomically
    try:
        yield
    finally:
        pathlib.Path.open = open_
