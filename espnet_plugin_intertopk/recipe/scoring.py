"""Scoring of a loss comparison: cosine and AS-norm scores, EER and minDCF (ESPnet's
helpers), mean and spread over training seeds, paired differences with bootstrap
confidence intervals, RESULTS.md.

``python -m espnet_plugin_intertopk.recipe.scoring --expdir exp --models "a a_lm b"
--seeds "0 1 2" --test_dir data/test --results RESULTS.md [--score_norm asnorm
--cohort_utt2spk data/cohort/utt2spk] [--floor exp/mfcc_floor/test_embeddings.npz]
[--references "a b"] [--json results.json]``
reads ``<expdir>/<model>/seed<N>/embed/test_embeddings.npz`` (and
``cohort_embeddings.npz`` for AS-norm) of exactly the models and seeds given.

Paired differences: each model of ``--references`` (default: the first of
``--models``) minus every other model. ``--json`` also writes the results in a
machine-readable form (``results_json``: the same numbers as the Markdown, unrounded),
which ``scale_summary`` reads.

Bootstrap (``--bootstrap`` resamples): the test speakers are drawn with replacement,
each bringing every trial whose first utterance is theirs; on each resample the EER
difference of two models is computed per seed on the same trials and averaged over
seeds; the interval is the 2.5th to 97.5th percentile of that mean difference.
``--bootstrap 0`` gives the differences without intervals.

Every argument and input is checked before anything is computed (a user's mistake is
one line on stderr: exit status 2 for the command line, 1 for the data); the results
file is written atomically and never over one of the inputs.
"""

import argparse
import datetime
import json
import platform
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from espnet2.utils.eer import ComputeErrorRates, ComputeMinDcf, tuneThresholdfromScore

from espnet_plugin_intertopk.recipe.kaldi_data import read_map
from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import (
    UserError,
    exits_cleanly,
    space_separated_names,
)
from espnet_plugin_intertopk.safe_io.ownership import check_apart, check_output_files

PROG = "python -m espnet_plugin_intertopk.recipe.scoring"

P_TARGETS = (0.05, 0.01)
METRICS = ("eer",) + tuple(f"mindcf@{p}" for p in P_TARGETS)
FLOOR = "untrained floor (MFCC mean+std)"
# What a --json file says it is (scale_summary checks it).
JSON_TOOL = "espnet_plugin_intertopk.recipe.scoring"
JSON_FORMAT_VERSION = 1


