"""Training curves of ESPnet runs, side by side: per logged step and per epoch.

Reads the statistics ESPnet writes to a run's ``train.log`` (the log line every
``log_interval`` steps and the ``epoch results`` line; with ``--training_diagnostics``
the ``diag_*`` statistics too) and writes a Markdown table (when each run left chance
level, its validation EER after the first quarter of training, its best), a JSON twin
with every parsed row, and one plot with a panel per statistic.

    python -m espnet_plugin_intertopk.recipe.training_curves \\
        --run plugin/0=exp/scale1000/mech_plugin/seed0 --run aam/0=... \\
        --out curves.md --json curves.json --plot curves.png
"""

import argparse
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly
from espnet_plugin_intertopk.safe_io.ownership import check_apart, check_output_files

PROG = "training_curves"

# "3epoch:train:41-60batch: ..." and "3epoch results: [train] ..., [valid] ...".
_STEP = re.compile(r"(\d+)epoch:train:(\d+)-(\d+)batch:(.*)$")
_EPOCH = re.compile(r"(\d+)epoch results: \[train\](.*?)(?:\[valid\](.*))?$")
# ESPnet sometimes drops the comma between two statistics ("0.986diag_mp_eff=0.0"),
# so a value ends where the next name begins.
_STAT = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*)=(-?(?:nan|inf|\d+(?:\.\d+)?(?:e[-+]\d+)?))"
)

CHANCE_EER = 40.0
PANELS = (
    ("valid_eer", "validation EER (%)"),
    ("loss", "training loss"),
    ("accuracy", "training accuracy"),
    ("diag_target_cos", "mean target cosine"),
    ("diag_hardneg_above", "hard negatives above the target"),
    ("diag_subcenter_switch", "dominant sub-center switches"),
    ("diag_encoder_grad_norm", "encoder gradient norm"),
    ("margin", "margin / mp_eff (dashed)"),
    ("optim0_lr0", "learning rate"),
)


def _stats(text: str) -> Dict[str, float]:
    return {k: float(v) for k, v in _STAT.findall(text)}


def parse_log(path: Path) -> Tuple[List[dict], List[dict]]:
    """(logged steps, epochs) of an ESPnet train.log. A logged step has ``epoch``,
    ``step`` (global index of its last batch) and its statistics; an epoch has
    ``epoch``, ``steps`` (its batches) and ``valid_<stat>`` for the validation ones.
    A run that was resumed logs an epoch again: the last record of each counts."""
    steps: Dict[Tuple[int, int], dict] = {}
    epochs: Dict[int, dict] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from err
    for line in lines:
        epoch_match = _EPOCH.search(line)
        if epoch_match:
            epoch = int(epoch_match.group(1))
            train = _stats(epoch_match.group(2))
            row = {"epoch": epoch, "steps": int(train.get("total_count", 0))}
            row.update({k: v for k, v in train.items() if k != "total_count"})
            valid = _stats(epoch_match.group(3) or "")
            row.update({f"valid_{k}": v for k, v in valid.items()})
            epochs[epoch] = row
            continue
        step_match = _STEP.search(line)
        if step_match:
            epoch, last = int(step_match.group(1)), int(step_match.group(3))
            steps[(epoch, last)] = {
                "epoch": epoch,
                "batch": last,
                **_stats(step_match.group(4)),
            }
    epoch_rows = [epochs[e] for e in sorted(epochs)]
    # total_count is cumulative over epochs: an epoch's own batches are the difference.
    per_epoch = {}
    for previous, row in zip([None] + epoch_rows[:-1], epoch_rows):
        per_epoch[row["epoch"]] = row["steps"] - (previous["steps"] if previous else 0)
    iters = max(per_epoch.values(), default=0)
    step_rows = []
    for (epoch, last), row in sorted(steps.items()):
        row["step"] = (epoch - 1) * iters + last
        step_rows.append(row)
    if not epoch_rows:
        raise UserError(
            f"{path}: no 'epoch results' line: not an ESPnet train.log "
            "of a run that finished an epoch"
        )
    return step_rows, epoch_rows


def summarise(epochs: Sequence[dict]) -> dict:
    """When a run left chance level and how far it got, on the validation trials."""
    eers = [(row["epoch"], row.get("valid_eer", math.nan)) for row in epochs]
    n = len(eers)
    quarter = max(1, math.ceil(n / 4))
    left = next((epoch for epoch, eer in eers if eer < CHANCE_EER), None)
    best_epoch, best = min(eers, key=lambda item: (math.isnan(item[1]), item[1]))
    return {
        "epochs": n,
        "steps": epochs[-1]["steps"],
        "first_epoch_below_40": left,
        "quarter_epoch": quarter,
        "valid_eer_at_quarter": eers[quarter - 1][1],
        "best_valid_eer": best,
        "best_epoch": best_epoch,
        "final_valid_eer": eers[-1][1],
    }


