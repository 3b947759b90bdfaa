"""The scale experiment's summary on the scoring JSON of three points, each made by the
real scoring command on test_scoring's hand-made embeddings: its Markdown holds the
JSON's numbers, its plot is a PNG of what the JSON says, its wall time follows the
last-line rule, and a user's mistake is one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from espnet_plugin_intertopk.recipe import scale_summary
from espnet_plugin_intertopk.scoring import compare as scoring

from test_scoring import SYSTEMS, _edit_npz, write_experiment

LM, PLUGIN = "aamsoftmax_sc_topk_lm", "aamsoftmax_sc_topk"
ESPNET, AAM = "aamsoftmax_sc_topk_espnet", "aamsoftmax"
MODELS = [LM, PLUGIN, ESPNET, AAM]
# Training seeds of each point: one seed (no spread) at the smallest.
POINTS = {100: (0,), 300: (0, 1), 1000: (0, 1, 2)}
# test_scoring's hand-made score sets, dealt out differently at each point.
SPECS = [spec for system, spec in SYSTEMS.items() if system[0] != "floor"]


@pytest.fixture(scope="module")
def points(tmp_path_factory):
    """N -> the scoring JSON of that point (reference: LM and PLUGIN)."""
    root = tmp_path_factory.mktemp("scale")
    out = {}
    for i, (n, seeds) in enumerate(POINTS.items()):
        systems = {
            (model, seed): SPECS[(i + j + seed) % len(SPECS)]
            for j, model in enumerate(MODELS)
            for seed in seeds
        }
        systems["floor", 0] = SYSTEMS["floor", 0]
        argv, _ = write_experiment(root / f"scale{n}", systems)
        # Speaker B's best target score also on a non-target trial of LM, seed 0:
        # B's trials differ from A's, so the bootstrap intervals of LM have a width.
        emb = root / f"scale{n}/exp/{LM}/seed0/embed/test_embeddings.npz"
        _edit_npz(emb, **{"B-n0": np.load(emb)["B-t0"]})
        out[n] = root / f"scale{n}.json"
        scoring.main(argv + ["--references", f"{LM} {PLUGIN}", "--json", str(out[n])])
    return out


def _argv(points, tmp_path, *extra):
    # Given out of order: the summary sorts the points.
    return [
        *(x for n in (300, 100, 1000) for x in ("--point", f"{n}={points[n]}")),
        "--out", str(tmp_path / "summary.md"),
        "--plot", str(tmp_path / "images" / "scale_curve.png"),
        *extra,
    ]  # fmt: skip


def _table(text: str, title: str):
    part = text.split(f"## {title}", 1)[1].split("\n#", 1)[0]
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in part.splitlines()
        if line.startswith("| ") and not line.startswith(("| training", "| model"))
    ]


def _cell(entry: dict, digits: int) -> str:
    if entry["std"] is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


@pytest.fixture(scope="module")
def summary(points, tmp_path_factory):
    """The summary of the three points (plot included) and the JSON of each."""
    tmp = tmp_path_factory.mktemp("summary")
    (tmp / "images").mkdir()
    scale_summary.main(_argv(points, tmp))
    data = {n: json.loads(path.read_text()) for n, path in points.items()}
    return (tmp / "summary.md").read_text(), data, tmp


def test_the_table_holds_the_numbers_of_the_jsons(summary):
    text, data, _ = summary
    rows = _table(text, "EER and minDCF")
    want = []
    for n in sorted(data):
        results = data[n]["results"]
        for model in [*MODELS, scoring.FLOOR]:
            for norm in ("cosine", "asnorm"):
                if model not in results[norm]:
                    continue
                entry = results[norm][model]
                want.append(
                    [str(n), model, norm, " ".join(map(str, entry["seeds"])),
                     _cell(entry["eer_percent"], 2),
                     _cell(entry["mindcf_by_p_target"]["0.05"], 4)]
                )  # fmt: skip
    assert rows == want
    assert len(rows) == 3 * (2 * len(MODELS) + 1)
    # The one-seed point shows no spread; the others do.
    assert rows[0][:4] == ["100", LM, "cosine", "0"] and "±" not in rows[0][4]
    assert rows[-1][:4] == ["1000", scoring.FLOOR, "cosine", "0"]
    assert [r[3] for r in rows if r[0] == "1000"][0] == "0 1 2" and "±" in rows[-2][4]
    assert "![Test EER against the number of training speakers]" in text
    assert "(images/scale_curve.png)" in text


def test_the_differences_are_the_jsons_and_the_reference_pairs_come_first(summary):
    text, data, _ = summary
    rows = _table(text, "Paired EER differences")
    got = {tuple(r[:4]): r[4:] for r in rows}
    assert len(got) == len(rows)  # no row twice
    want = {}
    for n, d in data.items():
        for diff in d["paired_eer_differences"]:
            interval = f"[{diff['low']:+.2f}, {diff['high']:+.2f}]"
            key = (diff["model"], diff["baseline"], diff["scoring"], str(n))
            want[key] = [f"{diff['mean']:+.2f}", interval]
    # Every difference of the JSONs has LM or PLUGIN as its model: all are shown.
    assert got == want and len(want) == 3 * 2 * 6
    # The reference minus each baseline first, each over the points in order.
    assert [tuple(r[:4]) for r in rows[:12]] == [
        (LM, base, norm, str(n))
        for base in (AAM, ESPNET)
        for norm in ("cosine", "asnorm")
        for n in (100, 300, 1000)
    ]


def test_the_plot_is_a_png_of_the_jsons_numbers(summary, points):
    _, data, tmp = summary
    from matplotlib.image import imread

    png = tmp / "images" / "scale_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    image = imread(png)
    assert image.shape[:2] == (480, 1200)  # 12 x 4.8 inches at 100 dpi
    assert image.shape[2] in (3, 4) and image[..., :3].std() > 0.05  # not blank
    assert [p.name for p in png.parent.iterdir()] == ["scale_curve.png"]
    loaded = [scale_summary.load_point(n, points[n]) for n in sorted(points)]
    left, right = scale_summary.curve_series(loaded, LM, [AAM, ESPNET], "asnorm")
    assert [s.label for s in left] == MODELS and [s.label for s in right] == [
        AAM,
        ESPNET,
    ]
    for s in left:
        entries = [data[n]["results"]["asnorm"][s.label]["eer_percent"] for n in data]
        assert s.x == [100, 300, 1000]
        assert s.y == [e["mean"] for e in entries]
        assert s.below == s.above == [e["std"] or 0.0 for e in entries]
        assert s.below[0] == 0.0  # one seed at 100
    for s in right:
        diffs = [
            next(
                d
                for d in data[n]["paired_eer_differences"]
                if (d["model"], d["baseline"], d["scoring"]) == (LM, s.label, "asnorm")
            )
            for n in data
        ]
        assert s.y == [d["mean"] for d in diffs]
        assert s.below == pytest.approx([d["mean"] - d["low"] for d in diffs])
        assert s.above == pytest.approx([d["high"] - d["mean"] for d in diffs])
    assert any(x > 0 for s in right for x in s.below + s.above)  # intervals drawn


def test_the_plotted_interval_is_not_turned_around():
    """An interval that is not symmetric about its mean (those of the hand-made
    points are) keeps its sides; none at all is drawn as no bar."""
    Row, Stat, Diff = scale_summary.Row, scale_summary.Stat, scale_summary.Diff
    rows = {(m, "asnorm"): Row([0], Stat(10.0, None), Stat(0.1, None)) for m in "rb"}
    diffs = {("r", "b", "asnorm"): Diff(-1.0, -4.0, 0.5)}
    at_10 = scale_summary.Point(10, Path("x"), ["r", "b"], ["asnorm"], rows, diffs)
    no_interval = {("r", "b", "asnorm"): Diff(2.0, None, None)}
    at_20 = at_10._replace(n=20, diffs=no_interval)
    _, (right,) = scale_summary.curve_series([at_10, at_20], "r", ["b"], "asnorm")
    assert right == ("b", [10, 20], [-1.0, 2.0], [3.0, 0.0], [1.5, 0.0])


def test_walltime_sums_count_the_last_line_of_a_repeated_run(points, tmp_path):
    walltime = tmp_path / "scale_walltime.tsv"
    walltime.write_text(
        f"scale100\t{PLUGIN}\t0\t100\n"
        f"scale100\t{AAM}\t0\t50\n"
        f"scale100_grouped\t{AAM}\t0\t9999\n"  # another point
        f"scale100\t{PLUGIN}\t0\t130\n"  # the same run again: this line counts
        f"scale100\tablation_K1\t0\t7777\n"  # another experiment at this scale
        f"scale100\t{AAM}\t5\t8888\n"  # a seed this point did not score
        "\n"
        f"scale300\t{AAM}\t0\t3600\n"
        f"scale300\t{AAM}\t1\t3700.4\n"
        f"scale3000\t{AAM}\t1\t5\n"  # another point
    )
    (tmp_path / "images").mkdir()
    scale_summary.main(_argv(points, tmp_path, "--walltime", str(walltime)))
    rows = _table((tmp_path / "summary.md").read_text(), "Training wall time")
    assert rows == [
        ["100", "2", "180", "0:03:00", "90"],
        ["300", "2", "7300", "2:01:40", "3650"],
        ["1000", "0", "none", "none", "none"],
    ]


def test_without_a_plot_or_walltime(points, tmp_path):
    argv = _argv(points, tmp_path, "--scoring", "cosine")
    scale_summary.main(argv[: argv.index("--plot")] + argv[argv.index("--plot") + 2 :])
    text = (tmp_path / "summary.md").read_text()
    assert "![" not in text and "## Training wall time" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _cosine_only(data):
    data["score_normalisations"] = ["cosine"]
    del data["results"]["asnorm"]


BAD = {
    # name: (extra or replaced arguments, change to the 100 point's JSON, status,
    # message); {tmp}: the test's directory, {p100}: the 100 point's JSON there.
    "a point without =": (
        ["--point", "100"], None, 2,
        "--point '100': expected N=path.json, N the number of training speakers (a "
        "whole number >= 1)",
    ),
    "a point whose N is no number": (
        ["--point", "many={p100}"], None, 2,
        "--point 'many={p100}': expected N=path.json, N the number of training "
        "speakers (a whole number >= 1)",
    ),
    "a point with N 0": (
        ["--point", "0={p100}"], None, 2,
        "--point '0={p100}': expected N=path.json, N the number of training speakers "
        "(a whole number >= 1)",
    ),
    "a point twice": (
        ["--point", "100={p100}"], None, 2,
        "--point '100={p100}': point 100 is given twice (also '100={p100}')",
    ),
    "a missing file": (
        ["--point", "30={tmp}/none.json"], None, 2,
        "--point '30={tmp}/none.json': {tmp}/none.json: no such file",
    ),
    "unreadable JSON": (
        [], lambda p: p.write_text("{not json"), 1,
        "{p100}: cannot read it as JSON (point 100): Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    "JSON of something else": (
        [], lambda p: p.write_text("[1, 2]"), 1,
        "{p100}: not a results file of scoring.compare --json (point 100); give the "
        "file its --json option wrote",
    ),
    "a scoring JSON without results": (
        [], lambda p: _edit_json(p, lambda d: d.pop("results")), 1,
        "{p100}: a malformed scoring result (point 100): no 'results'",
    ),
    "a model missing from a point": (
        ["--baselines", f"{AAM} resnet"], None, 1,
        f"{{p100}} (point 100) has no model resnet (it has {' '.join(MODELS)}): give "
        "--reference and --baselines among them",
    ),
    "the reference missing from a point": (
        [], lambda p: _edit_json(p, lambda d: d["results"]["asnorm"].pop(LM)), 1,
        f"{{p100}} (point 100) has no model {LM} (it has {' '.join(MODELS)}): give "
        "--reference and --baselines among them",
    ),
    "a point without the plotted scoring": (
        [], lambda p: _edit_json(p, _cosine_only), 1,
        "{p100} (point 100) has no asnorm scores (it has cosine): give --scoring "
        "cosine, or score it with that normalisation",
    ),
    "a baseline without its difference": (
        ["--reference", ESPNET, "--baselines", AAM], None, 1,
        f"{{p100}} (point 100) has no paired difference {ESPNET} - {AAM} (asnorm): "
        f"score it with --references {ESPNET}",
    ),
    "the reference among the baselines": (
        ["--baselines", f"{AAM} {LM}"], None, 2,
        f"--baselines '{AAM} {LM}' names the reference {LM}",
    ),
    "a malformed walltime line": (
        ["--walltime", "{tmp}/walltime.tsv"], None, 1,
        "{tmp}/walltime.tsv:2: expected 'point<TAB>model<TAB>seed<TAB>seconds' "
        "(seconds >= 0), got 'scale100 aamsoftmax 0 12'",
    ),
    "the summary over an input": (
        ["--out", "{p100}"], None, 2,
        "--out {p100} overlaps the input {p100}: a tool never writes into its "
        "inputs; give an output path outside them",
    ),
    "the plot in a missing directory": (
        ["--plot", "{tmp}/nowhere/curve.png"], None, 2,
        "--plot {tmp}/nowhere/curve.png: directory {tmp}/nowhere does not exist",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_mistake_is_one_line(name, points, tmp_path, capsys):
    extra, edit, status, message = BAD[name]
    for path in points.values():  # the tests' own copies
        shutil.copy(path, tmp_path / path.name)
    p100 = tmp_path / points[100].name
    (tmp_path / "walltime.tsv").write_text(
        f"scale100\t{AAM}\t1\t10\nscale100 aamsoftmax 0 12\n"
    )
    if edit is not None:
        edit(p100)
    fill = {"tmp": tmp_path, "p100": p100}
    copies = {n: tmp_path / p.name for n, p in points.items()}
    argv = [
        *(x for n, p in copies.items() for x in ("--point", f"{n}={p}")),
        "--out", str(tmp_path / "summary.md"),
        "--plot", str(tmp_path / "curve.png"),
    ]  # fmt: skip
    for option, value in zip(extra[::2], extra[1::2]):
        value = value.format(**fill)
        if option in argv and option != "--point":
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    inputs = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SystemExit) as exit_:
        scale_summary.main(argv)
    assert exit_.value.code == status
    assert capsys.readouterr().err == (
        f"{scale_summary.PROG}: error: {message.format(**fill)}\n"
    )
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == inputs  # none written


def test_the_hand_made_points_differ(points):
    """The points are not copies of one another (else the checks above could not
    tell them apart)."""
    means = [
        [
            json.loads(p.read_text())["results"]["asnorm"][m]["eer_percent"]["mean"]
            for m in MODELS
        ]
        for p in points.values()
    ]
    assert len({tuple(np.round(m, 6)) for m in means}) == 3