def unit_embeddings(npz: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Unit-length embedding per utterance; ESPnet stores several crops per utterance
    (num_eval): each is normalised, then they are averaged and normalised again."""
    out = {}
    for key, v in npz.items():
        v = np.asarray(v, dtype=np.float64)
        if v.ndim == 2:
            v = (v / np.linalg.norm(v, axis=1, keepdims=True)).mean(0)
        out[key] = v / np.linalg.norm(v)
    return out


class Trials:
    """The trials of a ``trial_label`` file (``<uttA>*<uttB> <0|1>`` lines), checked:
    well-formed lines, each trial once (in either order), both kinds of trials.

    Attributes:
        pairs: (uttA, uttB) per trial; labels: (T,) 0/1; lines: line of each trial.
    """

    def __init__(self, path: Path):
        self.path = path
        self.pairs: List[Tuple[str, str]] = []
        self.lines: List[int] = []
        labels, seen = [], {}
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1"):
                raise UserError(
                    f"{path}:{n}: expected '<uttA>*<uttB> <0|1>', got {line!r}"
                )
            key, label = parts
            pair = tuple(key.split("*"))
            if len(pair) != 2 or not all(pair):
                raise UserError(f"{path}:{n}: trial key {key!r} is not <uttA>*<uttB>")
            first = seen.setdefault(frozenset(pair), n)
            if first != n:
                raise UserError(
                    f"{path}:{n}: trial {key} repeats the trial of line {first}; list "
                    "each trial once"
                )
            self.pairs.append(pair)
            self.lines.append(n)
            labels.append(int(label))
        self.labels = np.array(labels, dtype=int)
        if len(set(labels)) < 2:
            kinds = "no trials"
            if labels:
                kinds = (
                    f"all {len(labels)} trials are {'non-' * (labels[0] == 0)}target"
                )
            raise UserError(
                f"{path}: {kinds}: EER and minDCF need both target (1) and non-target "
                "(0) trials"
            )

    def where(self, i: int) -> str:
        """Trial ``i`` and its place, for messages."""
        return f"trial {'*'.join(self.pairs[i])} ({self.path}:{self.lines[i]})"


def cohort_means(emb: Dict[str, np.ndarray], utt2spk: Dict[str, str]) -> np.ndarray:
    """(S, D) unit mean embedding of every cohort speaker."""
    by_spk: Dict[str, List[np.ndarray]] = {}
    for utt, spk in utt2spk.items():
        by_spk.setdefault(spk, []).append(emb[utt])
    means = np.stack([np.mean(v, axis=0) for _, v in sorted(by_spk.items())])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def cosine_scores(emb: Dict[str, np.ndarray], pairs) -> np.ndarray:
    a = np.stack([emb[x] for x, _ in pairs])
    b = np.stack([emb[y] for _, y in pairs])
    return np.einsum("td,td->t", a, b)


def as_norm(
    emb: Dict[str, np.ndarray], pairs, cohort: np.ndarray, top_n: int
) -> np.ndarray:
    """Adaptive symmetric normalisation of the cosine scores of ``pairs``.

    Each utterance's scores against the cohort give the mean and standard deviation of
    its ``top_n`` highest; a trial's score s becomes
    0.5 ((s - mean_a) / std_a + (s - mean_b) / std_b).
    """
    if not 2 <= top_n <= cohort.shape[0]:
        # One score has no spread: every normalised score would be NaN.
        raise ValueError(f"top_n must be in [2, {cohort.shape[0]}], got {top_n}")
    utts = sorted({u for pair in pairs for u in pair})
    row = {u: i for i, u in enumerate(utts)}
    against = np.stack([emb[u] for u in utts]) @ cohort.T
    top = -np.sort(-against, axis=1)[:, :top_n]
    mean, std = top.mean(1), top.std(1)
    a = np.array([row[x] for x, _ in pairs])
    b = np.array([row[y] for _, y in pairs])
    s = cosine_scores(emb, pairs)
    return 0.5 * ((s - mean[a]) / std[a] + (s - mean[b]) / std[b])


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER in % (ESPnet's ``tuneThresholdfromScore``)."""
    return float(tuneThresholdfromScore(scores, labels, [1, 0.1])[1])


def error_rates(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """EER (%) and minDCF at each of P_TARGETS (c_miss = c_fa = 1)."""
    out = {"eer": eer(scores, labels)}
    fnrs, fprs, thresholds = ComputeErrorRates(scores, labels)
    for p in P_TARGETS:
        out[f"mindcf@{p}"] = float(ComputeMinDcf(fnrs, fprs, thresholds, p, 1, 1)[0])
    return out


def mean_difference(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    labels: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    idx: np.ndarray,
) -> float:
    """Mean over seeds of metric(a_s) - metric(b_s) on the trials ``idx``."""
    return float(
        np.mean(
            [
                metric(x[idx], labels[idx]) - metric(y[idx], labels[idx])
                for x, y in zip(a, b)
            ]
        )
    )


def paired_bootstrap(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    labels: np.ndarray,
    groups: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 1000,
    seed: int = 0,
) -> Tuple[float, float, float]:
    """Mean over seeds of metric(a_s) - metric(b_s), with a 95 % percentile interval
    from resampling the groups (test speakers) with replacement.

    Args:
        a, b: per seed, the scores of every trial by the two systems.
        labels: (T,) 0/1 per trial; groups: (T,) the group (speaker) of each trial.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]

    def mean_diff(idx: np.ndarray) -> float:
        return mean_difference(a, b, labels, metric, idx)

    point = mean_diff(np.arange(len(labels)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(100 * n_resamples):
        if len(draws) == n_resamples:
            break
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[g] for g in pick])
        # An error rate needs both kinds of trials: such a resample is drawn again.
        if labels[idx].min() != labels[idx].max():
            draws.append(mean_diff(idx))
    if len(draws) < n_resamples:
        raise ValueError("too few groups with both target and non-target trials")
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)


def _fmt(values: List[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def results_markdown(
    summary: Dict[Tuple[str, str], Dict[int, Dict[str, float]]],
    diffs: List[Tuple[str, str, str, float, Optional[float], Optional[float]]],
    header: List[str],
) -> str:
    """RESULTS.md: mean ± std over seeds, paired differences, then every seed."""
    head = (
        "| model | scoring | seeds | EER (%) | "
        + " | ".join(f"minDCF (p={p})" for p in P_TARGETS)
        + " |"
    )
    sep = "|---|---|---:|---:|" + "---:|" * len(P_TARGETS)
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
        vals = {m: [r[m] for r in per_seed.values()] for m in METRICS}
        lines.append(
            f"| {model} | {norm} | {len(per_seed)} | {_fmt(vals['eer'], 2)} | "
            + " | ".join(_fmt(vals[f"mindcf@{p}"], 4) for p in P_TARGETS)
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
            interval = "none" if low is None else f"[{low:+.2f}, {high:+.2f}]"
            lines.append(f"| {model} | {base} | {norm} | {point:+.2f} | {interval} |")
    lines += ["", "## Per seed", "", head.replace("| seeds |", "| seed |"), sep]
    for (model, norm), per_seed in summary.items():
        for seed, r in sorted(per_seed.items()):
            lines.append(
                f"| {model} | {norm} | {seed} | {r['eer']:.2f} | "
                + " | ".join(f"{r[f'mindcf@{p}']:.4f}" for p in P_TARGETS)
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
    summary: Dict[Tuple[str, str], Dict[int, Dict[str, float]]],
    diffs: List[Tuple[str, str, str, float, Optional[float], Optional[float]]],
    info: Dict,
) -> str:
    """The results as JSON: ``info`` (models, seeds, trials, ...) then, per scoring
    and model, the per-seed EER (%) and minDCF with their mean and std over seeds,
    then the paired EER differences; the numbers of ``results_markdown``, unrounded.
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
        }
    data = {
        "tool": JSON_TOOL,
        "format_version": JSON_FORMAT_VERSION,
        **info,
        "mindcf_costs": {"p_targets": list(P_TARGETS), "c_miss": 1, "c_fa": 1},
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
    }
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def embeddings_path(expdir: Path, model: str, seed: int, name: str) -> Path:
    return expdir / model / f"seed{seed}" / "embed" / f"{name}_embeddings.npz"


def load_embeddings(path: Path, what: str) -> Dict[str, np.ndarray]:
    """Unit embeddings of an .npz file; UserError naming ``path`` and ``what`` (the
    model and seed) when it is missing, unreadable, or holds an embedding of another
    size, with NaN/Inf values or of zero length."""
    if not path.is_file():
        raise UserError(f"{path}: no such file ({what}); extract its embeddings first")
    try:
        npz = np.load(path)
        if not hasattr(npz, "files"):
            raise ValueError("not an .npz archive")
        with npz:
            raw = {key: np.asarray(npz[key], dtype=np.float64) for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: cannot read it ({what}): {err}") from None
    first = {}
    for key, v in raw.items():
        if v.ndim not in (1, 2) or v.size == 0:
            raise UserError(
                f"{path}: {key} has an embedding of shape {v.shape} ({what})"
            )
        k0, d0 = first.setdefault("size", (key, v.shape[-1]))
        if v.shape[-1] != d0:
            raise UserError(
                f"{path}: embeddings of different sizes, {k0}: {d0}, {key}: "
                f"{v.shape[-1]} ({what})"
            )
        if not np.isfinite(v).all():
            raise UserError(f"{path}: the embedding of {key} has NaN or Inf ({what})")
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = unit_embeddings(raw)
    for key, v in unit.items():
        if not np.isfinite(v).all():
            raise UserError(f"{path}: the embedding of {key} has zero length ({what})")
    return unit


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
    references = space_separated_names(text, "--references")
    for name in references:
        if name not in models:
            raise UserError(
                f"--references {text!r}: {name} is not one of --models "
                f"({' '.join(models)})",
                status=2,
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
        if args.top_n < 2:
            raise UserError(
                f"--top_n must be >= 2 (one score has no spread), got {args.top_n}",
                status=2,
            )
    named = {
        "--test_dir": args.test_dir,
        "--cohort_utt2spk": args.cohort_utt2spk,
        "--floor": args.floor,
        "--append": args.append,
    }
    for option, path in named.items():
        if path is not None and not path.exists():
            raise UserError(f"{option} {path}: no such file or directory", status=2)
    check_output_files({"--results": args.results, "--json": args.json})


def _covered(emb: Dict[str, np.ndarray], trials: Trials, path: Path, what: str):
    for i, pair in enumerate(trials.pairs):
        missing = [u for u in pair if u not in emb]
        if missing:
            raise UserError(
                f"{trials.where(i)}: no embedding of {missing[0]} in {path} ({what})"
            )


class Inputs(NamedTuple):
    """Everything scoring reads, checked."""

    trials: Trials
    groups: np.ndarray  # (T,) bootstrap group of each trial
    unit: str  # what the groups are, for the header
    test: Dict[Tuple[str, int], Dict[str, np.ndarray]]  # (model, seed) -> embeddings
    cohorts: Dict[Tuple[str, int], np.ndarray]  # (model, seed) -> cohort means
    floor: Optional[Dict[str, np.ndarray]]


def read_inputs(
    args: argparse.Namespace, runs: List[Tuple[str, int]], files: Dict
) -> Inputs:
    """Read and check every input (UserError, status 1, at the first bad one)."""
    if not (args.test_dir / "trial_label").is_file():
        raise UserError(f"{args.test_dir / 'trial_label'}: no such file")
    trials = Trials(args.test_dir / "trial_label")
    utt2spk_path = args.test_dir / "utt2spk"
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
    test, cohorts = {}, {}
    for run in runs:
        what = f"model {run[0]}, seed {run[1]}"
        test[run] = load_embeddings(files[run, "test"], what)
        _covered(test[run], trials, files[run, "test"], what)
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
            emb = load_embeddings(path, what)
            for utt in cohort_utt2spk:
                if utt not in emb:
                    raise UserError(
                        f"{args.cohort_utt2spk}: no embedding of {utt} in {path} "
                        f"({what})"
                    )
            sizes = {next(iter(e.values())).size for e in (emb, test[run])}
            if len(sizes) > 1:
                raise UserError(
                    f"{path}: cohort and test embeddings differ in size ({what})"
                )
            cohorts[run] = cohort_means(emb, cohort_utt2spk)
    floor = None
    if args.floor is not None:
        floor = load_embeddings(args.floor, "the floor")
        _covered(floor, trials, args.floor, "the floor")
    return Inputs(trials, groups, unit, test, cohorts, floor)


@exits_cleanly(PROG)
def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    models, seeds = space_separated_names(args.models, "--models"), _seeds(args.seeds)
    references = _references(args.references, models)
    check_arguments(args)
    norms = ["cosine"] + (["asnorm"] if args.score_norm == "asnorm" else [])
    runs = [(model, seed) for model in models for seed in seeds]
    sets = ["test"] + (["cohort"] if "asnorm" in norms else [])
    files = {
        (run, name): embeddings_path(args.expdir, *run, name)
        for run in runs
        for name in sets
    }
    given = (args.cohort_utt2spk, args.floor, args.append)
    inputs_read = [args.test_dir, *files.values(), *(p for p in given if p is not None)]
    check_apart(args.results, inputs_read, "--results")
    if args.json is not None:
        check_apart(args.json, inputs_read, "--json")
    inputs = read_inputs(args, runs, files)
    pairs, labels = inputs.trials.pairs, inputs.trials.labels
    scores: Dict[Tuple[str, str], Dict[int, np.ndarray]] = {}
    for model, seed in runs:
        emb = inputs.test[model, seed]
        scores.setdefault((model, "cosine"), {})[seed] = cosine_scores(emb, pairs)
        if "asnorm" in norms:
            scores.setdefault((model, "asnorm"), {})[seed] = as_norm(
                emb, pairs, inputs.cohorts[model, seed], args.top_n
            )
    if inputs.floor is not None:
        scores[(FLOOR, "cosine")] = {0: cosine_scores(inputs.floor, pairs)}
    summary = {
        key: {seed: error_rates(s, labels) for seed, s in per_seed.items()}
        for key, per_seed in scores.items()
    }
    diffs = []
    pairs = [(ref, base) for ref in references for base in models if base != ref]
    for norm in norms:
        for reference, base in pairs:
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
        f"- intervals: {args.bootstrap} bootstrap resamples of test speakers (see "
        "README)"
        if args.bootstrap
        else "- intervals: none (--bootstrap 0)",
    ]
    table = results_markdown(summary, diffs, header)
    if args.append is not None and args.append.stat().st_size:
        table += "\n" + args.append.read_text()
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
            "floor": FLOOR if inputs.floor is not None else None,
            "bootstrap": {"resamples": args.bootstrap, "resampled_units": inputs.unit},
        }
        atomic.write_text(args.json, results_json(summary, diffs, info))
    print(table)


if __name__ == "__main__":
    main()
