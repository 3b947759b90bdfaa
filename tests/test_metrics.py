"""Cllr, minCllr and actual DCF against first-principles computations written here in
plain Python: Cllr from its definition, minCllr from the ROC convex hull (ROCCH; the
scoring code uses pool-adjacent-violators, another algorithm), actual DCF by counting
errors at the Bayes threshold; and two properties that tie them to ESPnet's minDCF."""

import math

import numpy as np
import pytest

from espnet_plugin_intertopk.scoring import metrics


def reference_cllr(llrs, labels) -> float:
    """1/2 (mean over targets of log2(1 + e^-s) + mean over non-targets of
    log2(1 + e^s)), term by term."""
    tar = [math.log2(1 + math.exp(-s)) for s, y in zip(llrs, labels) if y == 1]
    non = [math.log2(1 + math.exp(s)) for s, y in zip(llrs, labels) if y == 0]
    return 0.5 * (sum(tar) / len(tar) + sum(non) / len(non))


def reference_act_dcf(llrs, labels, p) -> float:
    """Count the misses and false alarms of deciding target when the LLR reaches the
    Bayes threshold log((1 - p) / p)."""
    threshold = math.log((1 - p) / p)
    n_tar = sum(1 for y in labels if y == 1)
    n_non = len(labels) - n_tar
    misses = sum(1 for s, y in zip(llrs, labels) if y == 1 and s < threshold)
    fas = sum(1 for s, y in zip(llrs, labels) if y == 0 and s >= threshold)
    cost = p * misses / n_tar + (1 - p) * fas / n_non
    return cost / min(p, 1 - p)


def rocch_llrs(scores, labels):
    """The optimal monotone LLR of each distinct score from the ROC convex hull: walk
    the ROC from the highest score down (one point per distinct score), take the
    upper hull, and give the scores of a hull segment the log of its slope
    (target rate gained per non-target rate)."""
    n_tar = sum(labels)
    n_non = len(labels) - n_tar
    distinct = sorted(set(scores), reverse=True)
    # ROC points (non-target rate, target rate) after accepting each score group.
    points, blocks = [(0.0, 0.0)], []
    t = f = 0
    for s in distinct:
        dt = sum(1 for x, y in zip(scores, labels) if x == s and y == 1)
        df = sum(1 for x, y in zip(scores, labels) if x == s and y == 0)
        t, f = t + dt, f + df
        points.append((f / n_non, t / n_tar))
        blocks.append(s)
    # Upper convex hull by the monotone chain (points are sorted by x, then y).
    hull = [0]
    for i in range(1, len(points)):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = points[hull[-2]], points[hull[-1]]
            x3, y3 = points[i]
            if (x2 - x1) * (y3 - y1) - (y2 - y1) * (x3 - x1) >= 0:  # not a right turn
                hull.pop()
            else:
                break
        hull.append(i)
    llr = {}
    for a, b in zip(hull, hull[1:]):
        (x1, y1), (x2, y2) = points[a], points[b]
        slope = math.inf if x2 == x1 else (y2 - y1) / (x2 - x1)
        value = math.log(slope) if slope > 0 else -math.inf
        for k in range(a, b):  # the score groups accepted along this segment
            llr[blocks[k]] = value
    return [llr[s] for s in scores]


def reference_min_cllr(scores, labels) -> float:
    llrs = rocch_llrs(list(scores), list(labels))
    tar = [math.log2(1 + math.exp(-s)) if s > -math.inf else math.inf
           for s, y in zip(llrs, labels) if y == 1]  # fmt: skip
    non = [math.log2(1 + math.exp(s)) if s < math.inf else math.inf
           for s, y in zip(llrs, labels) if y == 0]  # fmt: skip
    return 0.5 * (sum(tar) / len(tar) + sum(non) / len(non))


def _random_trials(rng, n_tar, n_non, shift, ties=False):
    scores = np.r_[rng.normal(shift, 1, n_tar), rng.normal(0, 1, n_non)]
    if ties:
        scores = np.round(scores, 1)
    labels = np.r_[np.ones(n_tar, int), np.zeros(n_non, int)]
    order = rng.permutation(len(labels))
    return scores[order], labels[order]


