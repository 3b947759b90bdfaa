"""Precision and recall of the flagged utterances against the known label noise.

``python -m espnet_plugin_intertopk.cleaning.evaluation REPORT NOISE_TRUTH
[--thresholds 30 45 60 75 90]`` reads the cleaning tool's ``report.tsv`` and the
synthetic corpus's ``noise_truth`` (``<utt> <true speaker> <given speaker>``) and
prints, per threshold on the angle to the dominant sub-center, how many utterances
would be flagged, the precision (flagged that are mislabeled) and the recall
(mislabeled that are flagged). Training data and its noise truth only: never the test
set. It writes nothing; a user's mistake is one line on stderr (exit status 2 for the
command line, 1 for the data).
"""

import argparse
import math
from pathlib import Path
from typing import Dict, List, Sequence, Set

from espnet_plugin_intertopk.recipe.kaldi_data import read_map
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly

PROG = "python -m espnet_plugin_intertopk.cleaning.evaluation"


def read_angles(report: Path) -> Dict[str, float]:
    lines = Path(report).read_text().splitlines()
    header = lines[0].split("\t") if lines else []
    if "angle_dominant_deg" not in header:
        raise UserError(
            f"{report}: not a cleaning report (no angle_dominant_deg column)"
        )
    col = header.index("angle_dominant_deg")
    angles = {}
    for n, row in enumerate(lines[1:], 2):
        if not row:
            continue
        cells = row.split("\t")
        try:
            angles[cells[0]] = float(cells[col])
        except (IndexError, ValueError):
            raise UserError(f"{report}:{n}: no angle in {row!r}") from None
    return angles


def read_noisy(noise_truth: Path) -> Set[str]:
    return set(read_map(noise_truth))


def precision_recall(
    angles: Dict[str, float], noisy: Set[str], thresholds: Sequence[float]
) -> List[Dict[str, float]]:
    """One row per threshold: flagged count, precision and recall (NaN precision
    when nothing is flagged)."""
    unknown = noisy - set(angles)
    if unknown:
        raise UserError(
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


@exits_cleanly(PROG)
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("noise_truth", type=Path)
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[30, 45, 60, 75, 90]
    )
    a = parser.parse_args(argv)
    for path in (a.report, a.noise_truth):
        if not path.is_file():
            raise UserError(f"{path}: no such file", status=2)
    bad = [t for t in a.thresholds if not (math.isfinite(t) and 0 < t < 180)]
    if bad:
        raise UserError(
            f"--thresholds must be angles in (0, 180) degrees, got {bad[0]}", status=2
        )
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
