"""Scoring of a loss comparison: cosine and AS-norm scores, optionally calibrated with
quality measures; EER, minDCF, actual DCF, Cllr and minCllr; mean and spread over
training seeds, paired differences with bootstrap confidence intervals, RESULTS.md.

``python -m espnet_plugin_intertopk.scoring.compare --expdir exp --models "a a_lm b"
--seeds "0 1 2" --test_dir data/test --results RESULTS.md [--score_norm asnorm
--cohort_utt2spk data/cohort/utt2spk] [--calibrate valid --calibration_dir
data/valid] [--floor exp/mfcc_floor/test_embeddings.npz] [--references "a b"]
[--json results.json]``
reads ``<expdir>/<model>/seed<N>/embed/test_embeddings.npz`` (and
``cohort_embeddings.npz`` for AS-norm, ``<calibration_dir name>_embeddings.npz`` for
``--calibrate valid``) of exactly the models and seeds given.

Calibration (``--calibrate``, AS-norm only; ``calibration.py``): per model and seed,
a linear logistic model of the AS-norm score and quality measures is fitted on
calibration trials and applied to the test trials (scoring ``asnorm+qmf-<set>``).
``valid``: the trials of ``--calibration_dir`` (the recipe's validation speakers);
``train``: trials among the cohort's utterances (training speakers, the anchors'
way; their AS-norm cohort holds their own speakers); ``both``: a row for each. The
calibration trials must share no utterance, and (where both lists say) no speaker,
with the test trials.

Paired differences: each model of ``--references`` (default: the first of
``--models``) minus every other model (EER); and per model, each calibrated scoring
minus AS-norm (and train minus valid calibration) in EER, actual DCF and Cllr.
``--json`` also writes the results in a machine-readable form (``results_json``: the
same numbers as the Markdown, unrounded), which ``scale_summary`` reads.

Bootstrap (``--bootstrap`` resamples): the test speakers are drawn with replacement,
each bringing every trial whose first utterance is theirs; on each resample the
metric's difference of two systems is computed per seed on the same trials and
averaged over seeds; the interval is the 2.5th to 97.5th percentile of that mean
difference. ``--bootstrap 0`` gives the differences without intervals.

Every argument and input is checked before anything is computed (a user's mistake is
one line on stderr: exit status 2 for the command line, 1 for the data); the results
file is written atomically and never over one of the inputs.
"""

import argparse
import datetime
import json
import platform
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from espnet_plugin_intertopk.recipe.kaldi_data import read_map, read_text
from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import (
    UserError,
    exits_cleanly,
    space_separated_names,
)
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
    names_among,
    read_durations,
)
from espnet_plugin_intertopk.scoring.metrics import (
    P_TARGETS,
    eer,
    error_rates,
    mean_difference,
    metric_function,
    paired_bootstrap,
)
from espnet_plugin_intertopk.scoring.normalisation import (
    as_norm,
    cohort_means,
    cosine_scores,
)

PROG = "python -m espnet_plugin_intertopk.scoring.compare"

FLOOR = "untrained floor (MFCC mean+std)"
# What a --json file says it is (scale_summary checks it).
JSON_TOOL = "espnet_plugin_intertopk.scoring.compare"
JSON_FORMAT_VERSION = 1
CALIBRATIONS = {"none": (), "valid": ("valid",), "train": ("train",)}
CALIBRATIONS["both"] = CALIBRATIONS["valid"] + CALIBRATIONS["train"]
# Compared between scorings of one model, with intervals.
SCORING_DIFF_METRICS = ("eer", f"actdcf@{P_TARGETS[0]}", "cllr")
COLUMNS = (  # metric, heading, digits
    ("eer", "EER (%)", 2),
    *((f"mindcf@{p}", f"minDCF (p={p})", 4) for p in P_TARGETS),
    *((f"actdcf@{p}", f"actDCF (p={p})", 4) for p in P_TARGETS),
    ("cllr", "Cllr", 4),
    ("min_cllr", "minCllr", 4),
)

Summary = Dict[Tuple[str, str], Dict[int, Dict[str, float]]]
# (model, baseline, scoring, mean, low, high): a paired EER difference of two models.
Diff = Tuple[str, str, str, float, Optional[float], Optional[float]]
# (model, scoring, baseline scoring, metric, mean, low, high).
ScoringDiff = Tuple[str, str, str, str, float, Optional[float], Optional[float]]


