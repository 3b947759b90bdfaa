"""What the sub-center cleaning writes: the per-utterance report, the summary, the
angle histogram and the cleaned Kaldi-style data directory, each file atomically."""

import json
import logging
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from espnet_plugin_intertopk.cleaning.subcenters import SubcenterResult
from espnet_plugin_intertopk.recipe.kaldi_data import write_lines, write_speaker_dir
from espnet_plugin_intertopk.safe_io import atomic

HISTOGRAM_EDGES_DEG = np.arange(0, 185, 5)  # 5-degree bins over [0, 180]


def flagged(result: SubcenterResult, threshold_deg: float) -> torch.Tensor:
    """(N,) True where the angle to the class's dominant sub-center exceeds the
    threshold."""
    return result.dominant_angle_deg > threshold_deg


def write_report(
    path: Path,
    utts: Sequence[str],
    speakers: Sequence[str],
    result: SubcenterResult,
    drop: torch.Tensor,
) -> None:
    """report.tsv: one row per utterance."""
    own, dom = result.closest_own.tolist(), result.dominant_angle_deg.tolist()
    other, other_deg = result.other_class.tolist(), result.other_angle_deg.tolist()
    rows = ["utt\tlabel\tangle_dominant_deg\tclosest_own_subcenter"
            "\tclosest_other_label\tangle_other_deg\tflag"]  # fmt: skip
    for i, utt in enumerate(utts):
        label = speakers[int(result.labels[i])]
        other_label = speakers[other[i]] if other[i] >= 0 else "-"
        rows.append(
            f"{utt}\t{label}\t{dom[i]:.2f}\t{own[i]}\t{other_label}\t{other_deg[i]:.2f}"
            f"\t{'drop' if drop[i] else 'keep'}"
        )
    write_lines(path, rows)


def summarize(
    speakers: Sequence[str],
    result: SubcenterResult,
    drop: torch.Tensor,
    threshold_deg: float,
) -> Dict:
    labels = result.labels
    n_class = torch.bincount(labels, minlength=len(speakers))
    dropped = torch.bincount(labels[drop], minlength=len(speakers))
    present = n_class > 0
    emptied = present & (dropped == n_class)
    counts, _ = np.histogram(
        result.dominant_angle_deg.numpy(), bins=HISTOGRAM_EDGES_DEG
    )
    return {
        "threshold_deg": threshold_deg,
        "utterances": int(labels.numel()),
        "utterances_kept": int((~drop).sum()),
        "utterances_dropped": int(drop.sum()),
        "classes": int(present.sum()),
        "classes_kept": int((present & ~emptied).sum()),
        "classes_dropped": [speakers[c] for c in emptied.nonzero()[:, 0].tolist()],
        "dropped_fraction_per_class": {
            speakers[c]: round(float(dropped[c]) / float(n_class[c]), 4)
            for c in present.nonzero()[:, 0].tolist()
        },
        "angle_histogram_deg": {
            "edges": HISTOGRAM_EDGES_DEG.tolist(),
            "counts": counts.tolist(),
        },
        "dominant_subcenter_share": round(
            float(result.counts.gather(1, result.dominant[:, None]).sum())
            / max(1, int(labels.numel())),
            4,
        ),
    }


def plot_angles(path: Path, result: SubcenterResult, threshold_deg: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(result.dominant_angle_deg.numpy(), bins=HISTOGRAM_EDGES_DEG)
    ax.axvline(threshold_deg, color="tab:red", linestyle="--", label="threshold")
    ax.set_xlabel("angle to the class's dominant sub-center (degrees)")
    ax.set_ylabel("utterances")
    ax.legend()
    fig.tight_layout()
    with atomic.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def write_cleaned_dir(
    out: Path,
    utts: Sequence[str],
    speakers: Sequence[str],
    wavs: Dict[str, str],
    result: SubcenterResult,
    drop: torch.Tensor,
) -> List[str]:
    """The kept utterances as a Kaldi-style directory (classes left empty are gone);
    returns its speakers in spk2utt order."""
    kept: Dict[str, List[str]] = {}
    for i, utt in enumerate(utts):
        if not drop[i]:
            kept.setdefault(speakers[int(result.labels[i])], []).append(utt)
    for spk, spk_utts in sorted(kept.items()):
        if len(spk_utts) == 1:
            logging.warning(
                "speaker %s keeps a single utterance (%s)", spk, spk_utts[0]
            )
    write_speaker_dir(out, kept, wavs)
    return sorted(kept)


def write_summary(path: Path, summary: Dict) -> None:
    """summary.json; a NaN or Inf in it is an error (JSON has none)."""
    atomic.write_text(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
