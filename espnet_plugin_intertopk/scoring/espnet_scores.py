"""Quality-measure calibration of ESPnet's own score files (``spk.sh``), so that a
user of a stock ESPnet recipe can calibrate their scores on held-out trials.

``python -m espnet_plugin_intertopk.scoring.espnet_scores --scores test_scores
--embeddings test_embeddings.npz --calibration_scores valid_scores
--calibration_embeddings valid_embeddings.npz [--cohort_embeddings
cohort_embeddings.npz [--cohort_utt2spk data/cohort/utt2spk] --top_n 50]
[--test_dir data/test --calibration_dir data/valid] --out calibrated_scores``

A score file has one trial a line, ``<uttA>*<uttB> <score> [<0|1>]``, as spk.sh's
scoring writes it (the label is needed in the calibration file). The calibration is
that of ``calibration.py``: the score (raw or normalised, whichever the files hold)
and the quality measures of both sides; ``cohort`` needs ``--cohort_embeddings`` (the
mean of each side's ``--top_n`` best cosines against the cohort: its utterances, or
its speakers' mean embeddings with ``--cohort_utt2spk``), ``duration`` needs
``--test_dir`` and ``--calibration_dir`` (``utt2dur``, or the audio of ``wav.scp``
or the trial lists). ``--out`` gets the calibrated scores (natural-log LLRs) in the
same format; with labels in the test file, the metrics before and after are
printed. ``--test_trials`` / ``--calibration_trials`` (``trial_label`` files) check
that a score file lists exactly their trials with their labels.
"""

import argparse
import math
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from espnet_plugin_intertopk.recipe.kaldi_data import read_map, read_text
from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly
from espnet_plugin_intertopk.safe_io.ownership import check_apart, check_output_files
from espnet_plugin_intertopk.scoring import calibration
from espnet_plugin_intertopk.scoring.inputs import (
    Embeddings,
    Trials,
    check_both_classes,
    check_covered,
    check_paths_exist,
    check_top_n,
    duration_inputs,
    embedding_size,
    load_embeddings,
    read_durations,
)
from espnet_plugin_intertopk.scoring.metrics import P_TARGETS, error_rates
from espnet_plugin_intertopk.scoring.normalisation import cohort_means

PROG = "python -m espnet_plugin_intertopk.scoring.espnet_scores"


class ScoreFile(NamedTuple):
    """A checked score file: pairs, scores, labels (None when it has none) and the
    line of each trial."""

    path: Path
    pairs: List[Tuple[str, str]]
    scores: np.ndarray
    labels: Optional[np.ndarray]
    lines: List[int]

    def where(self, i: int) -> str:
        return f"trial {'*'.join(self.pairs[i])} ({self.path}:{self.lines[i]})"