def calibrated(name: str) -> str:
    """The scoring name of AS-norm calibrated on the ``name`` trials."""
    return f"asnorm+qmf-{name}"


def _fmt(values: List[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _interval(low: Optional[float], high: Optional[float], digits: int) -> str:
    return "none" if low is None else f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def results_markdown(
    summary: Summary,
    diffs: List[Diff],
    header: List[str],
    scoring_diffs: List[ScoringDiff] = (),
) -> str:
    """RESULTS.md: mean ± std over seeds, paired differences, then every seed."""
    head = (
        "| model | scoring | seeds | "
        + " | ".join(title for _, title, _ in COLUMNS)
        + " |"
    )
    sep = "|---|---|---:|" + "---:|" * len(COLUMNS)
    lines = [
        "# RESULTS",
        "",
        *header,
        "",
        "## Mean ± std over training seeds",
        "",
        head,
        sep,
    ]
    for (model, norm), per_seed in summary.items():
        lines.append(
            f"| {model} | {norm} | {len(per_seed)} | "
            + " | ".join(
                _fmt([r[m] for r in per_seed.values()], digits)
                for m, _, digits in COLUMNS
            )
            + " |"
        )
    if diffs:
        lines += [
            "",
            "## Paired EER differences (negative: the first model is better)",
            "",
            "| model | baseline | scoring | mean EER difference (points) | "
            "95 % bootstrap interval |",
            "|---|---|---|---:|---|",
        ]
        for model, base, norm, point, low, high in diffs:
            lines.append(
                f"| {model} | {base} | {norm} | {point:+.2f} | "
                f"{_interval(low, high, 2)} |"
            )
    if scoring_diffs:
        lines += [
            "",
            "## Paired differences between scorings (negative: the first scoring is "
            "better)",
            "",
            "| model | scoring | baseline scoring | metric | mean difference | "
            "95 % bootstrap interval |",
            "|---|---|---|---|---:|---|",
        ]
        for model, norm, base, metric, point, low, high in scoring_diffs:
            digits = 2 if metric == "eer" else 4
            lines.append(
                f"| {model} | {norm} | {base} | {metric} | {point:+.{digits}f} | "
                f"{_interval(low, high, digits)} |"
            )
    lines += ["", "## Per seed", "", head.replace("| seeds |", "| seed |"), sep]
    for (model, norm), per_seed in summary.items():
        for seed, r in sorted(per_seed.items()):
            lines.append(
                f"| {model} | {norm} | {seed} | "
                + " | ".join(f"{r[m]:.{digits}f}" for m, _, digits in COLUMNS)
                + " |"
            )
    return "\n".join(lines) + "\n"


def _mean_std(values: List[float]) -> Dict:
    """Mean and standard deviation (ddof 1, as the Markdown's; None for one value)."""
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
    }


def results_json(
    summary: Summary,
    diffs: List[Diff],
    info: Dict,
    scoring_diffs: List[ScoringDiff] = (),
) -> str:
    """The results as JSON: ``info`` (models, seeds, trials, ...) then, per scoring
    and model, the per-seed metrics with their mean and std over seeds, then the
    paired differences; the numbers of ``results_markdown``, unrounded.
    """

    def metric(per_seed: Dict[int, Dict[str, float]], name: str) -> Dict:
        values = {seed: per_seed[seed][name] for seed in sorted(per_seed)}
        return {
            "per_seed": {str(seed): v for seed, v in values.items()},
            **_mean_std(list(values.values())),
        }

    results: Dict[str, Dict[str, Dict]] = {}
    for (model, norm), per_seed in summary.items():
        results.setdefault(norm, {})[model] = {
            "seeds": sorted(per_seed),
            "eer_percent": metric(per_seed, "eer"),
            "mindcf_by_p_target": {
                str(p): metric(per_seed, f"mindcf@{p}") for p in P_TARGETS
            },
            "actdcf_by_p_target": {
                str(p): metric(per_seed, f"actdcf@{p}") for p in P_TARGETS
            },
            "cllr_bits": metric(per_seed, "cllr"),
            "min_cllr_bits": metric(per_seed, "min_cllr"),
        }
    data = {
        "tool": JSON_TOOL,
        "format_version": JSON_FORMAT_VERSION,
        **info,
        "mindcf_costs": {"p_targets": list(P_TARGETS), "c_miss": 1, "c_fa": 1},
        "metric_definitions": (
            "eer_percent: ESPnet's EER; mindcf and actdcf: normalised by "
            "min(p, 1 - p), actdcf decides target when the score >= "
            "log((1 - p) / p); cllr_bits: "
            "Cllr of the scores read as natural-log likelihood ratios; min_cllr_bits: "
            "Cllr after PAV (the best monotone calibration on the test trials)"
        ),
        "results": results,
        "paired_eer_difference_definition": (
            "EER of model minus EER of baseline in percentage points, per seed on the "
            "same trials, mean over seeds; low, high: 95 % bootstrap percentile "
            "interval (null with --bootstrap 0); negative: the model is better"
        ),
        "paired_eer_differences": [
            {
                "model": model,
                "baseline": base,
                "scoring": norm,
                "mean": point,
                "low": low,
                "high": high,
            }
            for model, base, norm, point, low, high in diffs
        ],
        "paired_scoring_differences": [
            {
                "model": model,
                "scoring": norm,
                "baseline_scoring": base,
                "metric": name,
                "mean": point,
                "low": low,
                "high": high,
            }
            for model, norm, base, name, point, low, high in scoring_diffs
        ],
    }
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def embeddings_path(expdir: Path, model: str, seed: int, name: str) -> Path:
    return expdir / model / f"seed{seed}" / "embed" / f"{name}_embeddings.npz"


def _seeds(text: str) -> List[int]:
    names = space_separated_names(text, "--seeds")
    try:
        return [int(n) for n in names]
    except ValueError:
        raise UserError(f"--seeds {text!r}: seeds are integers", status=2) from None


def _references(text: Optional[str], models: List[str]) -> List[str]:
    """The models of ``--references`` (default: the first of ``models``)."""
    if text is None:
        return models[:1]
    references = names_among(
        text, "--references", models, f"--models ({' '.join(models)})"
    )
    return references


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--expdir", type=Path, required=True)
    parser.add_argument("--models", required=True, help="space-separated model names")
    parser.add_argument("--seeds", default="0", help="space-separated training seeds")
    parser.add_argument(
        "--test_dir",
        type=Path,
        required=True,
        help="trial_label and utt2spk of the test trials",
    )
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument(
        "--json", type=Path, help="also write the results as JSON (scale_summary)"
    )
    parser.add_argument(
        "--references",
        help="space-separated models whose paired EER difference against every other "
        "model is given (default: the first of --models)",
    )
    parser.add_argument("--score_norm", choices=("none", "asnorm"), default="none")
    parser.add_argument(
        "--cohort_utt2spk",
        type=Path,
        help="speakers of the cohort utterances (AS-norm)",
    )
    parser.add_argument(
        "--top_n", type=int, default=50, help="AS-norm: cohort speakers per side (>= 2)"
    )
    parser.add_argument(
        "--calibrate",
        choices=tuple(CALIBRATIONS),
        default="none",
        help="calibrate the AS-norm scores on the trials of --calibration_dir "
        "(valid), of the cohort's training speakers (train), or both",
    )
    parser.add_argument(
        "--calibration_dir",
        type=Path,
        help="trial_label (and utt2spk, durations) of the calibration trials "
        "(--calibrate valid); their embeddings: <name of the dir>_embeddings.npz",
    )
    parser.add_argument(
        "--quality_measures",
        default=" ".join(calibration.QUALITY_MEASURES),
        help="space-separated quality measures of calibration",
    )
    parser.add_argument("--floor", type=Path, help="embeddings of an untrained floor")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples; 0: no intervals"
    )
    parser.add_argument(
        "--append",
        type=Path,
        help="a Markdown file appended to the results (e.g. the cleaning evaluation)",
    )
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """What the command line alone can get wrong (UserError, status 2)."""
    if args.bootstrap < 0:
        raise UserError(
            f"--bootstrap must be >= 0 (0: no intervals), got {args.bootstrap}",
            status=2,
        )
    if args.score_norm == "asnorm":
        if args.cohort_utt2spk is None:
            raise UserError(
                "--score_norm asnorm needs --cohort_utt2spk (the cohort's speakers)",
                status=2,
            )
        check_top_n(args.top_n)
    if args.calibrate != "none" and args.score_norm != "asnorm":
        raise UserError(
            f"--calibrate {args.calibrate} calibrates AS-norm scores: give "
            "--score_norm asnorm",
            status=2,
        )
    if "valid" in CALIBRATIONS[args.calibrate] and args.calibration_dir is None:
        raise UserError(
            f"--calibrate {args.calibrate} needs --calibration_dir (the calibration "
            "trials)",
            status=2,
        )
    named = {
        "--test_dir": args.test_dir,
        "--cohort_utt2spk": args.cohort_utt2spk,
        "--calibration_dir": args.calibration_dir,
        "--floor": args.floor,
        "--append": args.append,
    }
    check_paths_exist(named)
    check_output_files({"--results": args.results, "--json": args.json})


