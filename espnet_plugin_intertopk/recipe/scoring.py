"""Scoring of a loss comparison: cosine and AS-norm scores, EER and minDCF (ESPnet's
helpers), mean and spread over training seeds, paired differences with bootstrap
confidence intervals, RESULTS.md.

``python -m espnet_plugin_intertopk.recipe.scoring --expdir exp --models "a a_lm b"
--seeds "0 1 2" --test_dir data/test --results RESULTS.md [--score_norm asnorm
--cohort_utt2spk data/cohort/utt2spk] [--floor exp/mfcc_floor/test_embeddings.npz]``
reads ``<expdir>/<model>/seed<N>/embed/test_embeddings.npz`` (and
``cohort_embeddings.npz`` for AS-norm) of exactly the models and seeds given.

Bootstrap (``--bootstrap`` resamples): the test speakers are drawn with replacement,
each bringing every trial whose first utterance is theirs; on each resample the EER
difference of two models is computed per seed on the same trials and averaged over
seeds; the interval is the 2.5th to 97.5th percentile of that mean difference.
"""

import argparse
import datetime
import platform
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from espnet2.utils.eer import ComputeErrorRates, ComputeMinDcf, tuneThresholdfromScore

from espnet_plugin_intertopk.recipe.kaldi_data import read_map

P_TARGETS = (0.05, 0.01)
METRICS = ("eer",) + tuple(f"mindcf@{p}" for p in P_TARGETS)


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


def read_trials(trial_label: Path) -> Tuple[List[Tuple[str, str]], np.ndarray]:
    labels = read_map(trial_label)
    pairs = [tuple(key.split("*")) for key in labels]
    return pairs, np.array([int(v) for v in labels.values()])


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
    utts = sorted({u for pair in pairs for u in pair})
    row = {u: i for i, u in enumerate(utts)}
    against = np.stack([emb[u] for u in utts]) @ cohort.T
    n = min(top_n, cohort.shape[0])
    top = -np.sort(-against, axis=1)[:, :n]
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
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]

    def mean_diff(idx: np.ndarray) -> float:
        return float(
            np.mean(
                [
                    metric(x[idx], labels[idx]) - metric(y[idx], labels[idx])
                    for x, y in zip(a, b)
                ]
            )
        )

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
    diffs: List[Tuple[str, str, str, float, float, float]],
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
            lines.append(
                f"| {model} | {base} | {norm} | {point:+.2f} | "
                f"[{low:+.2f}, {high:+.2f}] |"
            )
    lines += ["", "## Per seed", "", head.replace("| seeds |", "| seed |"), sep]
    for (model, norm), per_seed in summary.items():
        for seed, r in sorted(per_seed.items()):
            lines.append(
                f"| {model} | {norm} | {seed} | {r['eer']:.2f} | "
                + " | ".join(f"{r[f'mindcf@{p}']:.4f}" for p in P_TARGETS)
                + " |"
            )
    return "\n".join(lines) + "\n"


def embeddings_path(expdir: Path, model: str, seed: int, name: str) -> Path:
    return expdir / model / f"seed{seed}" / "embed" / f"{name}_embeddings.npz"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    parser.add_argument("--score_norm", choices=("none", "asnorm"), default="none")
    parser.add_argument(
        "--cohort_utt2spk",
        type=Path,
        help="speakers of the cohort utterances (AS-norm)",
    )
    parser.add_argument("--top_n", type=int, default=50, help="AS-norm cohort size")
    parser.add_argument("--floor", type=Path, help="embeddings of an untrained floor")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--append",
        type=Path,
        help="a Markdown file appended to the results (e.g. the cleaning evaluation)",
    )
    args = parser.parse_args(argv)
    models, seeds = args.models.split(), [int(s) for s in args.seeds.split()]
    pairs, labels = read_trials(args.test_dir / "trial_label")
    if (args.test_dir / "utt2spk").exists():
        utt2spk = read_map(args.test_dir / "utt2spk")
        groups = np.array([utt2spk[a] for a, _ in pairs])
        unit = f"{len(set(utt2spk.values()))} speakers"
    else:  # resample first utterances instead of speakers
        groups = np.array([a for a, _ in pairs])
        unit = f"{len(set(groups))} first utterances (no utt2spk to group speakers)"
    norms = ["cosine"] + (["asnorm"] if args.score_norm == "asnorm" else [])
    scores: Dict[Tuple[str, str], Dict[int, np.ndarray]] = {}
    for model in models:
        for seed in seeds:
            emb = unit_embeddings(
                dict(np.load(embeddings_path(args.expdir, model, seed, "test")))
            )
            scores.setdefault((model, "cosine"), {})[seed] = cosine_scores(emb, pairs)
            if "asnorm" in norms:
                cohort_npz = embeddings_path(args.expdir, model, seed, "cohort")
                cohort = cohort_means(
                    unit_embeddings(dict(np.load(cohort_npz))),
                    read_map(args.cohort_utt2spk),
                )
                scores.setdefault((model, "asnorm"), {})[seed] = as_norm(
                    emb, pairs, cohort, args.top_n
                )
    if args.floor is not None:
        floor = unit_embeddings(dict(np.load(args.floor)))
        scores[("untrained floor (MFCC mean+std)", "cosine")] = {
            0: cosine_scores(floor, pairs)
        }
    summary = {
        key: {seed: error_rates(s, labels) for seed, s in per_seed.items()}
        for key, per_seed in scores.items()
    }
    diffs = []
    reference = models[0]
    for norm in norms:
        for base in models[1:]:
            a = [scores[(reference, norm)][s] for s in seeds]
            b = [scores[(base, norm)][s] for s in seeds]
            diffs.append(
                (
                    reference,
                    base,
                    norm,
                    *paired_bootstrap(a, b, labels, groups, eer, args.bootstrap),
                )
            )
            print(f"bootstrap {reference} - {base} ({norm}): {diffs[-1][3:]}")
    n_target = int(labels.sum())
    header = [
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- machine: {platform.node()} ({platform.processor() or platform.machine()})",
        f"- test trials: {len(labels)} ({n_target} target, {len(labels) - n_target} "
        f"non-target) from {unit}",
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
        "README)",
    ]
    table = results_markdown(summary, diffs, header)
    if args.append is not None and args.append.stat().st_size:
        table += "\n" + args.append.read_text()
    args.results.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
