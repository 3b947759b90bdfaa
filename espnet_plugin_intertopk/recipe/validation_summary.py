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

from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly

PROG = "validation_summary"


def best_valid_eer(run: Path) -> Tuple[float, int, int]:
    """(best validation EER, its epoch (the first on ties), last epoch) of one run."""
    path = Path(run) / "checkpoint.pth"
    try:
        states = torch.load(path, map_location="cpu", weights_only=False)
        stats = states["reporter"]["stats"]
    except OSError:
        raise  # one line from exits_cleanly: missing, unreadable, a directory
    except Exception as err:  # noqa: BLE001 - any reader error: unusable
        raise UserError(f"{path}: cannot read it as a checkpoint (truncated?)") from err
    epochs = {e: float(s["valid"]["eer"]) for e, s in stats.items() if "valid" in s}
    if not epochs:
        raise UserError(f"{run}: no validation results")
    best = min(epochs, key=lambda e: (epochs[e], e))
    return epochs[best], best, max(epochs)


@exits_cleanly(PROG)
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output dirs")
    args = parser.parse_args(argv)
    print("| run | best validation EER (%) | at epoch | epochs |")
    print("|---|---:|---:|---:|")
    for run in args.runs:
        eer, epoch, last = best_valid_eer(run)
        print(f"| {run} | {eer:.2f} | {epoch} | {last} |")


if __name__ == "__main__":
    main()
