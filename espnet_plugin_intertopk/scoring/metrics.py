"""Verification metrics: EER and minDCF (ESPnet's helpers), the calibration metrics
(Cllr, minCllr, actual DCF), and the paired bootstrap over test speakers.

Scores are read as natural-log likelihood ratios (LLRs) by the calibration metrics:
a raw cosine or AS-norm score is not one, which is what its Cllr and actual DCF show.

- Cllr = 1/2 (mean over targets of log2(1 + e^-s) + mean over non-targets of
  log2(1 + e^s)) (Brümmer and du Preez 2006): 0 for perfect, 1 for a system that
  always says LLR 0, unbounded for a confident wrong one.
- minCllr: the Cllr of the same scores after the best monotone calibration, the
  pool-adjacent-violators (PAV) fit of the target posterior on the trials themselves
  (its LLRs are the posterior log-odds minus the trials' prior log-odds); what the
  system would reach with perfect calibration. Cllr - minCllr is the calibration loss.
- actual DCF at P_target p (c_miss = c_fa = 1): the Bayes decision on the score as an
  LLR, accept when s >= log((1 - p) / p); the cost p P_miss + (1 - p) P_fa divided by
  min(p, 1 - p), the normalisation of ESPnet's minDCF (1: no better than always
  deciding for the likelier class).
"""

from typing import Callable, Dict, Sequence, Tuple

import numpy as np
from espnet2.utils.eer import ComputeErrorRates, ComputeMinDcf, tuneThresholdfromScore

P_TARGETS = (0.05, 0.01)


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER in % (ESPnet's ``tuneThresholdfromScore``)."""
    return float(tuneThresholdfromScore(scores, labels, [1, 0.1])[1])


def cllr(llrs: np.ndarray, labels: np.ndarray) -> float:
    """Cllr in bits of natural-log LLRs (see the module's docstring)."""
    llrs, labels = np.asarray(llrs, dtype=np.float64), np.asarray(labels)
    # logaddexp(0, x) = log(1 + e^x) without overflow; / log 2: bits.
    target = np.logaddexp(0.0, -llrs[labels == 1]).mean()
    non_target = np.logaddexp(0.0, llrs[labels == 0]).mean()
    return float((target + non_target) / (2 * np.log(2)))


def pav_llrs(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LLRs of the best monotone (non-decreasing) calibration of ``scores`` on these
    trials: the PAV fit of the target posterior, minus the trials' prior log-odds.
    Tied scores share one value; a pool of one class only gets +-inf."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order].astype(np.float64)
    # Tied scores start as one block: a monotone function gives them one value.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sums = list(np.add.reduceat(y, starts))
    counts = list(np.diff(np.r_[starts, len(s)]).astype(np.float64))
    # Pool adjacent violators: merge a block into its left neighbour while the
    # neighbour's mean is not below its own.
    merged_sums, merged_counts = [], []
    for total, count in zip(sums, counts):
        while merged_sums and merged_sums[-1] * count >= total * merged_counts[-1]:
            total += merged_sums.pop()
            count += merged_counts.pop()
        merged_sums.append(total)
        merged_counts.append(count)
    posterior = np.repeat(
        np.array(merged_sums) / np.array(merged_counts),
        np.array(merged_counts, dtype=int),
    )
    n_target = labels.sum()
    prior_log_odds = np.log(n_target / (len(labels) - n_target))
    with np.errstate(divide="ignore"):
        fitted = np.log(posterior) - np.log1p(-posterior) - prior_log_odds
    out = np.empty_like(fitted)
    out[order] = fitted
    return out


def min_cllr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Cllr after the best monotone calibration on the trials themselves (PAV)."""
    return cllr(pav_llrs(scores, labels), labels)


def act_dcf(llrs: np.ndarray, labels: np.ndarray, p_target: float) -> float:
    """Normalised actual DCF of LLRs at ``p_target`` (c_miss = c_fa = 1)."""
    llrs, labels = np.asarray(llrs, dtype=np.float64), np.asarray(labels)
    threshold = np.log((1 - p_target) / p_target)
    p_miss = np.mean(llrs[labels == 1] < threshold)
    p_fa = np.mean(llrs[labels == 0] >= threshold)
    cost = p_target * p_miss + (1 - p_target) * p_fa
    return float(cost / min(p_target, 1 - p_target))


def error_rates(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """``eer`` (%), ``mindcf@<p>`` and ``actdcf@<p>`` at each of P_TARGETS (c_miss =
    c_fa = 1), ``cllr`` and ``min_cllr`` (bits)."""
    out = {"eer": eer(scores, labels)}
    fnrs, fprs, thresholds = ComputeErrorRates(scores, labels)
    for p in P_TARGETS:
        out[f"mindcf@{p}"] = float(ComputeMinDcf(fnrs, fprs, thresholds, p, 1, 1)[0])
    for p in P_TARGETS:
        out[f"actdcf@{p}"] = act_dcf(scores, labels, p)
    out["cllr"] = cllr(scores, labels)
    out["min_cllr"] = min_cllr(scores, labels)
    return out


def metric_function(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The function of ``eer``, ``cllr`` or ``actdcf@<p>``, for the bootstrap."""
    if name == "eer":
        return eer
    if name == "cllr":
        return cllr
    if name.startswith("actdcf@"):
        p_target = float(name.split("@")[1])
        return lambda s, y: act_dcf(s, y, p_target)
    raise ValueError(f"no bootstrapped metric {name!r}")


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
