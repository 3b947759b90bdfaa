"""Best validation EER of training runs, from the reporter in ESPnet's checkpoint.

``python -m espnet_plugin_intertopk.recipe.validation_summary exp/a/seed0 exp/b/seed0``
prints a Markdown table: run, best validation EER (the checkpoint ESPnet keeps as
``valid.eer.best.pth``), its epoch, and the last epoch. Reads the validation trials'
results only, never the test trials'.
"""

import argparse
from pathlib import Path
from typing import Tuple

import torch


def best_valid_eer(run: Path) -> Tuple[float, int, int]:
    """(best validation EER, its epoch (the first on ties), last epoch) of one run."""
    states = torch.load(
        Path(run) / "checkpoint.pth", map_location="cpu", weights_only=False
    )
    stats = states["reporter"]["stats"]
    epochs = {e: float(s["valid"]["eer"]) for e, s in stats.items() if "valid" in s}
    if not epochs:
        raise ValueError(f"{run}: no validation results")
    best = min(epochs, key=lambda e: (epochs[e], e))
    return epochs[best], best, max(epochs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output dirs")
    args = parser.parse_args(argv)
    print("| run | best validation EER (%) | at epoch | epochs |")
    print("|---|---:|---:|---:|")
    for run in args.runs:
        eer, epoch, last = best_valid_eer(run)
        print(f"| {run} | {eer:.2f} | {epoch} | {last} |")


if __name__ == "__main__":
    main()
