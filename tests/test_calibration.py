"""Quality-measure calibration, through the scoring command and ESPnet's score files,
against a reference written here from the definitions: AS-norm, the quality measures
and the features by loops, the logistic fit by scipy's optimiser on the weighted,
L2-penalised log-loss (scikit-learn's objective; the code under test uses
scikit-learn), the metrics by test_metrics' first-principles functions. Then the
one-line refusals of bad calibration input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.optimize import minimize
from test_metrics import reference_act_dcf, reference_cllr, reference_min_cllr

from espnet_plugin_intertopk.scoring import compare, espnet_scores
from espnet_plugin_intertopk.scoring.inputs import read_durations

DIM, TOP_N = 6, 3
SETS = {"test": "T", "valid": "V", "cohort": "C"}  # speaker name prefix per set
N_SPEAKERS = {"test": 4, "valid": 4, "cohort": 5}
UTTS_PER_SPEAKER = 3


def _make_corpus(rng):
    """Raw embeddings (some with two crops), durations and speakers of every set."""
    raw, dur, spk = {}, {}, {}
    for name, prefix in SETS.items():
        for s in range(N_SPEAKERS[name]):
            centre = rng.standard_normal(DIM)
            for u in range(UTTS_PER_SPEAKER):
                utt = f"{prefix}{s}-{u}"
                scale = rng.uniform(0.5, 2.0)  # the raw length: a quality measure
                noise = rng.uniform(0.3, 1.5)
                shape = (2, DIM) if u == 0 else (DIM,)
                raw[utt] = scale * (centre + noise * rng.standard_normal(shape))
                dur[utt] = float(rng.uniform(1.0, 5.0))
                spk[utt] = f"{prefix}{s}"
    return raw, dur, spk


def _all_pairs(utts, spk):
    pairs = [(a, b) for i, a in enumerate(utts) for b in utts[i + 1 :]]
    return pairs, [int(spk[a] == spk[b]) for a, b in pairs]


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 2:
        v = np.mean([c / np.linalg.norm(c) for c in v], axis=0)
    return v / np.linalg.norm(v)


def _raw_norm(v):
    v = np.asarray(v, dtype=np.float64)
    return float(np.mean([np.linalg.norm(c) for c in np.atleast_2d(v)]))


def reference_features(pairs, raw, dur, cohort):
    """Per trial: AS-norm score, then min and max of log duration, raw norm and
    cohort top-n mean of its two sides, all by loops."""
    stats = {}
    for u in {u for p in pairs for u in p}:
        top = sorted((float(_unit(raw[u]) @ c) for c in cohort), reverse=True)[:TOP_N]
        stats[u] = (np.mean(top), np.std(top))
    rows = []
    for a, b in pairs:
        s = float(_unit(raw[a]) @ _unit(raw[b]))
        score = 0.5 * sum((s - stats[u][0]) / stats[u][1] for u in (a, b))
        row = [score]
        for measure in (lambda u: math.log(dur[u]), lambda u: _raw_norm(raw[u]),
                        lambda u: stats[u][0]):  # fmt: skip
            row += sorted([measure(a), measure(b)])
        rows.append(row)
    return np.array(rows)


def reference_llrs(cal_x, cal_y, test_x, c=1.0):
    """Standardise with the calibration trials' mean and (population) deviation, then
    minimise C * sum_i w_i log(1 + exp(-y_i f(x_i))) + |w|^2 / 2 (y in -1, +1;
    balanced weights n / (2 n_class); intercept unpenalised) with BFGS."""
    mean, std = cal_x.mean(0), cal_x.std(0)
    std[std == 0] = 1.0
    z, y = (cal_x - mean) / std, 2 * np.asarray(cal_y) - 1
    weight = np.where(y > 0, len(y) / (2 * (y > 0).sum()), len(y) / (2 * (y < 0).sum()))

    def objective(theta):
        margin = y * (z @ theta[:-1] + theta[-1])
        loss = c * np.sum(weight * np.logaddexp(0, -margin))
        grad_f = -c * weight * y / (1 + np.exp(margin))
        grad = np.r_[z.T @ grad_f + theta[:-1], grad_f.sum()]
        return loss + 0.5 * theta[:-1] @ theta[:-1], grad

    theta = minimize(objective, np.zeros(z.shape[1] + 1), jac=True, method="BFGS",
                     options={"gtol": 1e-10, "maxiter": 10000}).x  # fmt: skip
    return ((test_x - mean) / std) @ theta[:-1] + theta[-1]


def write_setup(tmp_path: Path, rng):
    """Test, validation and cohort sets of one model and seed, as the recipe lays
    them out; returns the compare command line, the corpus and the trials."""
    raw, dur, spk = _make_corpus(rng)
    embed = tmp_path / "exp" / "m" / "seed0" / "embed"
    embed.mkdir(parents=True)
    trials = {}
    for name, prefix in SETS.items():
        utts = sorted(u for u in raw if u.startswith(prefix))
        d = tmp_path / "data" / name
        d.mkdir(parents=True)
        (d / "utt2spk").write_text("".join(f"{u} {spk[u]}\n" for u in utts))
        (d / "utt2dur").write_text("".join(f"{u} {dur[u]!r}\n" for u in utts))
        np.savez(embed / f"{name}_embeddings.npz", **{u: raw[u] for u in utts})
        trials[name] = _all_pairs(utts, spk)
        if name != "cohort":
            (d / "trial_label").write_text(
                "".join(f"{a}*{b} {y}\n" for (a, b), y in zip(*trials[name]))
            )
    argv = ["--expdir", str(tmp_path / "exp"), "--models", "m", "--seeds", "0",
            "--test_dir", str(tmp_path / "data/test"), "--score_norm", "asnorm",
            "--cohort_utt2spk", str(tmp_path / "data/cohort/utt2spk"),
            "--top_n", str(TOP_N), "--calibration_dir", str(tmp_path / "data/valid"),
            "--results", str(tmp_path / "RESULTS.md")]  # fmt: skip
    return argv, raw, dur, spk, trials


def _cohort_means(raw, spk):
    by = {}
    for u in sorted(u for u in raw if u.startswith("C")):
        by.setdefault(spk[u], []).append(_unit(raw[u]))
    return [
        m / np.linalg.norm(m) for m in (np.mean(v, 0) for _, v in sorted(by.items()))
    ]


def test_calibrated_rows_match_the_reference(tmp_path):
    argv, raw, dur, spk, trials = write_setup(tmp_path, np.random.default_rng(0))
    out = tmp_path / "r.json"
    compare.main(
        argv + ["--calibrate", "both", "--bootstrap", "20", "--json", str(out)]
    )
    data = json.loads(out.read_text())
    cohort = _cohort_means(raw, spk)
    test_pairs, test_y = trials["test"]
    test_x = reference_features(test_pairs, raw, dur, cohort)
    # Training-speaker trials: with 15 target pairs and 90 others, every pair.
    for name in ("valid", "cohort"):
        cal_pairs, cal_y = trials[name]
        llrs = reference_llrs(reference_features(cal_pairs, raw, dur, cohort), cal_y,
                              test_x)  # fmt: skip
        scoring = "asnorm+qmf-" + ("valid" if name == "valid" else "train")
        got = data["results"][scoring]["m"]
        assert got["cllr_bits"]["mean"] == pytest.approx(
            reference_cllr(llrs, test_y), rel=1e-5
        )
        assert got["min_cllr_bits"]["mean"] == pytest.approx(
            reference_min_cllr(llrs, test_y), rel=1e-6
        )
        for p in ("0.05", "0.01"):
            assert got["actdcf_by_p_target"][p]["mean"] == pytest.approx(
                reference_act_dcf(llrs, test_y, float(p))
            )
        info = data["calibration"][scoring]
        assert (info["total"], info["target"]) == (len(cal_y), sum(cal_y))
    assert data["calibration"]["asnorm+qmf-train"]["total"] == 105
    # The uncalibrated AS-norm row is the reference's first feature column.
    asnorm = data["results"]["asnorm"]["m"]
    assert asnorm["cllr_bits"]["mean"] == pytest.approx(
        reference_cllr(test_x[:, 0], test_y), rel=1e-9
    )
    # Paired differences between scorings: each calibration minus AS-norm, and
    # train minus valid, in EER, actDCF and Cllr, each with an interval.
    diffs = data["paired_scoring_differences"]
    assert [(d["scoring"], d["baseline_scoring"]) for d in diffs[::3]] == [
        ("asnorm+qmf-valid", "asnorm"), ("asnorm+qmf-train", "asnorm"),
        ("asnorm+qmf-train", "asnorm+qmf-valid"),
    ]  # fmt: skip
    cllr_valid = diffs[2]
    got_cllr = data["results"]["asnorm+qmf-valid"]["m"]["cllr_bits"]["mean"]
    assert cllr_valid["metric"] == "cllr"
    assert cllr_valid["mean"] == pytest.approx(got_cllr - asnorm["cllr_bits"]["mean"])
    assert cllr_valid["low"] <= cllr_valid["mean"] <= cllr_valid["high"]
    assert (
        "- asnorm+qmf-valid: AS-norm calibrated"
        in (tmp_path / "RESULTS.md").read_text()
    )


def test_espnet_score_files(tmp_path, capsys):
    """Score files as spk.sh writes them (``<enroll>*<test> <score> <label>``): the
    calibrated file has the reference's LLRs on the same trials and labels."""
    argv, raw, dur, spk, trials = write_setup(tmp_path, np.random.default_rng(1))
    embed = tmp_path / "exp/m/seed0/embed"
    cohort = _cohort_means(raw, spk)
    files = {}
    for name in ("test", "valid"):
        pairs, y = trials[name]
        x = reference_features(pairs, raw, dur, cohort)
        files[name] = tmp_path / f"{name}_scores"
        files[name].write_text(
            "".join(
                f"{a}*{b} {float(s)!r} {lab}\n"
                for (a, b), s, lab in zip(pairs, x[:, 0], y)
            )
        )
    out = tmp_path / "calibrated_scores"
    espnet_scores.main([
        "--scores", str(files["test"]),
        "--embeddings", str(embed / "test_embeddings.npz"),
        "--calibration_scores", str(files["valid"]),
        "--calibration_embeddings", str(embed / "valid_embeddings.npz"),
        "--cohort_embeddings", str(embed / "cohort_embeddings.npz"),
        "--cohort_utt2spk", str(tmp_path / "data/cohort/utt2spk"),
        "--top_n", str(TOP_N), "--test_dir", str(tmp_path / "data/test"),
        "--calibration_dir", str(tmp_path / "data/valid"),
        "--test_trials", str(tmp_path / "data/test/trial_label"),
        "--out", str(out),
    ])  # fmt: skip
    test_pairs, test_y = trials["test"]
    want = reference_llrs(
        reference_features(trials["valid"][0], raw, dur, cohort), trials["valid"][1],
        reference_features(test_pairs, raw, dur, cohort),
    )  # fmt: skip
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [tuple(k.split("*")) for k, _, _ in lines] == test_pairs
    assert [int(lab) for _, _, lab in lines] == test_y
    assert [float(s) for _, s, _ in lines] == pytest.approx(list(want), abs=1e-5)
    printed = capsys.readouterr().out
    assert (
        "quality measures: norm cohort duration" in printed and "after: EER" in printed
    )


