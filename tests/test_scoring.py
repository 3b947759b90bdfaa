"""EER and minDCF (ESPnet's helpers, through the recipe's scoring) on score lists
whose answers are worked out by hand."""

import numpy as np
import pytest

from espnet_plugin_intertopk.recipe.scoring import error_rates


def test_one_target_below_one_non_target():
    # Targets 0.9 0.8 0.7 0.3, non-targets 0.6 0.2 0.1 0.0. A threshold in (0.3, 0.6]
    # misses one target of four and accepts one non-target of four: EER 25 %. The
    # cheapest threshold at low prior is just above 0.6: one miss, no false alarm, so
    # minDCF = p * 1/4 / min(p, 1 - p) = 0.25 for p = 0.05 and p = 0.01.
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    got = error_rates(scores, labels)
    assert got["eer"] == pytest.approx(25.0)
    assert got["mindcf@0.05"] == pytest.approx(0.25)
    assert got["mindcf@0.01"] == pytest.approx(0.25)


def test_separated_scores_have_no_errors():
    scores = np.array([0.9, 0.8, 0.1, 0.0, -0.5])
    labels = np.array([1, 1, 0, 0, 0])
    got = error_rates(scores, labels)
    assert got == {"eer": 0.0, "mindcf@0.05": 0.0, "mindcf@0.01": 0.0}


def test_reversed_scores_miss_everything():
    scores = np.array([0.0, 0.1, 0.8, 0.9])
    labels = np.array([1, 1, 0, 0])
    got = error_rates(scores, labels)
    assert got["eer"] == pytest.approx(100.0)
    # Rejecting everything costs p / min(p, 1 - p) = 1: no threshold does better.
    assert got["mindcf@0.05"] == pytest.approx(1.0)
