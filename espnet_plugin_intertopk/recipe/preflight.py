"""The recipe's one check before any stage runs (``run.sh`` calls it first): every
output path against every input and against the other outputs, and the options that
only a later stage would otherwise refuse, after earlier stages had rewritten their
outputs.

Inputs are the user's data directories, the audio their lists name (by directory:
an output may not contain, nor lie in, a directory of the user's audio), configs and
models; outputs are every directory and file the recipe writes. Paths are compared
after resolving ``..`` and links. Nothing is written.
"""

import argparse
from pathlib import Path
from typing import Dict, List, Optional

from espnet_plugin_intertopk.recipe.kaldi_data import audio_inputs, read_entries
from espnet_plugin_intertopk.safe_io import ownership
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly
from espnet_plugin_intertopk.scoring.calibration import quality_measures
from espnet_plugin_intertopk.scoring.normalisation import MIN_TOP_N


def _named(text: str) -> List[str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return text.split("=", 1)


def check_paths(outputs: Dict[str, Path], inputs: Dict[str, Path]) -> None:
    """Refuse (UserError, status 1 as the recipe's other option checks) an output
    that is, contains or lies inside an input, or overlaps another output (both:
    option -> path)."""
    every = {f"{option} {path}": path for option, path in inputs.items()}
    for path in inputs.values():
        if path.is_dir():
            every.update(audio_inputs(path))
    try:
        for what, path in outputs.items():
            ownership.check_apart(path, every, what)
        ownership.check_outputs_apart(outputs)
    except UserError as err:
        raise UserError(str(err)) from err


def cohort_speakers(
    cohort_utt2spk: Optional[Path],
    train_speakers: Optional[int],
    train_spk2utt: Optional[Path],
    holdout: int,
    first: int,
) -> Optional[int]:
    """The number of cohort speakers stage 6 will have: those of an existing cohort
    list, or those stage 1 will take from the training speakers (None: unknown)."""
    if cohort_utt2spk is not None:
        if not cohort_utt2spk.is_file():
            return None
        return len({spk for _, spk in read_entries(cohort_utt2spk).values()})
    if train_spk2utt is not None:
        if not train_spk2utt.is_file():
            return None  # stage 1's check names the missing file
        train_speakers = len(read_entries(train_spk2utt))
    if train_speakers is None:
        return None
    left = train_speakers - holdout
    if holdout and (holdout < 2 or left < 2):
        raise UserError(
            f"--n_valid_speakers {holdout}: {train_speakers} training speakers cannot "
            "give that many validation speakers and keep 2 or more for training"
        )
    return min(first, left) if first else left


def check_calibration(args: argparse.Namespace) -> None:
    """Stage 7's options: its quality measures, and for training-speaker
    calibration a cohort with same-speaker trials."""
    if args.quality_measures is not None:
        try:
            quality_measures(args.quality_measures)
        except UserError as err:
            raise UserError(str(err)) from err  # status 1, as the recipe's checks
    if args.calibrate not in ("train", "both"):
        return
    if args.cohort_utt2spk is None:  # stage 1 makes the cohort
        if args.cohort_utts_per_speaker == 1:
            raise UserError(
                f"--calibrate {args.calibrate} with --cohort_utts_per_speaker 1: the "
                "cohort would have no same-speaker trials to calibrate on: give 2 or "
                "more, or --calibrate valid"
            )
    elif args.cohort_utt2spk.is_file():
        speakers = [spk for _, spk in read_entries(args.cohort_utt2spk).values()]
        if len(set(speakers)) == len(speakers):
            raise UserError(
                f"--calibrate {args.calibrate}: {args.cohort_utt2spk} has no speaker "
                "with two or more utterances: no same-speaker trials to calibrate "
                "on: give --calibrate valid"
            )


@exits_cleanly("run.sh")
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="run.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=_named, action="append", default=[])
    parser.add_argument("--input", type=_named, action="append", default=[])
    parser.add_argument("--clean_threshold", type=float)
    parser.add_argument("--top_n", type=int, help="AS-norm in stage 6")
    parser.add_argument("--cohort_utt2spk", type=Path)
    parser.add_argument("--train_speakers", type=int)
    parser.add_argument("--train_spk2utt", type=Path)
    parser.add_argument("--holdout", type=int, default=0)
    parser.add_argument("--cohort_speakers", type=int, default=0)
    parser.add_argument("--quality_measures", help="of stage 7's calibration")
    parser.add_argument("--calibrate", help="stage 7's (given when it runs)")
    parser.add_argument("--cohort_utts_per_speaker", type=int)
    args = parser.parse_args(argv)
    check_paths(
        {f"--{k}": Path(v) for k, v in args.output if v},
        {f"--{k}": Path(v) for k, v in args.input if v},
    )
    if args.clean_threshold is not None and not 0 < args.clean_threshold < 180:
        raise UserError(
            f"--clean_threshold {args.clean_threshold:g}: must be an angle in (0, "
            "180) degrees"
        )
    if args.cohort_speakers == 1:
        raise UserError("--cohort_speakers 1: give 0 (all) or 2 or more")
    n = cohort_speakers(  # also checks the hold-out of validation speakers
        args.cohort_utt2spk,
        args.train_speakers,
        args.train_spk2utt,
        args.holdout,
        args.cohort_speakers,
    )
    check_calibration(args)
    if args.top_n is None:
        return
    if args.top_n < MIN_TOP_N:
        raise UserError(
            f"--top_n {args.top_n}: must be >= {MIN_TOP_N} (one score has no spread)"
        )
    if n is not None and args.top_n > n:
        raise UserError(
            f"--top_n {args.top_n} is more than the {n} cohort speakers stage 6 will "
            f"have: give --top_n {n} or less, or --score_norm none"
        )


if __name__ == "__main__":
    main()