class CalibrationSet(NamedTuple):
    """Calibration trials, checked: their pairs and labels, what they are (for
    messages), their embeddings per (model, seed) and their utterances' durations."""

    pairs: List[Tuple[str, str]]
    labels: np.ndarray
    what: str
    embeddings: Dict[Tuple[str, int], Embeddings]
    durations: Dict[str, float]


class Inputs(NamedTuple):
    """Everything scoring reads, checked."""

    trials: Trials
    groups: np.ndarray  # (T,) bootstrap group of each trial
    unit: str  # what the groups are, for the header
    test: Dict[Tuple[str, int], Embeddings]  # (model, seed) -> embeddings
    cohorts: Dict[Tuple[str, int], np.ndarray]  # (model, seed) -> cohort means
    floor: Optional[Dict[str, np.ndarray]]
    calibration: Dict[str, CalibrationSet]  # "valid" / "train" -> its trials
    durations: Dict[str, float]  # of the test utterances (calibration only)


def check_unseen(
    pairs: List[Tuple[str, str]],
    utt2spk: Optional[Dict[str, str]],
    trials: Trials,
    test_utt2spk: Optional[Dict[str, str]],
    what: str,
) -> None:
    """Calibration trials (``pairs``, their speakers where known) share no utterance
    and no speaker with the test trials (UserError naming the first shared one)."""
    utts = {u for pair in pairs for u in pair}
    for i, pair in enumerate(trials.pairs):
        for u in pair:
            if u in utts:
                raise UserError(
                    f"{what}: utterance {u} is also in {trials.where(i)}: calibrate "
                    "on speakers the test never sees"
                )
    if utt2spk is not None and test_utt2spk is not None:
        shared = sorted(set(utt2spk.values()) & set(test_utt2spk.values()))
        if shared:
            raise UserError(
                f"{what}: speaker {shared[0]} is also a test speaker: calibrate on "
                "speakers the test never sees"
            )


