"""Sub-center cleaning: the streamed, class-chunked statistics against a direct numpy
computation, and the command line on a model built by the plugin's task (its
embeddings recomputed here), the collapse to K = 1 included; what it refuses, and how
a run's outputs replace an earlier run's."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from espnet_plugin_intertopk.bin import spk_subcenter_clean
from espnet_plugin_intertopk.cleaning import evaluation, outputs
from espnet_plugin_intertopk.cleaning.evaluation import precision_recall
from espnet_plugin_intertopk.cleaning.subcenters import SubcenterScan, collapse_weight
from espnet_plugin_intertopk.recipe.kaldi_data import read_map
from espnet_plugin_intertopk.safe_io.errors import UserError
from espnet_plugin_intertopk.safe_io.ownership import MARKER, claim_dir
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

from conftest import build_and_save, digest


def by_hand(x, labels, weight, K):
    """Everything the scan computes, from the full (N, C, K) cosine array."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    cos = (xn @ wn.T).reshape(len(x), -1, K)
    n, c = cos.shape[:2]
    own = cos[np.arange(n), labels]
    counts = np.zeros((c, K), int)
    for label, k in zip(labels, own.argmax(1)):
        counts[label, k] += 1
    dominant = counts.argmax(1)
    per_class = cos.max(2)
    per_class[np.arange(n), labels] = -np.inf
    angle = np.degrees(np.arccos(np.clip(own[np.arange(n), dominant[labels]], -1, 1)))
    return own, per_class.argmax(1), per_class.max(1), dominant, angle


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_scan_matches_the_full_cosine_array(chunk):
    rng = np.random.default_rng(chunk)
    C, K, D, N = 7, 3, 5, 40
    weight = rng.normal(size=(C * K, D))
    x, labels = rng.normal(size=(N, D)), rng.integers(0, C, N)
    scan = SubcenterScan(torch.tensor(weight), K, chunk)
    for part in np.array_split(np.arange(N), [5, 6, 23]):  # uneven batches
        scan.add(torch.tensor(x[part]), torch.tensor(labels[part]))
    got = scan.result()
    own, other, other_cos, dominant, angle = by_hand(x, labels, weight, K)
    np.testing.assert_allclose(got.own_cos.numpy(), own, rtol=1e-10)
    np.testing.assert_array_equal(got.other_class.numpy(), other)
    np.testing.assert_allclose(got.other_cos.numpy(), other_cos, rtol=1e-10)
    np.testing.assert_array_equal(got.dominant.numpy(), dominant)
    np.testing.assert_allclose(got.dominant_angle_deg.numpy(), angle, atol=1e-6)


def test_collapsed_logits_are_the_dominant_columns():
    rng = np.random.default_rng(0)
    C, K, D = 6, 3, 4
    weight = torch.tensor(rng.normal(size=(C * K, D)))
    dominant = torch.tensor(rng.integers(0, K, C))
    keep = torch.tensor([4, 0, 2])
    x = F.normalize(torch.tensor(rng.normal(size=(9, D))), dim=1)
    full = (x @ F.normalize(weight, dim=1).T).view(9, C, K)
    small = x @ F.normalize(collapse_weight(weight, K, dominant, keep), dim=1).T
    torch.testing.assert_close(small, full[:, keep, dominant[keep]])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="nclasses \\* K"):
        SubcenterScan(torch.zeros(7, 4), K=3)
    scan = SubcenterScan(torch.zeros(6, 4), K=3)
    with pytest.raises(ValueError, match="labels must be in \\[0, 2\\)"):
        scan.add(torch.ones(1, 4), torch.tensor([2]))
    with pytest.raises(ValueError, match="no embeddings"):
        scan.result()


@pytest.fixture(scope="module")
def model_files(tiny_corpus, tmp_path_factory):
    """A model as the plugin's task builds it (seeded), saved like a trained one."""
    config, weights, model = build_and_save(
        tmp_path_factory.mktemp("clean_model"),
        "--spk2utt",
        str(tiny_corpus / "train" / "spk2utt"),
    )
    return config, weights, model.eval()