CASES = [  # (targets, non-targets, separation, tied scores)
    (20, 60, 1.5, False),
    (50, 50, 0.5, True),
    (7, 90, 3.0, False),
    (30, 30, 0.0, True),
    (10, 10, 8.0, False),  # separated: minCllr 0
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_cllr_min_cllr_and_act_dcf_match_the_references(case):
    rng = np.random.default_rng(case)
    scores, labels = _random_trials(rng, *CASES[case])
    assert metrics.cllr(scores, labels) == pytest.approx(
        reference_cllr(scores, labels), rel=1e-12
    )
    assert metrics.min_cllr(scores, labels) == pytest.approx(
        reference_min_cllr(scores, labels), rel=1e-9, abs=1e-12
    )
    for p in (0.5, 0.05, 0.01):
        assert metrics.act_dcf(scores, labels, p) == pytest.approx(
            reference_act_dcf(scores, labels, p), rel=1e-12
        )


def test_hand_computed_values():
    # LLR 0 everywhere: each trial costs one bit, Cllr 1.
    labels = np.array([1, 0, 1, 0])
    assert metrics.cllr(np.zeros(4), labels) == pytest.approx(1.0)
    # Targets 2, 1 and non-targets 0, -1 are separated: PAV gives +inf and -inf,
    # minCllr 0. As LLRs at p = 0.5 (threshold 0) the non-target at 0 is accepted:
    # P_fa 1/2, cost 0.5 * 1/2 / 0.5 = 0.5.
    scores, labels = np.array([2.0, 1.0, 0.0, -1.0]), np.array([1, 1, 0, 0])
    assert metrics.min_cllr(scores, labels) == 0.0
    assert metrics.act_dcf(scores, labels, 0.5) == pytest.approx(0.5)
    # One target, one non-target, both at 0.3 (a tie): PAV pools them at the prior,
    # LLR 0, minCllr 1.
    assert metrics.min_cllr(np.array([0.3, 0.3]), np.array([1, 0])) == 1.0


def test_pav_llrs_are_monotone_and_reach_min_dcf_at_every_operating_point():
    """The best monotone calibration decides at the ROC convex hull, so its actual
    DCF is the minimum over thresholds: ESPnet's minDCF (no ties here)."""
    from espnet2.utils.eer import ComputeErrorRates, ComputeMinDcf

    rng = np.random.default_rng(7)
    scores, labels = _random_trials(rng, 40, 200, 1.2)
    pav = metrics.pav_llrs(scores, labels)
    ordered = pav[np.argsort(scores)]
    assert np.all(ordered[1:] >= ordered[:-1])
    fnrs, fprs, thresholds = ComputeErrorRates(scores, labels)
    for p in (0.3, 0.05, 0.01):
        min_dcf = ComputeMinDcf(fnrs, fprs, thresholds, p, 1, 1)[0]
        assert metrics.act_dcf(pav, labels, p) == pytest.approx(min_dcf, abs=1e-12)


def test_calibration_loss_is_not_negative_and_vanishes_for_calibrated_llrs():
    """Cllr >= minCllr always; for LLRs that are exact (two Gaussians of equal
    variance, LLR = shift * x - shift^2 / 2) the gap is small at many trials."""
    rng = np.random.default_rng(11)
    shift = 2.0
    x, labels = _random_trials(rng, 4000, 4000, shift)
    llrs = shift * x - shift**2 / 2
    gap = metrics.cllr(llrs, labels) - metrics.min_cllr(llrs, labels)
    assert 0 <= gap < 0.01
    # A scaled copy is miscalibrated: same minCllr, larger Cllr.
    assert metrics.min_cllr(3 * llrs, labels) == pytest.approx(
        metrics.min_cllr(llrs, labels)
    )
    assert metrics.cllr(3 * llrs, labels) > metrics.cllr(llrs, labels) + 0.1