def read_calibration(
    args: argparse.Namespace,
    runs: List[Tuple[str, int]],
    files: Dict,
    trials: Trials,
    test_utt2spk: Optional[Dict[str, str]],
    test: Dict[Tuple[str, int], Embeddings],
    cohort_emb: Dict[Tuple[str, int], Embeddings],
) -> Dict[str, CalibrationSet]:
    """The calibration sets of ``--calibrate``, checked (UserError at the first
    problem)."""
    out = {}
    for name in CALIBRATIONS[args.calibrate]:
        if name == "valid":
            path = args.calibration_dir / "trial_label"
            if not path.is_file():
                raise UserError(f"{path}: no such file (--calibration_dir)")
            cal_trials = Trials(path, needs="calibration trials")
            pairs, labels, what = cal_trials.pairs, cal_trials.labels, str(path)
            spk_path = args.calibration_dir / "utt2spk"
            utt2spk = read_map(spk_path) if spk_path.is_file() else None
            audio_dir = args.calibration_dir
            check_unseen(pairs, utt2spk, trials, test_utt2spk, what)
            emb = {}
            for run in runs:
                run_what = f"model {run[0]}, seed {run[1]}"
                emb[run] = load_embeddings(files[run, "valid"], run_what)
                check_covered(
                    emb[run].unit,
                    pairs,
                    cal_trials.where,
                    files[run, "valid"],
                    run_what,
                )
                if embedding_size(emb[run]) != embedding_size(test[run]):
                    raise UserError(
                        f"{files[run, 'valid']}: calibration and test embeddings "
                        f"differ in size ({run_what})"
                    )
        else:  # the cohort's training speakers
            utt2spk = read_map(args.cohort_utt2spk)
            pairs, labels = calibration.training_speaker_trials(utt2spk)
            what = f"training-speaker trials of {args.cohort_utt2spk}"
            if not labels.any():
                raise UserError(
                    f"{args.cohort_utt2spk}: no speaker with two or more utterances: "
                    "training-speaker calibration needs same-speaker trials"
                )
            check_both_classes(labels, what, "calibration trials")
            check_unseen(pairs, utt2spk, trials, test_utt2spk, what)
            audio_dir = args.cohort_utt2spk.parent
            emb = cohort_emb
        utts = {u for pair in pairs for u in pair}
        durations = (
            read_durations(audio_dir, utts) if "duration" in args.measures else {}
        )
        out[name] = CalibrationSet(pairs, labels, what, emb, durations)
    return out