def read_scores(path: Path) -> ScoreFile:
    """``<uttA>*<uttB> <score> [<0|1>]`` lines, each trial once, finite scores, a label
    on every line or on none (UserError naming the line)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    pairs, scores, labels, lines, seen = [], [], [], [], {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        pair = tuple(parts[0].split("*"))
        try:
            score = float(parts[1]) if len(parts) in (2, 3) else math.nan
        except ValueError:
            score = math.nan
        if (
            len(pair) != 2
            or not all(pair)
            or not math.isfinite(score)
            or (len(parts) == 3 and parts[2] not in ("0", "1"))
        ):
            raise UserError(
                f"{path}:{n}: expected '<uttA>*<uttB> <score> [<0|1>]' with a finite "
                f"score, got {line!r}"
            )
        first = seen.setdefault(frozenset(pair), n)
        if first != n:
            raise UserError(
                f"{path}:{n}: trial {parts[0]} repeats the trial of line {first}"
            )
        if lines and (len(parts) == 3) != (labels[0] is not None):
            raise UserError(
                f"{path}:{n}: a label on some lines only: give every line one or none"
            )
        pairs.append(pair)
        scores.append(score)
        labels.append(int(parts[2]) if len(parts) == 3 else None)
        lines.append(n)
    if not pairs:
        raise UserError(f"{path}: no trials")
    label_array = None if labels[0] is None else np.array(labels, dtype=int)
    return ScoreFile(path, pairs, np.array(scores), label_array, lines)


def check_trials_match(scores: ScoreFile, trials_path: Optional[Path]) -> None:
    """The score file lists exactly the trials of ``trials_path`` (a trial_label
    file), with the same labels where it has labels."""
    if trials_path is None:
        return
    trials = Trials(trials_path, needs="trial lists")
    label = {frozenset(p): y for p, y in zip(trials.pairs, trials.labels)}
    for i, pair in enumerate(scores.pairs):
        if frozenset(pair) not in label:
            raise UserError(f"{scores.where(i)}: not a trial of {trials_path}")
        if scores.labels is not None and scores.labels[i] != label[frozenset(pair)]:
            raise UserError(
                f"{scores.where(i)}: label {scores.labels[i]}, but "
                f"{label[frozenset(pair)]} in {trials_path}"
            )
    listed = {frozenset(p) for p in scores.pairs}
    for i, pair in enumerate(trials.pairs):
        if frozenset(pair) not in listed:
            raise UserError(f"{trials.where(i)}: no score in {scores.path}")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--scores", type=Path, required=True, help="test scores")
    parser.add_argument(
        "--embeddings", type=Path, required=True, help="the test utterances' .npz"
    )
    parser.add_argument(
        "--calibration_scores",
        type=Path,
        required=True,
        help="scores of the calibration trials, with labels",
    )
    parser.add_argument("--calibration_embeddings", type=Path, required=True)
    parser.add_argument("--test_trials", type=Path, help="trial_label to check against")
    parser.add_argument("--calibration_trials", type=Path)
    parser.add_argument("--cohort_embeddings", type=Path)
    parser.add_argument(
        "--cohort_utt2spk",
        type=Path,
        help="use the cohort speakers' mean embeddings (as AS-norm here does)",
    )
    parser.add_argument("--top_n", type=int, default=50)
    parser.add_argument("--test_dir", type=Path, help="durations of the test audio")
    parser.add_argument("--calibration_dir", type=Path)
    parser.add_argument(
        "--quality_measures",
        help="space-separated (default: norm, plus cohort and duration when their "
        "inputs are given)",
    )
    parser.add_argument("--out", type=Path, required=True)
    return parser


def _measures(args: argparse.Namespace) -> List[str]:
    if args.quality_measures is not None:
        names = calibration.quality_measures(args.quality_measures)
    else:
        names = ["norm"]
        names += ["cohort"] * (args.cohort_embeddings is not None)
        names += ["duration"] * (args.test_dir is not None)
    needs = {
        "cohort": ("--cohort_embeddings", args.cohort_embeddings),
        "duration": ("--test_dir", args.test_dir),
    }
    for name in names:
        if name in needs and needs[name][1] is None:
            raise UserError(
                f"the quality measure {name} needs {needs[name][0]}", status=2
            )
    if "duration" in names and args.calibration_dir is None:
        raise UserError(
            "the quality measure duration needs --calibration_dir", status=2
        )
    return names


def check_arguments(args: argparse.Namespace) -> List[str]:
    """The quality measures; UserError (status 2) for what the command line alone
    gets wrong."""
    names = _measures(args)
    if "cohort" in names:
        check_top_n(args.top_n)
    paths = {
        "--scores": args.scores,
        "--embeddings": args.embeddings,
        "--calibration_scores": args.calibration_scores,
        "--calibration_embeddings": args.calibration_embeddings,
        "--test_trials": args.test_trials,
        "--calibration_trials": args.calibration_trials,
        "--cohort_embeddings": args.cohort_embeddings,
        "--cohort_utt2spk": args.cohort_utt2spk,
        "--test_dir": args.test_dir,
        "--calibration_dir": args.calibration_dir,
    }
    check_paths_exist(paths)
    check_output_files({"--out": args.out})
    read = {str(p): p for p in paths.values() if p is not None}
    if "duration" in names:  # read_durations reads the audio too
        for data_dir in (args.test_dir, args.calibration_dir):
            read.update(duration_inputs(data_dir))
    check_apart(args.out, read, "--out")
    return names


def _cohort(args: argparse.Namespace, size: int) -> Optional[np.ndarray]:
    """The cohort's unit vectors (utterances, or speaker means with utt2spk), of
    the test embeddings' ``size``."""
    if args.cohort_embeddings is None:
        return None
    cohort = load_embeddings(args.cohort_embeddings, "the cohort")
    if embedding_size(cohort) != size:
        raise UserError(
            f"{args.cohort_embeddings}: cohort embeddings of size "
            f"{embedding_size(cohort)}, test embeddings of size {size}: give those "
            "of the same model"
        )
    emb = cohort.unit
    if args.cohort_utt2spk is None:
        vectors = np.stack([emb[k] for k in sorted(emb)])
    else:
        utt2spk = read_map(args.cohort_utt2spk)
        for utt in utt2spk:
            if utt not in emb:
                raise UserError(
                    f"{args.cohort_utt2spk}: no embedding of {utt} in "
                    f"{args.cohort_embeddings}"
                )
        vectors = cohort_means(emb, utt2spk)
    if args.top_n > len(vectors):
        raise UserError(
            f"--top_n {args.top_n} is more than the {len(vectors)} cohort vectors of "
            f"{args.cohort_embeddings}",
            status=2,
        )
    return vectors