def _mean(rows: Sequence[dict], key: str, last_epoch: int) -> float:
    values = [r[key] for r in rows if key in r and r["epoch"] <= last_epoch]
    return sum(values) / len(values) if values else math.nan


# The --training_diagnostics statistics, averaged over the first quarter of training.
DIAGNOSTIC_COLUMNS = (
    ("target cos", "diag_target_cos", ".3f"),
    ("hard negatives above", "diag_hardneg_above", ".3f"),
    ("sub-center switches", "diag_subcenter_switch", ".3f"),
    ("encoder grad norm", "diag_encoder_grad_norm", ".3g"),
)


def markdown(runs: Dict[str, Tuple[List[dict], List[dict]]]) -> str:
    """One row per run; the diagnostics' columns only where a run logged them ("-"
    for a run that did not)."""
    logged = {key for _, epochs in runs.values() for row in epochs for key in row}
    diagnostics = [c for c in DIAGNOSTIC_COLUMNS if c[1] in logged]
    head = (
        "| run | steps | first epoch < 40 % EER | valid EER after 1/4 | best valid EER "
        "(epoch) |"
        + "".join(f" {title}, 1st 1/4 |" for title, _, _ in diagnostics)
        + "\n|---|---:|---:|---:|---:|"
        + "---:|" * len(diagnostics)
        + "\n"
    )
    lines = []
    for name, (_, epochs) in runs.items():
        s = summarise(epochs)
        q = s["quarter_epoch"]
        left = (
            "never" if s["first_epoch_below_40"] is None else s["first_epoch_below_40"]
        )
        cells = [
            name,
            str(s["steps"]),
            f"{left} / {s['epochs']}",
            f"{s['valid_eer_at_quarter']:.2f}",
            f"{s['best_valid_eer']:.2f} ({s['best_epoch']})",
        ]
        for _, key, fmt in diagnostics:
            value = _mean(epochs, key, q)
            cells.append("-" if math.isnan(value) else format(value, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def plot(runs: Dict[str, Tuple[List[dict], List[dict]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(PANELS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows))
    models = sorted({name.split("/")[0] for name in runs})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    styles = ["-", "--", ":", "-."]
    for ax, (key, title) in zip(axes.flat, PANELS):
        for name, (steps, epochs) in runs.items():
            model = name.split("/")[0]
            seeds = [n for n in runs if n.split("/")[0] == model]
            style = styles[seeds.index(name) % len(styles)]
            label = name if key == PANELS[0][0] else None
            if key == "valid_eer":
                per_epoch = max(1, epochs[0]["steps"])
                xs = [r["epoch"] * per_epoch for r in epochs]
                ys = [r.get("valid_eer", math.nan) for r in epochs]
            else:
                xs = [r["step"] for r in steps if key in r]
                ys = [r[key] for r in steps if key in r]
            ax.plot(xs, ys, style, color=colors[model], label=label, lw=1)
            if key == "margin":
                mp = [
                    (r["step"], r["diag_mp_eff"]) for r in steps if "diag_mp_eff" in r
                ]
                if mp:
                    ax.plot(*zip(*mp), "--", color=colors[model], lw=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
        if key == "diag_encoder_grad_norm":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic.write_bytes(out, buffer.getvalue())


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _run_spec(text: str) -> Tuple[str, Path, Path]:
    """(name, train.log, what the run's outputs must stay out of: the run directory
    when one is given, else the log)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UserError(f"--run '{text}': expected NAME=RUN_DIR_OR_TRAIN_LOG", status=2)
    path = Path(path)
    return (name, path / "train.log", path) if path.is_dir() else (name, path, path)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Training curves of ESPnet runs: a Markdown table, JSON, a plot.",
    )
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        help="NAME=RUN_DIR (or its train.log); NAME as model/seed "
        "draws the seeds of one model in one colour",
    )
    parser.add_argument("--out", type=Path, help="Markdown table")
    parser.add_argument("--json", type=Path, help="every parsed row, per run")
    parser.add_argument("--plot", type=Path, help="PNG with a panel per statistic")
    return parser


@exits_cleanly(PROG)
def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    args.run = [_run_spec(text) for text in args.run]
    names = [name for name, _, _ in args.run]
    if len(set(names)) != len(names):
        raise UserError("--run: each NAME once", status=2)
    outputs = {"--out": args.out, "--json": args.json, "--plot": args.plot}
    check_output_files(outputs)
    for option, path in outputs.items():
        if path is not None:
            check_apart(path, [run for _, _, run in args.run], option)
    runs = {name: parse_log(log) for name, log, _ in args.run}
    table = markdown(runs)
    if args.out:
        atomic.write_text(args.out, table)
    else:
        sys.stdout.write(table)
    if args.json:
        payload = {
            name: {"steps": s, "epochs": e, "summary": summarise(e)}
            for name, (s, e) in runs.items()
        }
        # NaN (a statistic a run never logged) as null: standard JSON.
        text = json.dumps(_nan_to_none(payload), indent=1, allow_nan=False)
        atomic.write_text(args.json, text + "\n")
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