def read_inputs(
    args: argparse.Namespace, runs: List[Tuple[str, int]], files: Dict
) -> Inputs:
    """Read and check every input (UserError, status 1, at the first bad one)."""
    if not (args.test_dir / "trial_label").is_file():
        raise UserError(f"{args.test_dir / 'trial_label'}: no such file")
    trials = Trials(args.test_dir / "trial_label")
    utt2spk_path = args.test_dir / "utt2spk"
    utt2spk = None
    if utt2spk_path.exists():
        utt2spk = read_map(utt2spk_path)
        for i, (a, _) in enumerate(trials.pairs):
            if a not in utt2spk:
                raise UserError(
                    f"{trials.where(i)}: {a} is not in {utt2spk_path} (the bootstrap "
                    "groups trials by the first utterance's speaker)"
                )
        groups = np.array([utt2spk[a] for a, _ in trials.pairs])
        unit = f"{len(set(utt2spk.values()))} speakers"
    else:  # resample first utterances instead of speakers
        groups = np.array([a for a, _ in trials.pairs])
        unit = f"{len(set(groups))} first utterances (no utt2spk to group speakers)"
    test, cohorts, cohort_emb = {}, {}, {}
    for run in runs:
        what = f"model {run[0]}, seed {run[1]}"
        test[run] = load_embeddings(files[run, "test"], what)
        check_covered(
            test[run].unit, trials.pairs, trials.where, files[run, "test"], what
        )
    if args.score_norm == "asnorm":
        cohort_utt2spk = read_map(args.cohort_utt2spk)
        n_speakers = len(set(cohort_utt2spk.values()))
        if args.top_n > n_speakers:
            raise UserError(
                f"--top_n {args.top_n} is more than the {n_speakers} cohort speakers "
                f"of {args.cohort_utt2spk}: give at most {n_speakers}",
                status=2,
            )
        for run in runs:
            what, path = f"model {run[0]}, seed {run[1]}", files[run, "cohort"]
            cohort_emb[run] = load_embeddings(path, what)
            for utt in cohort_utt2spk:
                if utt not in cohort_emb[run].unit:
                    raise UserError(
                        f"{args.cohort_utt2spk}: no embedding of {utt} in {path} "
                        f"({what})"
                    )
            if embedding_size(cohort_emb[run]) != embedding_size(test[run]):
                raise UserError(
                    f"{path}: cohort and test embeddings differ in size ({what})"
                )
            cohorts[run] = cohort_means(cohort_emb[run].unit, cohort_utt2spk)
    calibration_sets = read_calibration(
        args, runs, files, trials, utt2spk, test, cohort_emb
    )
    durations = {}
    if calibration_sets and "duration" in args.measures:
        durations = read_durations(
            args.test_dir, {u for pair in trials.pairs for u in pair}
        )
    floor = None
    if args.floor is not None:
        floor = load_embeddings(args.floor, "the floor").unit
        check_covered(floor, trials.pairs, trials.where, args.floor, "the floor")
    return Inputs(
        trials, groups, unit, test, cohorts, floor, calibration_sets, durations
    )


