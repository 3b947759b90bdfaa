"""Summary of a scale experiment: test EER against the number of training speakers, from
the scoring JSON (``scoring.compare --json``) of each point, as Markdown and a plot.

``python -m espnet_plugin_intertopk.recipe.scale_summary --point 100=exp/scale100.json
--point 1000=exp/scale1000.json [--walltime exp/scale_walltime.tsv] --out summary.md
[--plot images/scale_curve.png] [--scoring asnorm|cosine] [--reference MODEL]
[--baselines "A B"]``

The Markdown has, per point (N training speakers), model and scoring: EER (%) and
minDCF (p = 0.05), mean ± std over the training seeds; the paired EER differences with
their 95 % bootstrap intervals (the reference minus each baseline, and every
difference in the JSON whose model is the reference or the plugin without LM,
``aamsoftmax_sc_topk``); and, with ``--walltime`` (lines
``point<TAB>model<TAB>seed<TAB>seconds``; a repeated (point, model, seed) counts
once, its last line), the training wall time of each point (the lines whose point is
``scale<N>``, of the point's models and seeds). The plot (``--scoring``'s scores)
shows, side by side, the mean EER of every model with the spread over seeds, and the
paired difference reference - baseline with its interval. Both are written
atomically, never over an input; a user's mistake is one line on stderr (exit status
2 for the command line, 1 for the data).

Reads JSON only: no ESPnet, no torch (matplotlib is imported for the plot alone).
"""

import argparse
import json
import math
import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import (
    UserError,
    exits_cleanly,
    space_separated_names,
)
from espnet_plugin_intertopk.safe_io.ownership import check_apart, check_output_files

PROG = "python -m espnet_plugin_intertopk.recipe.scale_summary"
# What scoring's compare.py --json writes into its files (compare's JSON_TOOL; not
# imported from there, which would import ESPnet), and what it wrote before it moved
# out of recipe/ (the recorded RESULTS_scale*.json).
SCORING_TOOLS = (
    "espnet_plugin_intertopk.scoring.compare",
    "espnet_plugin_intertopk.recipe.scoring",
)
# The plugin's loss without large-margin fine-tuning: its differences are also listed.
PLUGIN = "aamsoftmax_sc_topk"
DCF_P = "0.05"  # the minDCF shown


class Stat(NamedTuple):
    mean: float
    std: Optional[float]  # None for one seed


class Row(NamedTuple):
    seeds: List[int]
    eer: Stat  # %
    mindcf: Stat  # at p_target DCF_P


class Diff(NamedTuple):
    mean: float  # EER points, model minus baseline
    low: Optional[float]  # 95 % bootstrap interval; None without one
    high: Optional[float]


class Point(NamedTuple):
    n: int  # training speakers
    path: Path
    models: List[str]  # the trained models, in scoring's order
    norms: List[str]  # score normalisations, in scoring's order
    rows: Dict[Tuple[str, str], Row]  # (model, scoring), models then the floor
    diffs: Dict[Tuple[str, str, str], Diff]  # (model, baseline, scoring)


def parse_point(text: str) -> Tuple[int, Path]:
    """``N=path.json`` of ``--point``."""
    n, sep, path = text.partition("=")
    if not sep or not path or not n.strip().isdecimal() or int(n) < 1:
        raise UserError(
            f"--point {text!r}: expected N=path.json, N the number of training "
            "speakers (a whole number >= 1)",
            status=2,
        )
    return int(n), Path(path)


def _stat(entry: dict) -> Stat:
    mean, std = entry["mean"], entry["std"]
    if not isinstance(mean, (int, float)) or not (
        std is None or isinstance(std, (int, float))
    ):
        raise TypeError("mean and std must be numbers")
    return Stat(float(mean), None if std is None else float(std))


def _number(value) -> Optional[float]:
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _diff(d: dict) -> Diff:
    low, high = _number(d["low"]), _number(d["high"])
    if (low is None) != (high is None):
        raise ValueError("an interval with one end")
    return Diff(float(d["mean"]), low, high)


