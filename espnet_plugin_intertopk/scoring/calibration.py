"""Score calibration with quality measures (QMF): a linear logistic model that maps
a trial's (AS-normed) score and the quality of its two sides to a log-likelihood
ratio, fitted on calibration trials whose speakers the test never sees.

Quality measures of each side (QUALITY_MEASURES): ``duration`` (log seconds of the
utterance), ``norm`` (the length of its raw embedding, mean over its crops) and
``cohort`` (the mean of its ``top_n`` highest cosine scores against the cohort, the
statistic AS-norm subtracts). A trial's features are its score and, per measure, the
smaller and the larger value of its two sides (the anchors' min/max pair; their
difference and the log-ratio of durations are linear in these, so a linear model
has them too).

The fit: scikit-learn's LogisticRegression on standardised features with balanced
class weights, so that its log-odds are LLRs at prior 0.5 (its default L2 penalty,
C = 1 over the summed loss, only matters for small or separable sets).
"""

from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy as np

from espnet_plugin_intertopk.scoring.inputs import check_both_classes, names_among
from espnet_plugin_intertopk.scoring.normalisation import cohort_top_stats

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

QUALITY_MEASURES = ("duration", "norm", "cohort")
# Training-speaker trials (the anchors' way): every same-speaker pair of the
# utterances and this many different-speaker pairs per target pair, drawn at random.
NON_TARGETS_PER_TARGET = 10


def quality_measures(text: str) -> List[str]:
    """The names of ``--quality_measures`` (UserError, status 2, for another)."""
    return names_among(
        text, "--quality_measures", QUALITY_MEASURES, " ".join(QUALITY_MEASURES)
    )


def features(
    pairs: Sequence[Tuple[str, str]],
    scores: np.ndarray,
    measures: Dict[str, Dict[str, float]],
) -> np.ndarray:
    """(T, 1 + 2 M): each trial's score, then per measure (in the order of
    ``measures``: name -> value per utterance) the smaller and the larger of its
    two sides."""
    columns = [np.asarray(scores, dtype=np.float64)]
    for values in measures.values():
        a = np.array([values[x] for x, _ in pairs])
        b = np.array([values[y] for _, y in pairs])
        columns += [np.minimum(a, b), np.maximum(a, b)]
    return np.column_stack(columns)


def fit(x: np.ndarray, labels: np.ndarray, what: str) -> "Pipeline":
    """The calibration model of calibration trials' features ``x`` (UserError naming
    ``what`` when the trials are of one class)."""
    # Imported here: run.sh's up-front check reads QUALITY_MEASURES, and importing
    # scikit-learn would add most of a second to it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_both_classes(np.asarray(labels), what, "calibration trials")
    model = make_pipeline(
        StandardScaler(),
        # A tight tolerance: the default (1e-4) leaves LLRs ~1e-3 from the optimum.
        LogisticRegression(class_weight="balanced", tol=1e-8, max_iter=10000),
    )
    return model.fit(x, labels)


def llrs(model: "Pipeline", x: np.ndarray) -> np.ndarray:
    """Calibrated scores (natural-log LLRs) of trials' features ``x``."""
    return model.decision_function(x)


def training_speaker_trials(
    utt2spk: Dict[str, str], seed: int = 0
) -> Tuple[List[Tuple[str, str]], np.ndarray]:
    """Trials among ``utt2spk``'s utterances: every same-speaker pair and
    NON_TARGETS_PER_TARGET different-speaker pairs per target pair (all of them when
    there are fewer), drawn with ``seed``."""
    utts = sorted(utt2spk)
    spk = np.array([utt2spk[u] for u in utts])
    i, j = np.triu_indices(len(utts), k=1)
    same = spk[i] == spk[j]
    target = np.flatnonzero(same)
    non_target = np.flatnonzero(~same)
    n = min(len(non_target), NON_TARGETS_PER_TARGET * len(target))
    non_target = np.sort(np.random.default_rng(seed).choice(non_target, n, False))
    chosen = np.concatenate([target, non_target])
    pairs = [(utts[a], utts[b]) for a, b in zip(i[chosen], j[chosen])]
    labels = np.r_[np.ones(len(target), int), np.zeros(n, int)]
    return pairs, labels


def side_measures(
    names: Sequence[str],
    utts: Sequence[str],
    unit: Dict[str, np.ndarray],
    norm: Dict[str, float],
    cohort: np.ndarray,
    top_n: int,
    durations: Dict[str, float],
) -> Dict[str, Dict[str, float]]:
    """The quality measures ``names`` (of QUALITY_MEASURES) of each of ``utts``:
    name -> utterance -> value."""
    out: Dict[str, Dict[str, float]] = {}
    for name in names:
        if name == "duration":
            out[name] = {u: float(np.log(durations[u])) for u in utts}
        elif name == "norm":
            out[name] = {u: norm[u] for u in utts}
        elif name == "cohort":
            mean, _ = cohort_top_stats(unit, utts, cohort, top_n)
            out[name] = dict(zip(utts, mean.tolist()))
        else:
            raise ValueError(f"no quality measure {name!r}")
    return out