def qmf_features(
    args: argparse.Namespace,
    pairs: List[Tuple[str, str]],
    scores: np.ndarray,
    emb: Embeddings,
    cohort: np.ndarray,
    durations: Dict[str, float],
) -> np.ndarray:
    """The calibration features of ``pairs`` (their AS-norm ``scores``)."""
    utts = sorted({u for pair in pairs for u in pair})
    measures = calibration.side_measures(
        args.measures,
        utts,
        emb.unit,
        emb.norm,
        cohort,
        args.top_n,
        durations,
    )
    return calibration.features(pairs, scores, measures)


def run_scores(
    args: argparse.Namespace, inputs: Inputs, run: Tuple[str, int]
) -> Dict[str, np.ndarray]:
    """Scoring name -> scores of the test trials, for one model and seed."""
    pairs, emb = inputs.trials.pairs, inputs.test[run]
    out = {"cosine": cosine_scores(emb.unit, pairs)}
    if args.score_norm != "asnorm":
        return out
    cohort = inputs.cohorts[run]
    out["asnorm"] = as_norm(emb.unit, pairs, cohort, args.top_n)
    if not inputs.calibration:
        return out
    test_x = qmf_features(args, pairs, out["asnorm"], emb, cohort, inputs.durations)
    for name, cal in inputs.calibration.items():
        cal_emb = cal.embeddings[run]
        cal_scores = as_norm(cal_emb.unit, cal.pairs, cohort, args.top_n)
        cal_x = qmf_features(
            args, cal.pairs, cal_scores, cal_emb, cohort, cal.durations
        )
        model = calibration.fit(
            cal_x, cal.labels, f"{cal.what} (model {run[0]}, seed {run[1]})"
        )
        out[calibrated(name)] = calibration.llrs(model, test_x)
    return out


def scoring_differences(
    args: argparse.Namespace,
    scores: Dict[Tuple[str, str], Dict[int, np.ndarray]],
    models: List[str],
    seeds: List[int],
    inputs: Inputs,
) -> List[ScoringDiff]:
    """Per model: each calibrated scoring minus AS-norm, and train minus valid
    calibration, in SCORING_DIFF_METRICS (mean over seeds, bootstrap interval)."""
    names = [calibrated(n) for n in CALIBRATIONS[args.calibrate]]
    comparisons = [(n, "asnorm") for n in names]
    if len(names) == 2:
        comparisons.append((names[1], names[0]))
    labels, out = inputs.trials.labels, []
    for model in models:
        for norm, base in comparisons:
            a = [scores[(model, norm)][s] for s in seeds]
            b = [scores[(model, base)][s] for s in seeds]
            for name in SCORING_DIFF_METRICS:
                metric = metric_function(name)
                if args.bootstrap:
                    point, low, high = paired_bootstrap(
                        a, b, labels, inputs.groups, metric, args.bootstrap
                    )
                else:
                    point = mean_difference(
                        a, b, labels, metric, np.arange(len(labels))
                    )
                    low = high = None
                out.append((model, norm, base, name, point, low, high))
    return out


def calibration_header(args: argparse.Namespace, inputs: Inputs) -> List[str]:
    """Header lines saying what each calibrated scoring was fitted on."""
    lines = []
    for name, cal in inputs.calibration.items():
        n_target = int(cal.labels.sum())
        lines.append(
            f"- {calibrated(name)}: AS-norm calibrated (linear logistic regression "
            f"of the score and the quality measures {' '.join(args.measures)}) on "
            f"{len(cal.labels)} trials ({n_target} target): {cal.what}"
        )
    return lines


def _duration_inputs(args: argparse.Namespace) -> Dict[str, Path]:
    """What reading the durations of calibration (``read_calibration``,
    ``read_inputs``) reads: the test, calibration and cohort directories and
    their audio."""
    sets = CALIBRATIONS[args.calibrate]
    if not sets or "duration" not in args.measures:
        return {}
    dirs = [args.test_dir]
    if "valid" in sets:
        dirs.append(args.calibration_dir)
    if "train" in sets:
        dirs.append(args.cohort_utt2spk.parent)
    return {k: v for d in dirs for k, v in duration_inputs(d).items()}