def test_command_line_report_cleaned_data_and_collapse(
    model_files, tiny_corpus, tmp_path
):
    config, model_file, model = model_files
    data = tiny_corpus / "train"
    before = digest(data)
    wavs, utt2spk = read_map(data / "wav.scp"), read_map(data / "utt2spk")
    names = [line.split()[0] for line in (data / "spk2utt").read_text().splitlines()]
    # The model's embeddings and angles, computed here without the tool.
    import soundfile

    utts = list(wavs)
    with torch.no_grad():
        x = torch.cat(
            [
                model(
                    speech=torch.tensor(soundfile.read(wavs[u], dtype="float32")[0])[
                        None
                    ],
                    extract_embd=True,
                )
                for u in utts
            ]
        ).numpy()
    labels = np.array([names.index(utt2spk[u]) for u in utts])
    weight = model.loss.weight.detach().numpy()
    own, other, _, dominant, angle = by_hand(x, labels, weight, model.loss.K)
    threshold = float(np.median(angle))  # some flagged, some kept
    out = tmp_path / "clean"
    spk_subcenter_clean.main(
        ["--spk_train_config", str(config), "--spk_model_file", str(model_file)]
        + ["--data_dir", str(data), "--output_dir", str(out)]
        + ["--threshold_deg", str(threshold), "--collapse", "true"]
    )
    rows = [line.split("\t") for line in (out / "report.tsv").read_text().splitlines()]
    assert rows[0][0] == "utt" and len(rows) == len(utts) + 1
    report = {r[0]: r for r in rows[1:]}
    for i, u in enumerate(utts):
        r = report[u]
        assert r[1] == utt2spk[u] and r[4] == names[other[i]]
        assert float(r[2]) == pytest.approx(angle[i], abs=0.006)  # 2 decimals
        assert int(r[3]) == own[i].argmax()
        assert r[6] == ("drop" if angle[i] > threshold else "keep")
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_no_nan)
    dropped = int((angle > threshold).sum())
    assert 0 < dropped < len(utts) and summary["utterances_dropped"] == dropped
    assert sum(summary["angle_histogram_deg"]["counts"]) == len(utts)
    assert (out / "images" / "angles.png").stat().st_size > 0
    kept_utts = set(read_map(out / "data" / "wav.scp"))
    assert kept_utts == {u for i, u in enumerate(utts) if angle[i] <= threshold}
    spk2utt = read_map(out / "data" / "spk2utt")
    assert read_map(out / "data" / "category2utt") == spk2utt
    assert all(spk2utt.values()) and len(spk2utt) == summary["classes_kept"]
    assert digest(data) == before  # the input directory is only read
    assert (out / MARKER).is_file() and not list(out.glob(".tmp*"))
    # The collapsed model: K = 1, one row per kept class, the dominant sub-center.
    collapsed = yaml.safe_load((out / "collapsed" / "config.yaml").read_text())
    assert collapsed["loss_conf"]["K"] == 1
    assert collapsed["spk_num"] == len(spk2utt)
    small, _ = IntertopkSpeakerTask.build_model_from_file(
        out / "collapsed" / "config.yaml", out / "collapsed" / "model.pth"
    )
    keep = [names.index(s) for s in read_map(out / "data" / "spk2utt")]
    xn = F.normalize(torch.tensor(x), dim=1)
    full = (xn @ F.normalize(model.loss.weight.detach(), dim=1).T).view(
        len(utts), len(names), -1
    )
    logits = xn @ F.normalize(small.loss.weight.detach(), dim=1).T
    torch.testing.assert_close(logits, full[:, keep, dominant[keep]])


