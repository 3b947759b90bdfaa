"""Refuse to resume a run whose configuration or input lists changed.

ESPnet's ``--resume true`` continues from ``checkpoint.pth`` whatever was asked: a
finished run returns its old results after a change of margin, K or data. Before
training, the plugin's task compares the requested arguments with the ``config.yaml``
the run saved, and the digests of its data lists (wav.scp, utt2spk, trial lists,
shape files, spk2utt) with those it recorded, and stops with the differences.
"""

import argparse
import hashlib
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Set

import yaml
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError

DIGESTS = "input_digests.yaml"
# The arguments as requested, before ESPnet writes config.yaml (in place: a kill
# while it is written leaves it truncated).
REQUESTED = "requested_config.yaml"
# What may change between a run and its resumption: how long it trains, where and how
# it runs and where its directory lies.
MAY_CHANGE = frozenset(
    {
        "config",
        "output_dir",
        "version",
        "resume",
        "dry_run",
        "print_config",
        "max_epoch",
        "ngpu",
        "num_workers",
        "log_level",
        "distributed",
        "multiprocessing_distributed",
        "local_rank",
        "dist_backend",
        "dist_init_method",
        "dist_world_size",
        "dist_rank",
        "dist_master_addr",
        "dist_master_port",
        "dist_launcher",
        # How the plugin's loss computes (kernels, checks), not what.
        "loss_plugin_conf",
        # How validation loads its utterances, not what it computes.
        "valid_unique_utterances",
    }
)


class ChangedRunError(UserError):
    """A resumed run whose settings or inputs differ from the saved ones."""


def _input_files(args: argparse.Namespace) -> List[str]:
    files = [p for p, _, _ in args.train_data_path_and_name_and_type or []]
    files += [p for p, _, _ in args.valid_data_path_and_name_and_type or []]
    files += list(args.train_shape_file or []) + list(args.valid_shape_file or [])
    if getattr(args, "spk2utt", None):
        files.append(args.spk2utt)
    return files


def input_digests(args: argparse.Namespace) -> Dict[str, str]:
    """sha256 of every data list the run reads (the lists, not the audio)."""
    out = {}
    for path in _input_files(args):
        p = Path(path)
        out[str(path)] = (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        )
    return out


def _unused(saved: dict, wanted: dict) -> Set[str]:
    """The ``<name>_conf`` of every class choice that is off in both (ESPnet builds
    nothing from it: ``--margin_scheduler none`` ignores its conf)."""
    return {
        f"{k}_conf"
        for k in set(saved) & set(wanted)
        if f"{k}_conf" in saved and saved[k] is None and wanted[k] is None
    }


def _differences(saved: dict, wanted: dict, skip=frozenset()) -> List[str]:
    keys = sorted((set(saved) | set(wanted)) - skip)
    return [
        f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}"
        for k in keys
        if saved.get(k) != wanted.get(k)
    ]


def _saved_settings(out: Path) -> Optional[dict]:
    """The settings the run in ``out`` was started with: the plugin's own record
    (written atomically), else ESPnet's config.yaml (runs of older versions)."""
    for name in (REQUESTED, "config.yaml"):
        path = out / name
        if not path.exists():
            continue
        try:
            saved = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            saved = None
        if isinstance(saved, dict):
            return saved
        logging.warning(f"{path} is incomplete (an interrupted write): not used")
    return None


def check_and_record(args: argparse.Namespace) -> None:
    """Raise ChangedRunError if ``args`` would resume a run set up differently;
    record the requested settings and input digests of the run (from rank 0)."""
    out = Path(args.output_dir)
    digests = input_digests(args)
    wanted = yaml.safe_load(yaml_no_alias_safe_dump(vars(args)))
    if not args.resume and (out / "checkpoint.pth").exists():
        # ESPnet would train over it, and a kill before its first checkpoint would
        # leave the old run's weights under the new run's records.
        raise ChangedRunError(
            f"{out} holds a run (checkpoint.pth) and --resume is false: give "
            "another --output_dir, remove the old run, or --resume true to continue it",
            status=2,
        )
    if args.resume and (out / "checkpoint.pth").exists():
        problems = []
        saved = _saved_settings(out)
        if saved is not None:
            problems += _differences(saved, wanted, MAY_CHANGE | _unused(saved, wanted))
        if (out / DIGESTS).exists():
            recorded = yaml.safe_load((out / DIGESTS).read_text())
            problems += [f"content of {d}" for d in _differences(recorded, digests)]
        if problems:
            raise ChangedRunError(
                f"{out} holds a run with other settings or inputs; not resuming it. "
                "Differences (saved -> requested): "
                + "; ".join(problems)
                + ". Use another --output_dir, or remove the old run."
            )
    if os.environ.get("RANK", "0") == "0":
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / DIGESTS, yaml.safe_dump(digests))
        atomic.write_text(out / REQUESTED, yaml_no_alias_safe_dump(wanted))