@exits_cleanly(PROG)
def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    models, seeds = space_separated_names(args.models, "--models"), _seeds(args.seeds)
    references = _references(args.references, models)
    check_arguments(args)
    args.measures = calibration.quality_measures(args.quality_measures)
    norms = ["cosine"] + (["asnorm"] if args.score_norm == "asnorm" else [])
    norms += [calibrated(n) for n in CALIBRATIONS[args.calibrate]]
    runs = [(model, seed) for model in models for seed in seeds]
    sets = ["test"] + (["cohort"] if "asnorm" in norms else [])
    if "valid" in CALIBRATIONS[args.calibrate]:
        sets.append("valid")
    files = {
        (run, name): embeddings_path(
            args.expdir,
            *run,
            args.calibration_dir.name if name == "valid" else name,
        )
        for run in runs
        for name in sets
    }
    given = (args.cohort_utt2spk, args.calibration_dir, args.floor, args.append)
    read = [args.test_dir, *files.values(), *(p for p in given if p is not None)]
    inputs_read = {str(p): p for p in read}
    inputs_read.update(_duration_inputs(args))
    check_apart(args.results, inputs_read, "--results")
    if args.json is not None:
        check_apart(args.json, inputs_read, "--json")
    inputs = read_inputs(args, runs, files)
    labels = inputs.trials.labels
    scores: Dict[Tuple[str, str], Dict[int, np.ndarray]] = {}
    for model, seed in runs:
        for norm, values in run_scores(args, inputs, (model, seed)).items():
            scores.setdefault((model, norm), {})[seed] = values
    if inputs.floor is not None:
        scores[(FLOOR, "cosine")] = {
            0: cosine_scores(inputs.floor, inputs.trials.pairs)
        }
    summary = {
        key: {seed: error_rates(s, labels) for seed, s in per_seed.items()}
        for key, per_seed in scores.items()
    }
    diffs = []
    compared = [(ref, base) for ref in references for base in models if base != ref]
    for norm in norms:
        for reference, base in compared:
            a = [scores[(reference, norm)][s] for s in seeds]
            b = [scores[(base, norm)][s] for s in seeds]
            if args.bootstrap:
                point, low, high = paired_bootstrap(
                    a, b, labels, inputs.groups, eer, args.bootstrap
                )
            else:
                point = mean_difference(a, b, labels, eer, np.arange(len(labels)))
                low = high = None
            diffs.append((reference, base, norm, point, low, high))
            print(
                f"paired EER difference {reference} - {base} ({norm}): {diffs[-1][3:]}"
            )
    scoring_diffs = scoring_differences(args, scores, models, seeds, inputs)
    n_target = int(labels.sum())
    header = [
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- machine: {platform.node()} ({platform.processor() or platform.machine()})",
        f"- test trials: {len(labels)} ({n_target} target, {len(labels) - n_target} "
        f"non-target) from {inputs.unit}",
        f"- training seeds: {' '.join(map(str, seeds))}; checkpoints selected on the "
        "validation trials",
        "- scoring: cosine"
        + (
            f"; AS-norm, top {args.top_n} of the per-speaker "
            "mean embeddings of the training speakers"
            if "asnorm" in norms
            else ""
        ),
        *calibration_header(args, inputs),
        f"- intervals: {args.bootstrap} bootstrap resamples of test speakers (see "
        "README)"
        if args.bootstrap
        else "- intervals: none (--bootstrap 0)",
    ]
    table = results_markdown(summary, diffs, header, scoring_diffs)
    if args.append is not None and args.append.stat().st_size:
        table += "\n" + read_text(args.append)
    atomic.write_text(args.results, table)
    if args.json is not None:
        info = {
            "models": models,
            "seeds": seeds,
            "references": references,
            "test_trials": {
                "total": len(labels),
                "target": n_target,
                "non_target": len(labels) - n_target,
            },
            "score_normalisations": norms,
            "asnorm_top_n": args.top_n if "asnorm" in norms else None,
            "calibration": {
                calibrated(name): {
                    "trials": cal.what,
                    "total": len(cal.labels),
                    "target": int(cal.labels.sum()),
                    "quality_measures": args.measures,
                }
                for name, cal in inputs.calibration.items()
            },
            "floor": FLOOR if inputs.floor is not None else None,
            "bootstrap": {"resamples": args.bootstrap, "resampled_units": inputs.unit},
        }
        atomic.write_text(args.json, results_json(summary, diffs, info, scoring_diffs))
    print(table)


if __name__ == "__main__":
    main()
