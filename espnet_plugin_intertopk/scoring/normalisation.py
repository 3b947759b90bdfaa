"""Cosine scores and their adaptive symmetric normalisation (AS-norm) against a
cohort of speaker-mean embeddings."""

from typing import Dict, List, Sequence, Tuple

import numpy as np

# AS-norm's top_n (and the cohort quality measure's): at least two scores per side,
# since one score has no spread and every normalised score would be NaN.
MIN_TOP_N = 2


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


def cohort_top_stats(
    emb: Dict[str, np.ndarray], utts: Sequence[str], cohort: np.ndarray, top_n: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each utterance's ``top_n`` highest cosine
    scores against the cohort (AS-norm's statistics; the mean is also a quality
    measure of calibration)."""
    if not MIN_TOP_N <= top_n <= cohort.shape[0]:
        raise ValueError(
            f"top_n must be in [{MIN_TOP_N}, {cohort.shape[0]}], got {top_n}"
        )
    against = np.stack([emb[u] for u in utts]) @ cohort.T
    top = -np.sort(-against, axis=1)[:, :top_n]
    return top.mean(1), top.std(1)


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
    mean, std = cohort_top_stats(emb, utts, cohort, top_n)
    a = np.array([row[x] for x, _ in pairs])
    b = np.array([row[y] for _, y in pairs])
    s = cosine_scores(emb, pairs)
    return 0.5 * ((s - mean[a]) / std[a] + (s - mean[b]) / std[b])