def test_precision_and_recall_of_the_flags(tmp_path, capsys):
    angles = {"a": 10.0, "b": 80.0, "c": 50.0, "d": 95.0, "e": 70.0}
    noisy = {"b", "d", "e"}
    rows = precision_recall(angles, noisy, [60, 75, 100])
    assert [r["flagged"] for r in rows] == [3, 2, 0]
    assert rows[0]["precision"] == 1.0 and rows[0]["recall"] == 1.0
    assert rows[1]["precision"] == 1.0 and rows[1]["recall"] == pytest.approx(2 / 3)
    assert np.isnan(rows[2]["precision"]) and rows[2]["recall"] == 0.0
    with pytest.raises(UserError, match="not in the report"):
        precision_recall(angles, {"z"}, [60])
    # The command line reads the tool's report and the corpus's noise_truth.
    report = tmp_path / "report.tsv"
    report.write_text(
        "utt\tlabel\tangle_dominant_deg\tx\n"
        + "".join(f"{u}\ts\t{a}\t0\n" for u, a in angles.items())
    )
    truth = tmp_path / "noise_truth"
    truth.write_text("".join(f"{u} s1 s2\n" for u in sorted(noisy)))
    evaluation.main([str(report), str(truth), "--thresholds", "75"])
    assert "| 75 | 2 | 1.000 | 0.667 |" in capsys.readouterr().out
    # Mistakes are one line: a threshold that is no angle, a file that is no report.
    for argv, status, message in (
        ([str(report), str(truth), "--thresholds", "nan"], 2,
         "--thresholds must be angles in (0, 180) degrees, got nan"),
        ([str(truth), str(truth)], 1,
         f"{truth}: not a cleaning report (no angle_dominant_deg column)"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            evaluation.main(argv)
        assert exit_.value.code == status
        assert capsys.readouterr().err == f"{evaluation.PROG}: error: {message}\n"


def _no_nan(constant):
    raise AssertionError(f"{constant} in summary.json is not JSON")


def _argv(config, model_file, data, out, threshold, collapse):
    return (
        ["--spk_train_config", str(config), "--spk_model_file", str(model_file)]
        + ["--data_dir", str(data), "--output_dir", str(out)]
        + ["--threshold_deg", str(threshold), "--collapse", str(collapse).lower()]
    )


def _refused(argv, capsys):
    """The exit status and the last line on stderr of a refused run."""
    with pytest.raises(SystemExit) as exit_:
        spk_subcenter_clean.main(argv)
    return exit_.value.code, capsys.readouterr().err.splitlines()[-1]


def _tree(root):
    return {
        str(p.relative_to(root)): p.is_file() and p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def scanned(model_files, tiny_corpus):
    """A scan of the training utterances as the tool's scan_data returns it, from
    random embeddings: what a run writes does not depend on where the angles come
    from (the tool's own embedding is tested above), and no audio is embedded again."""
    _, _, model = model_files
    data = tiny_corpus / "train"
    names = [line.split()[0] for line in (data / "spk2utt").read_text().splitlines()]
    utt2spk = read_map(data / "utt2spk")
    utts = sorted(utt2spk)
    scan = SubcenterScan(model.loss.weight.detach(), model.loss.K)
    x = torch.randn(
        len(utts), model.loss.in_features, generator=torch.Generator().manual_seed(0)
    )
    scan.add(x, torch.tensor([names.index(utt2spk[u]) for u in utts]))
    return utts, scan.result()


@pytest.fixture
def run(model_files, tiny_corpus, scanned, monkeypatch, tmp_path):
    """run(threshold, collapse): the command line into tmp_path/clean, on the scan."""
    monkeypatch.setattr(spk_subcenter_clean, "scan_data", lambda *args: scanned)
    config, model_file, _ = model_files

    def run(threshold, collapse):
        argv = _argv(
            config, model_file, tiny_corpus / "train", tmp_path / "clean", threshold,
            collapse,
        )  # fmt: skip
        spk_subcenter_clean.main(argv)
        return argv

    return run


def _median_and_max_angle(scanned):
    angles = scanned[1].dominant_angle_deg
    return float(angles.median()), float(angles.max())


def test_a_rerun_replaces_every_output_of_the_previous_run(run, scanned, tmp_path):
    """Without --collapse after a run with it: no collapsed/ is left beside the new
    data/. Files that are not the tool's outputs (a recipe's log, shape file) stay."""
    out = tmp_path / "clean"
    median, largest = _median_and_max_angle(scanned)
    run(median, True)
    assert (out / "collapsed" / "model.pth").is_file()
    (out / "train_shape").write_text("the recipe's\n")
    run(math.ceil(largest) + 1, False)  # keeps everything
    assert not (out / "collapsed").exists()
    assert len(read_map(out / "data" / "wav.scp")) == len(scanned[0])
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_no_nan)
    assert summary["utterances_dropped"] == 0
    assert "\tdrop" not in (out / "report.tsv").read_text()
    assert (out / "train_shape").read_text() == "the recipe's\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.tsv", "summary.json", "images", "data", "train_shape", MARKER]
    )


def test_a_failed_or_killed_run_leaves_the_previous_outputs(
    run, scanned, tmp_path, monkeypatch
):
    out = tmp_path / "clean"
    median, largest = _median_and_max_angle(scanned)
    run(median, True)
    before = _tree(out)

    def fail(*args):
        raise RuntimeError("out of disk space")

    monkeypatch.setattr(spk_subcenter_clean, "write_collapsed", fail)
    with pytest.raises(RuntimeError, match="out of disk space"):
        run(math.ceil(largest) + 1, True)  # report and data written, then it fails
    assert _tree(out) == before
    # A killed run leaves its build directory: the next run removes it (its marker
    # proves whose it is), and nothing without it or with a copied one.
    killed = out / (outputs.BUILD_PREFIX + "killed")
    claim_dir(killed, outputs.TOOL, "a build directory")
    shutil.copytree(out / "data", killed / "data")
    foreign = out / (outputs.BUILD_PREFIX + "not_ours")
    foreign.mkdir()
    copied = out / (outputs.BUILD_PREFIX + "copied")
    shutil.copytree(killed, copied)
    monkeypatch.undo()
    run(median, False)
    assert not killed.exists() and foreign.is_dir() and copied.is_dir()


