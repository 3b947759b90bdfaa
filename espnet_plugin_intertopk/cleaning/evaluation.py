"""Precision and recall of the flagged utterances against the known label noise.

``python -m espnet_plugin_intertopk.cleaning.evaluation REPORT NOISE_TRUTH
[--thresholds 30 45 60 75 90]`` reads the cleaning tool's ``report.tsv`` and the
synthetic corpus's ``noise_truth`` (``<utt> <true speaker> <given speaker>``) and
prints, per threshold on the angle to the dominant sub-center, how many utterances
would be flagged, the precision (flagged that are mislabeled) and the recall
(mislabeled that are flagged). Training data and its noise truth only: never the test
set.
"""

import argparse
from pathlib import Path
from typing import Dict, List, Sequence, Set

from espnet_plugin_intertopk.recipe.kaldi_data import read_map


def read_angles(report: Path) -> Dict[str, float]:
    lines = Path(report).read_text().splitlines()
    header = lines[0].split("\t")
    col = header.index("angle_dominant_deg")
    return {r.split("\t")[0]: float(r.split("\t")[col]) for r in lines[1:] if r}


def read_noisy(noise_truth: Path) -> Set[str]:
    return set(read_map(noise_truth))


def precision_recall(
    angles: Dict[str, float], noisy: Set[str], thresholds: Sequence[float]
) -> List[Dict[str, float]]:
    """One row per threshold: flagged count, precision and recall (NaN precision
    when nothing is flagged)."""
    unknown = noisy - set(angles)
    if unknown:
        raise ValueError(
            f"{len(unknown)} mislabeled utterances are not in the report, e.g. "
            f"{sorted(unknown)[:3]}"
        )
    rows = []
    for t in thresholds:
        flagged = {u for u, a in angles.items() if a > t}
        hits = len(flagged & noisy)
        rows.append(
            {
                "threshold_deg": float(t),
                "flagged": len(flagged),
                "precision": hits / len(flagged) if flagged else float("nan"),
                "recall": hits / len(noisy) if noisy else float("nan"),
            }
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("noise_truth", type=Path)
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[30, 45, 60, 75, 90]
    )
    a = parser.parse_args(argv)
    noisy = read_noisy(a.noise_truth)
    rows = precision_recall(read_angles(a.report), noisy, sorted(set(a.thresholds)))
    print(f"{len(noisy)} mislabeled utterances\n")
    print("| threshold (deg) | flagged | precision | recall |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['threshold_deg']:g} | {r['flagged']} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} |"
        )


if __name__ == "__main__":
    main()