def load_point(n: int, path: Path) -> Point:
    """A point from its scoring JSON (UserError, status 1, when it cannot be read or is
    not scoring's)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: cannot read it as JSON (point {n}): {err}") from None
    if not isinstance(data, dict) or data.get("tool") not in SCORING_TOOLS:
        raise UserError(
            f"{path}: not a results file of scoring.compare --json (point {n}); give "
            "the file its --json option wrote"
        )
    try:
        rows = {}
        for norm, per_model in data["results"].items():
            for model, entry in per_model.items():
                rows[model, norm] = Row(
                    [int(s) for s in entry["seeds"]],
                    _stat(entry["eer_percent"]),
                    _stat(entry["mindcf_by_p_target"][DCF_P]),
                )
        diffs = {
            (str(d["model"]), str(d["baseline"]), str(d["scoring"])): _diff(d)
            for d in data["paired_eer_differences"]
        }
        models = [str(m) for m in data["models"]]
        norms = [str(s) for s in data["score_normalisations"]]
        if not norms:
            raise ValueError("no score normalisation")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise UserError(
            f"{path}: a malformed scoring result (point {n}): {what}"
        ) from None
    # By model (the trained ones as scoring lists them, then the floor), then scoring.
    model_order = list(dict.fromkeys([*models, *(m for m, _ in rows)]))
    norm_order = list(dict.fromkeys([*norms, *(s for _, s in rows)]))
    rows = dict(
        sorted(
            rows.items(),
            key=lambda kv: (model_order.index(kv[0][0]), norm_order.index(kv[0][1])),
        )
    )
    return Point(n, path, models, norms, rows, diffs)


def check_points(
    points: Sequence[Point], reference: str, baselines: List[str], scoring: str
) -> None:
    """Every point has the plotted scoring, the reference and each baseline, and the
    paired differences reference - baseline (UserError, status 1)."""
    for p in points:
        where = f"{p.path} (point {p.n})"
        if scoring not in p.norms:
            raise UserError(
                f"{where} has no {scoring} scores (it has {', '.join(p.norms)}): "
                f"give --scoring {p.norms[0]}, or score it with that normalisation"
            )
        for model in [reference, *baselines]:
            if (model, scoring) not in p.rows:
                raise UserError(
                    f"{where} has no model {model} (it has {' '.join(p.models)}): "
                    "give --reference and --baselines among them"
                )
        for base in baselines:
            if (reference, base, scoring) not in p.diffs:
                raise UserError(
                    f"{where} has no paired difference {reference} - {base} "
                    f"({scoring}): score it with --references {reference}"
                )


def read_walltime(path: Path) -> Dict[Tuple[str, str, str], float]:
    """(point, model, seed) -> seconds of a walltime file; the last line of a
    repeated (point, model, seed) counts."""
    runs: Dict[Tuple[str, str, str], float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read it: {err}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        seconds = None
        if len(parts) == 4 and all(x.strip() for x in parts[:3]):
            try:
                seconds = float(parts[3])
            except ValueError:
                pass
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            raise UserError(
                f"{path}:{number}: expected 'point<TAB>model<TAB>seed<TAB>seconds' "
                f"(seconds >= 0), got {line!r}"
            )
        key = tuple(x.strip() for x in parts[:3])
        runs.pop(key, None)  # the last line counts, in its place
        runs[key] = seconds
    return runs


def walltime_of(runs: Dict[Tuple[str, str, str], float], point: Point) -> List[float]:
    """Seconds of each run of ``point``: the lines whose point is scale<N>, whose
    model is one the point scored (its LM model is trained in the same run) and
    whose seed it scored; other experiments at that scale are left out."""
    models = {m[: -len("_lm")] if m.endswith("_lm") else m for m in point.models}
    seeds = {str(seed) for row in point.rows.values() for seed in row.seeds}
    return [
        s
        for (name, model, seed), s in runs.items()
        if name == f"scale{point.n}" and model in models and seed in seeds
    ]


def _cell(stat: Stat, digits: int) -> str:
    if stat.std is None:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _interval(d: Diff) -> str:
    return "none" if d.low is None else f"[{d.low:+.2f}, {d.high:+.2f}]"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def difference_pairs(
    points: Sequence[Point], reference: str, baselines: List[str]
) -> List[Tuple[str, str]]:
    """(model, baseline) of the differences table: the reference minus each baseline,
    then every other difference of the points whose model is the reference or
    PLUGIN."""
    pairs = [(reference, base) for base in baselines]
    for p in points:
        for model, base, _ in p.diffs:
            if model in (reference, PLUGIN) and (model, base) not in pairs:
                pairs.append((model, base))
    return pairs


def summary_markdown(
    points: Sequence[Point],
    reference: str,
    baselines: List[str],
    scoring: str,
    walltime: Optional[Dict[Tuple[str, str, str], float]],
    plot_link: Optional[str],
) -> str:
    """The summary: the points' EER and minDCF, the paired differences, wall time."""
    norms = list(dict.fromkeys(s for p in points for s in p.norms))
    lines = [
        "# Scale experiment",
        "",
        "- points: " + ", ".join(f"{p.n} training speakers ({p.path})" for p in points),
        f"- reference {reference}; baselines {', '.join(baselines)}",
    ]
    if plot_link is not None:
        lines += [
            f"- plot: {scoring} scores",
            "",
            f"![Test EER against the number of training speakers]({plot_link})",
        ]
    lines += [
        "",
        "## EER and minDCF, mean ± std over training seeds",
        "",
        "| training speakers | model | scoring | seeds | EER (%) | "
        f"minDCF (p={DCF_P}) |",
        "|---:|---|---|---|---:|---:|",
    ]
    for p in points:
        for (model, norm), row in p.rows.items():
            seeds = " ".join(map(str, row.seeds))
            lines.append(
                f"| {p.n} | {model} | {norm} | {seeds} | {_cell(row.eer, 2)} | "
                f"{_cell(row.mindcf, 4)} |"
            )
    lines += [
        "",
        "## Paired EER differences (negative: the model is better)",
        "",
        "| model | baseline | scoring | training speakers | mean EER difference "
        "(points) | 95 % bootstrap interval |",
        "|---|---|---|---:|---:|---|",
    ]
    for model, base in difference_pairs(points, reference, baselines):
        for norm in norms:
            for p in points:
                d = p.diffs.get((model, base, norm))
                if d is not None:
                    lines.append(
                        f"| {model} | {base} | {norm} | {p.n} | {d.mean:+.2f} | "
                        f"{_interval(d)} |"
                    )
    if walltime is not None:
        lines += [
            "",
            "## Training wall time",
            "",
            "| training speakers | runs | total (s) | total (h:mm:ss) | mean per run "
            "(s) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for p in points:
            runs = walltime_of(walltime, p)
            if runs:
                total = sum(runs)
                lines.append(
                    f"| {p.n} | {len(runs)} | {total:.0f} | {_clock(total)} | "
                    f"{total / len(runs):.0f} |"
                )
            else:
                lines.append(f"| {p.n} | 0 | none | none | none |")
    return "\n".join(lines) + "\n"


class Series(NamedTuple):
    label: str
    x: List[int]  # training speakers
    y: List[float]
    below: List[float]  # error bar lengths
    above: List[float]


def curve_series(
    points: Sequence[Point], reference: str, baselines: List[str], scoring: str
) -> Tuple[List[Series], List[Series]]:
    """What the plot draws: per trained model, mean EER with the std over seeds (0
    for one seed); per baseline, the paired difference reference - baseline with its
    interval (none without one)."""
    models = list(dict.fromkeys(m for p in points for m in p.models))
    left = []
    for model in models:
        rows = [
            (p.n, p.rows[model, scoring]) for p in points if (model, scoring) in p.rows
        ]
        spread = [r.eer.std or 0.0 for _, r in rows]
        left.append(
            Series(
                model,
                [n for n, _ in rows],
                [r.eer.mean for _, r in rows],
                spread,
                spread,
            )
        )
    right = []
    for base in baselines:
        diffs = [(p.n, p.diffs[reference, base, scoring]) for p in points]
        right.append(
            Series(
                base,
                [n for n, _ in diffs],
                [d.mean for _, d in diffs],
                [0.0 if d.low is None else d.mean - d.low for _, d in diffs],
                [0.0 if d.high is None else d.high - d.mean for _, d in diffs],
            )
        )
    return left, right


def draw(
    path: Path,
    left: List[Series],
    right: List[Series],
    ns: List[int],
    reference: str,
    scoring: str,
) -> None:
    """The two panels, saved as PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_eer, ax_diff = fig.subplots(1, 2)
    for ax, series, kind in ((ax_eer, left, "model"), (ax_diff, right, "baseline")):
        for i, s in enumerate(series):
            # Side by side at each N (a few percent apart on the log axis).
            shift = 10 ** (0.015 * (i - (len(series) - 1) / 2))
            ax.errorbar(
                [x * shift for x in s.x],
                s.y,
                yerr=[s.below, s.above],
                marker="o",
                capsize=3,
                label=s.label,
            )
        ax.set_xscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(min(ns) / 1.5, max(ns) * 1.5)
        ax.set_xlabel("training speakers")
        ax.grid(True, alpha=0.3)
        ax.legend(title=kind, fontsize="small", title_fontsize="small")
    ax_eer.set_ylabel(f"test EER (%), {scoring}")
    ax_eer.set_title("Test EER: mean ± std over training seeds")
    ax_diff.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax_diff.set_ylabel("EER difference (percentage points)")
    ax_diff.set_title(
        f"{reference} − baseline, 95 % bootstrap interval\n"
        f"(negative = {reference} better)"
    )
    with atomic.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--point",
        action="append",
        required=True,
        metavar="N=PATH",
        help="a point: N training speakers, the JSON of scoring.compare --json "
        "(repeat)",
    )
    parser.add_argument(
        "--walltime",
        type=Path,
        help="point<TAB>model<TAB>seed<TAB>seconds per run (local/scale.sh's)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the Markdown summary")
    parser.add_argument("--plot", type=Path, help="the plot (PNG)")
    parser.add_argument(
        "--scoring",
        choices=("asnorm", "cosine"),
        default="asnorm",
        help="the scores the plot shows",
    )
    parser.add_argument("--reference", default="aamsoftmax_sc_topk_lm")
    parser.add_argument(
        "--baselines",
        default="aamsoftmax aamsoftmax_sc_topk_espnet",
        help="space-separated models the reference is compared with",
    )
    return parser


def check_arguments(
    args: argparse.Namespace, points: List[Tuple[int, Path]], baselines: List[str]
) -> None:
    """What the command line alone can get wrong (UserError, status 2)."""
    seen: Dict[int, str] = {}
    for (n, path), text in zip(points, args.point):
        if n in seen:
            raise UserError(
                f"--point {text!r}: point {n} is given twice (also {seen[n]!r})",
                status=2,
            )
        seen[n] = text
        if not path.is_file():
            raise UserError(f"--point {text!r}: {path}: no such file", status=2)
    if args.reference in baselines:
        raise UserError(
            f"--baselines {args.baselines!r} names the reference {args.reference}",
            status=2,
        )
    if args.walltime is not None and not args.walltime.is_file():
        raise UserError(f"--walltime {args.walltime}: no such file", status=2)
    outputs = {"--out": args.out, "--plot": args.plot}
    check_output_files(outputs)
    inputs = [path for _, path in points]
    if args.walltime is not None:
        inputs.append(args.walltime)
    for option, path in outputs.items():
        if path is not None:
            check_apart(path, inputs, option)


@exits_cleanly(PROG)
def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    given = [parse_point(text) for text in args.point]
    baselines = space_separated_names(args.baselines, "--baselines")
    check_arguments(args, given, baselines)
    points = sorted((load_point(n, path) for n, path in given), key=lambda p: p.n)
    check_points(points, args.reference, baselines, args.scoring)
    walltime = None if args.walltime is None else read_walltime(args.walltime)
    link = None
    if args.plot is not None:
        link = Path(os.path.relpath(args.plot.resolve(), args.out.resolve().parent))
        left, right = curve_series(points, args.reference, baselines, args.scoring)
        draw(
            args.plot, left, right, [p.n for p in points], args.reference, args.scoring
        )
    text = summary_markdown(
        points,
        args.reference,
        baselines,
        args.scoring,
        walltime,
        None if link is None else link.as_posix(),
    )
    atomic.write_text(args.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