def _features(
    names: List[str],
    scores: ScoreFile,
    emb: Embeddings,
    cohort: Optional[np.ndarray],
    top_n: int,
    audio_dir: Optional[Path],
) -> np.ndarray:
    utts = sorted({u for pair in scores.pairs for u in pair})
    durations = read_durations(audio_dir, utts) if "duration" in names else {}
    measures = calibration.side_measures(
        names, utts, emb.unit, emb.norm, cohort, top_n, durations
    )
    return calibration.features(scores.pairs, scores.scores, measures)


def _metrics_line(name: str, values: Dict[str, float]) -> str:
    dcf = ", ".join(
        f"minDCF/actDCF(p={p}) {values[f'mindcf@{p}']:.4f}/{values[f'actdcf@{p}']:.4f}"
        for p in P_TARGETS
    )
    return (
        f"{name}: EER {values['eer']:.2f} %, {dcf}, Cllr {values['cllr']:.4f}, "
        f"minCllr {values['min_cllr']:.4f}"
    )


@exits_cleanly(PROG)
def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    names = check_arguments(args)
    test = read_scores(args.scores)
    cal = read_scores(args.calibration_scores)
    if cal.labels is None:
        raise UserError(
            f"{cal.path}: no labels: the calibration trials need '<uttA>*<uttB> "
            "<score> <0|1>' lines"
        )
    check_both_classes(cal.labels, str(cal.path), "calibration trials")
    check_trials_match(test, args.test_trials)
    check_trials_match(cal, args.calibration_trials)
    shared = {u for p in test.pairs for u in p} & {u for p in cal.pairs for u in p}
    if shared:
        raise UserError(
            f"{cal.path}: utterance {sorted(shared)[0]} is also in the test trials "
            f"of {test.path}: calibrate on speakers the test never sees"
        )
    test_emb = load_embeddings(args.embeddings, "the test trials")
    cal_emb = load_embeddings(args.calibration_embeddings, "the calibration trials")
    check_covered(test_emb.unit, test.pairs, test.where, args.embeddings, "test")
    check_covered(
        cal_emb.unit, cal.pairs, cal.where, args.calibration_embeddings, "calibration"
    )
    if embedding_size(cal_emb) != embedding_size(test_emb):
        raise UserError(
            f"{args.calibration_embeddings}: calibration embeddings of size "
            f"{embedding_size(cal_emb)}, test embeddings of size "
            f"{embedding_size(test_emb)}: give those of the same model"
        )
    cohort = _cohort(args, embedding_size(test_emb))
    cal_x = _features(names, cal, cal_emb, cohort, args.top_n, args.calibration_dir)
    test_x = _features(names, test, test_emb, cohort, args.top_n, args.test_dir)
    model = calibration.fit(cal_x, cal.labels, str(cal.path))
    llrs = calibration.llrs(model, test_x)
    lines = [
        f"{'*'.join(pair)} {value:.6f}"
        + ("" if test.labels is None else f" {test.labels[i]}")
        for i, (pair, value) in enumerate(zip(test.pairs, llrs))
    ]
    atomic.write_text(args.out, "\n".join(lines) + "\n")
    print(
        f"calibrated {len(llrs)} trials on {len(cal.labels)} calibration trials "
        f"(quality measures: {' '.join(names)}) -> {args.out}"
    )
    if test.labels is not None and len(set(test.labels.tolist())) == 2:
        print(_metrics_line("before", error_rates(test.scores, test.labels)))
        print(_metrics_line("after", error_rates(llrs, test.labels)))


if __name__ == "__main__":
    main()
