"""Cosine scoring of trial lists, EER and minDCF with ESPnet's helpers, RESULTS.md.

``python -m espnet_plugin_intertopk.recipe.scoring --trial_label data/test/trial_label
--results RESULTS.md exp/a/embed/test_embeddings.npz exp/b/embed/test_embeddings.npz``
writes one Markdown table row per embeddings file (named after its experiment).
"""

import argparse
import datetime
import platform
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from espnet2.utils.eer import ComputeErrorRates, ComputeMinDcf, tuneThresholdfromScore

P_TARGETS = (0.05, 0.01)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 2:  # ESPnet stores num_eval crops per utterance: average them
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        v = v.mean(0)
    return v / np.linalg.norm(v)


def score_trials(
    embeddings: Dict[str, np.ndarray], trial_label: Path
) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine score and 0/1 label of every trial ``uttA*uttB label``."""
    unit = {k: _unit(v) for k, v in embeddings.items()}
    scores, labels = [], []
    for line in Path(trial_label).read_text().splitlines():
        key, label = line.split()
        a, b = key.split("*")
        scores.append(float(unit[a] @ unit[b]))
        labels.append(int(label))
    return np.array(scores), np.array(labels)


def error_rates(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """EER (%) and minDCF at each of P_TARGETS (c_miss = c_fa = 1)."""
    out = {"eer": float(tuneThresholdfromScore(scores, labels, [1, 0.1])[1])}
    fnrs, fprs, thresholds = ComputeErrorRates(scores, labels)
    for p in P_TARGETS:
        out[f"mindcf@{p}"] = float(ComputeMinDcf(fnrs, fprs, thresholds, p, 1, 1)[0])
    return out


def results_table(rows: List[Tuple[str, Dict[str, float]]], n_trials: int) -> str:
    head = (
        "| model | EER (%) | " + " | ".join(f"minDCF (p={p})" for p in P_TARGETS) + " |"
    )
    sep = "|---|---:|" + "---:|" * len(P_TARGETS)
    body = [
        f"| {name} | {r['eer']:.2f} | "
        + " | ".join(f"{r[f'mindcf@{p}']:.4f}" for p in P_TARGETS)
        + " |"
        for name, r in rows
    ]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            "# RESULTS",
            "",
            f"- date: {stamp}",
            f"- machine: {platform.node()} ({cpu})",
            f"- trials: {n_trials}, cosine scoring",
            "",
            head,
            sep,
            *body,
            "",
        ]
    )


def experiment_name(npz: Path) -> str:
    """exp/<name>/embed/test_embeddings.npz -> <name>."""
    return npz.parent.parent.name


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "embeddings", nargs="+", type=Path, help="<set>_embeddings.npz files"
    )
    parser.add_argument("--trial_label", type=Path, required=True)
    parser.add_argument(
        "--results", type=Path, required=True, help="Markdown file to write"
    )
    args = parser.parse_args(argv)
    rows = []
    for npz in args.embeddings:
        scores, labels = score_trials(dict(np.load(npz)), args.trial_label)
        rows.append((experiment_name(npz), error_rates(scores, labels)))
    table = results_table(rows, len(labels))
    args.results.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