def test_durations_from_the_audio_of_wav_scp_or_the_trial_lists(tmp_path):
    for name, seconds in (("a.wav", 0.5), ("b.wav", 1.25)):
        soundfile.write(tmp_path / name, np.zeros(int(16000 * seconds)), 16000)
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\n")
    (tmp_path / "trial.scp").write_text(f"a*b {tmp_path / 'a.wav'}\n")
    (tmp_path / "trial2.scp").write_text(f"a*b {tmp_path / 'b.wav'}\n")
    assert read_durations(tmp_path, ["a", "b"]) == {"a": 0.5, "b": 1.25}


EMB = "{tmp}/exp/m/seed0/embed/valid_embeddings.npz"
BAD = {
    # name: (extra arguments, change to the files, status, message)
    "calibration without AS-norm": (
        ["--calibrate", "valid", "--score_norm", "none"], None, 2,
        "--calibrate valid calibrates AS-norm scores: give --score_norm asnorm",
    ),
    "valid calibration without a directory": (
        ["--calibrate", "valid", "--calibration_dir", None], None, 2,
        "--calibrate valid needs --calibration_dir (the calibration trials)",
    ),
    "unknown quality measure": (
        ["--calibrate", "valid", "--quality_measures", "norm snr"], None, 2,
        "--quality_measures 'norm snr': snr is not one of duration norm cohort",
    ),
    "calibration trials of one class": (
        ["--calibrate", "valid"],
        lambda t: (t / "data/valid/trial_label").write_text("V0-0*V0-1 1\n"), 1,
        "{tmp}/data/valid/trial_label: all 1 trials are target: calibration trials "
        "need both target (1) and non-target (0) trials",
    ),
    "training speakers of one utterance each": (
        ["--calibrate", "train"],
        lambda t: (t / "data/cohort/utt2spk").write_text("C0-0 C0\nC1-0 C1\nC2-0 C2\n"),
        1,
        "{tmp}/data/cohort/utt2spk: no speaker with two or more utterances: "
        "training-speaker calibration needs same-speaker trials",
    ),
    "missing calibration embeddings": (
        ["--calibrate", "valid"], lambda t: Path(EMB.format(tmp=t)).unlink(), 1,
        f"{EMB}: no such file (model m, seed 0); extract its embeddings first",
    ),
    "calibration embeddings of another size": (
        ["--calibrate", "valid"],
        lambda t: np.savez(EMB.format(tmp=t), **{
            k: np.ones(DIM + 1) for k in np.load(EMB.format(tmp=t)).files}), 1,
        f"{EMB}: calibration and test embeddings differ in size (model m, seed 0)",
    ),
    "calibration speaker among the test speakers": (
        ["--calibrate", "valid"],
        lambda t: (t / "data/valid/utt2spk").write_text(
            (t / "data/valid/utt2spk").read_text().replace("V0-0 V0", "V0-0 T1")), 1,
        "{tmp}/data/valid/trial_label: speaker T1 is also a test speaker: calibrate "
        "on speakers the test never sees",
    ),
    "calibration trials with a test utterance": (
        ["--calibrate", "valid"],
        lambda t: (t / "data/valid/trial_label").write_text(
            "V0-0*V0-1 1\nV0-0*T0-0 0\n"), 1,
        "{tmp}/data/valid/trial_label: utterance T0-0 is also in trial T0-0*T0-1 "
        "({tmp}/data/test/trial_label:1): calibrate on speakers the test never sees",
    ),
    "an infinite duration": (
        ["--calibrate", "valid"],
        lambda t: (t / "data/valid/utt2dur").write_text(
            "V0-0 1e400\n" + (t / "data/valid/utt2dur").read_text().split("\n", 1)[1]
        ), 1,
        "{tmp}/data/valid/utt2dur:1: '1e400' is not a positive number of seconds",
    ),
    "calibration trials not UTF-8": (
        ["--calibrate", "valid"],
        lambda t: (t / "data/valid/trial_label").write_bytes(b"V0-0*V0-1 \xff\n"), 1,
        "{tmp}/data/valid/trial_label: not a UTF-8 text file (invalid start byte)",
    ),
    "no duration of a calibration utterance": (
        ["--calibrate", "valid"],
        lambda t: (t / "data/valid/utt2dur").write_text("V0-0 2.0\n"), 1,
        "{tmp}/data/valid/utt2dur: no duration of V0-1",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_calibration_input_is_one_line(name, tmp_path, capsys):
    argv, *_ = write_setup(tmp_path, np.random.default_rng(2))
    extra, edit, status, message = BAD[name]
    for option, value in zip(extra[::2], extra[1::2]):
        if option in argv:
            i = argv.index(option)
            del argv[i : i + 2]
        if value is not None:
            argv += [option, value]
    if edit is not None:
        edit(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        compare.main(argv)
    assert exit_.value.code == status
    want = f"{compare.PROG}: error: {message.format(tmp=tmp_path)}\n"
    assert capsys.readouterr().err == want
    assert not (tmp_path / "RESULTS.md").exists()


def test_espnet_scores_that_do_not_match_the_trial_list_are_one_line(tmp_path, capsys):
    argv, raw, dur, spk, trials = write_setup(tmp_path, np.random.default_rng(3))
    embed = tmp_path / "exp/m/seed0/embed"
    scores = tmp_path / "test_scores"
    valid = tmp_path / "valid_scores"
    pairs, y = trials["test"]
    # The list's first trial has no score; another has a different label.
    scores.write_text(
        "".join(f"{a}*{b} 0.5 {lab}\n" for (a, b), lab in list(zip(pairs, y))[1:])
    )
    valid.write_text(
        "".join(f"{a}*{b} 0.1 {lab}\n" for (a, b), lab in zip(*trials["valid"]))
    )
    base = ["--embeddings", str(embed / "test_embeddings.npz"),
            "--calibration_scores", str(valid),
            "--calibration_embeddings", str(embed / "valid_embeddings.npz"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    trial_label = tmp_path / "data/test/trial_label"
    cases = [
        (["--scores", str(scores), "--test_trials", str(trial_label)],
         f"trial T0-0*T0-1 ({trial_label}:1): no score in {scores}"),
        (["--scores", str(valid), "--test_trials", str(trial_label)],
         f"trial V0-0*V0-1 ({valid}:1): not a trial of {trial_label}"),
        (["--scores", str(scores), "--calibration_trials",
          str(tmp_path / "data/valid/trial_label"), "--test_dir", str(tmp_path)],
         "the quality measure duration needs --calibration_dir"),
    ]  # fmt: skip
    one_class = tmp_path / "one_class_scores"
    one_class.write_text("V0-0*V0-1 0.3 1\nV0-0*V0-2 0.2 1\n")
    cases.append((["--scores", str(scores), "--calibration_scores", str(one_class)],
                  f"{one_class}: all 2 trials are target: calibration trials need both "
                  "target (1) and non-target (0) trials"))  # fmt: skip
    for extra, message in cases:
        with pytest.raises(SystemExit):
            espnet_scores.main(base + extra)
        assert capsys.readouterr().err == f"{espnet_scores.PROG}: error: {message}\n"
    assert not (tmp_path / "out").exists()


def _audio_dir(tmp_path: Path, data_dir: Path) -> Path:
    """``data_dir``'s durations from audio under tmp/audio (wav.scp, no utt2dur)."""
    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    lines = []
    for line in (data_dir / "utt2dur").read_text().splitlines():
        utt, seconds = line.split()
        soundfile.write(audio / f"{utt}.wav", np.zeros(int(800 * float(seconds))), 800)
        lines.append(f"{utt} {audio / utt}.wav\n")
    (data_dir / "utt2dur").unlink()
    (data_dir / "wav.scp").write_text("".join(lines))
    return audio


def _refused_untouched(main, argv, output: Path, capsys) -> str:
    """The one-line error of a run refused with ``output`` (a file of the user's)
    left as it was."""
    before = output.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert output.read_bytes() == before
    return err


def test_compare_never_writes_over_what_it_reads_durations_from(tmp_path, capsys):
    """The cohort's directory (training-speaker calibration) and the audio of the
    test and calibration lists are inputs too: refused, not overwritten."""
    argv, *_ = write_setup(tmp_path, np.random.default_rng(4))
    i = argv.index("--results")
    del argv[i : i + 2]
    utt2dur = tmp_path / "data/cohort/utt2dur"
    argv_train = argv + ["--calibrate", "train", "--results", str(utt2dur)]
    err = _refused_untouched(compare.main, argv_train, utt2dur, capsys)
    assert f"--results {utt2dur} overlaps the input {tmp_path}/data/cohort:" in err
    audio = _audio_dir(tmp_path, tmp_path / "data/valid")
    wav = audio / "V0-0.wav"
    argv_valid = argv + ["--calibrate", "valid", "--results", str(wav)]
    err = _refused_untouched(compare.main, argv_valid, wav, capsys)
    assert (
        f"--results {wav} overlaps the input {audio} (audio of "
        f"{tmp_path}/data/valid/wav.scp)" in err
    )
    # Without the duration measure the audio is not read: a file beside it is fine.
    compare.main(
        argv + ["--calibrate", "valid", "--quality_measures", "norm",
                "--bootstrap", "0", "--results", str(audio / "R.md")]
    )  # fmt: skip
    assert (audio / "R.md").is_file()


def _espnet_scores_argv(tmp_path: Path, trials) -> list:
    """espnet_scores' command line for write_setup's files (every score 0.5)."""
    embed = tmp_path / "exp/m/seed0/embed"
    for name in ("test", "valid"):
        (tmp_path / f"{name}_scores").write_text(
            "".join(f"{a}*{b} 0.5 {y}\n" for (a, b), y in zip(*trials[name]))
        )
    return ["--scores", str(tmp_path / "test_scores"),
            "--embeddings", str(embed / "test_embeddings.npz"),
            "--calibration_scores", str(tmp_path / "valid_scores"),
            "--calibration_embeddings", str(embed / "valid_embeddings.npz"),
            "--cohort_embeddings", str(embed / "cohort_embeddings.npz"),
            "--top_n", str(TOP_N), "--test_dir", str(tmp_path / "data/test"),
            "--calibration_dir", str(tmp_path / "data/valid"),
            "--out", str(tmp_path / "out")]  # fmt: skip


def test_espnet_scores_never_writes_over_the_audio_it_reads(tmp_path, capsys):
    argv, _, _, _, trials = write_setup(tmp_path, np.random.default_rng(5))
    argv = _espnet_scores_argv(tmp_path, trials)
    audio = _audio_dir(tmp_path, tmp_path / "data/test")
    wav = audio / "T0-0.wav"
    argv += ["--quality_measures", "duration norm", "--out", str(wav)]
    err = _refused_untouched(espnet_scores.main, argv, wav, capsys)
    assert (
        f"--out {wav} overlaps the input {audio} (audio of "
        f"{tmp_path}/data/test/wav.scp)" in err
    )


COHORT = "{tmp}/exp/m/seed0/embed/cohort_embeddings.npz"
ESPNET_BAD = {
    # name: (extra arguments, change to the files, status, message)
    "top_n 1": (
        ["--top_n", "1"], None, 2,
        "--top_n must be >= 2 (one score has no spread), got 1",
    ),
    "empty cohort": (
        [], lambda t: np.savez(COHORT.format(tmp=t)), 1,
        f"{COHORT}: no embeddings in it (the cohort)",
    ),
    "cohort of another size": (
        [], lambda t: np.savez(COHORT.format(tmp=t), **{
            k: np.ones(DIM + 1) for k in np.load(COHORT.format(tmp=t)).files}), 1,
        f"{COHORT}: cohort embeddings of size {DIM + 1}, test embeddings of size "
        f"{DIM}: give those of the same model",
    ),
    "calibration of another size": (
        [], lambda t: np.savez(EMB.format(tmp=t), **{
            k: np.ones(DIM + 1) for k in np.load(EMB.format(tmp=t)).files}), 1,
        f"{EMB}: calibration embeddings of size {DIM + 1}, test embeddings of size "
        f"{DIM}: give those of the same model",
    ),
    "an infinite duration": (
        [], lambda t: (t / "data/test/utt2dur").write_text(
            "T0-0 inf\n" + (t / "data/test/utt2dur").read_text().split("\n", 1)[1]
        ), 1,
        "{tmp}/data/test/utt2dur:1: 'inf' is not a positive number of seconds",
    ),
    "scores not UTF-8": (
        [], lambda t: (t / "test_scores").write_bytes(b"T0-0*T0-1 0.5 1\xff\n"), 1,
        "{tmp}/test_scores: not a UTF-8 text file (invalid start byte)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ESPNET_BAD))
def test_bad_espnet_scores_input_is_one_line(name, tmp_path, capsys):
    _, _, _, _, trials = write_setup(tmp_path, np.random.default_rng(6))
    argv = _espnet_scores_argv(tmp_path, trials)
    extra, edit, status, message = ESPNET_BAD[name]
    if edit is not None:
        edit(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        espnet_scores.main(argv + extra)
    assert exit_.value.code == status
    want = f"{espnet_scores.PROG}: error: {message.format(tmp=tmp_path)}\n"
    assert capsys.readouterr().err == want
    assert not (tmp_path / "out").exists()