def test_a_threshold_that_flags_everything_is_refused_after_the_report(
    run, scanned, tmp_path, capsys
):
    out = tmp_path / "clean"
    median, _ = _median_and_max_angle(scanned)
    run(median, True)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(0.001, True)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{spk_subcenter_clean.PROG}: error: every utterance is more than 0.001 "
        "degrees from its class's dominant sub-center: nothing is left to train on "
        f"(the angles are in {out / 'report.tsv'}; an untrained model or a threshold "
        "too low)"
    )
    # This run's angles are there to look at, the earlier run's cleaned data is not.
    assert (out / "report.tsv").read_text().count("\tdrop\n") == len(scanned[0])
    assert not (out / "data").exists() and not (out / "collapsed").exists()


@pytest.mark.parametrize("threshold", ["nan", "inf", "-5", "0", "180"])
def test_a_threshold_outside_0_180_degrees_is_refused(threshold, tmp_path, capsys):
    argv = _argv(tmp_path, tmp_path, tmp_path, tmp_path / "out", threshold, False)
    assert _refused(argv, capsys) == (
        2,
        f"{spk_subcenter_clean.PROG}: error: --threshold_deg must be an angle in "
        f"(0, 180) degrees, got {float(threshold)}",
    )
    assert not (tmp_path / "out").exists()


OVERLAPS = [
    "data_dir is output/data",
    "output in data_dir",
    "output holds the model",
    "output/data links in",
]


@pytest.mark.parametrize("where", OVERLAPS)
def test_outputs_overlapping_an_input_are_refused(
    where, model_files, tiny_corpus, tmp_path, capsys
):
    """The issue's case: --data_dir X/data with --output_dir X overwrote wav.scp."""
    config, model_file, _ = model_files
    data = tmp_path / "out" / "data"
    shutil.copytree(tiny_corpus / "train", data)
    out, given = tmp_path / "out", data
    if where == "output in data_dir":
        out, given = data / "clean", data
    elif where == "output holds the model":
        shutil.copy(model_file, data.parent / "model.pth")
        data, out = tiny_corpus / "train", data.parent
        model_file, given = out / "model.pth", out / "model.pth"
    shown = out
    if where == "output/data links in":  # an earlier output replaced by a link
        out = tmp_path / "clean"
        out.mkdir()
        (out / "data").symlink_to(data)
        shown = out / "data"
    before = _tree(tmp_path)
    status, line = _refused(_argv(config, model_file, data, out, 60, True), capsys)
    assert (status, line) == (
        2,
        f"{spk_subcenter_clean.PROG}: error: --output_dir {shown} overlaps the input "
        f"{given}: a tool never writes into its inputs; give an output path outside "
        "them",
    )
    assert _tree(tmp_path) == before


def test_a_directory_the_tool_did_not_make_is_refused(
    model_files, tiny_corpus, tmp_path, capsys
):
    config, model_file, _ = model_files
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    argv = _argv(config, model_file, tiny_corpus / "train", out, 60, False)
    assert _refused(argv, capsys) == (
        2,
        f"{spk_subcenter_clean.PROG}: error: --output_dir {out} exists and was not "
        f"made by {outputs.TOOL} (no valid {MARKER} in it: a copied or linked marker "
        "proves nothing): it is left untouched; give a new or empty directory",
    )
    assert _tree(out) == {"notes.txt": b"my notes\n"}


def test_a_model_that_cannot_be_loaded_is_one_line(
    model_files, tiny_corpus, tmp_path, capsys
):
    config, _, _ = model_files
    broken = tmp_path / "model.pth"
    broken.write_text("not a checkpoint")
    argv = _argv(config, broken, tiny_corpus / "train", tmp_path / "out", 60, False)
    status, line = _refused(argv, capsys)
    assert status == 1 and line.startswith(
        f"{spk_subcenter_clean.PROG}: error: cannot load a model from "
        f"--spk_train_config {config} and --spk_model_file {broken}: "
    )
    assert not (tmp_path / "out").exists()
