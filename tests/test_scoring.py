"""EER and minDCF (ESPnet's helpers, through the recipe's scoring) on score lists
whose answers are worked out by hand; the command line on hand-made embeddings (every
row of its table known by construction) and its one-line refusals of bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_metrics import reference_act_dcf, reference_cllr, reference_min_cllr

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.scoring import compare as scoring
from espnet_plugin_intertopk.scoring import metrics, normalisation
from espnet_plugin_intertopk.scoring.metrics import error_rates


def test_one_target_below_one_non_target():
    # Targets 0.9 0.8 0.7 0.3, non-targets 0.6 0.2 0.1 0.0. A threshold in (0.3, 0.6]
    # misses one target of four and accepts one non-target of four: EER 25 %. The
    # cheapest threshold at low prior is just above 0.6: one miss, no false alarm, so
    # minDCF = p * 1/4 / min(p, 1 - p) = 0.25 for p = 0.05 and p = 0.01.
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    got = error_rates(scores, labels)
    assert got["eer"] == pytest.approx(25.0)
    assert got["mindcf@0.05"] == pytest.approx(0.25)
    assert got["mindcf@0.01"] == pytest.approx(0.25)


def test_separated_scores_have_no_errors():
    scores = np.array([0.9, 0.8, 0.1, 0.0, -0.5])
    labels = np.array([1, 1, 0, 0, 0])
    got = error_rates(scores, labels)
    assert {k: got[k] for k in ("eer", "mindcf@0.05", "mindcf@0.01")} == {
        "eer": 0.0, "mindcf@0.05": 0.0, "mindcf@0.01": 0.0
    }  # fmt: skip


def test_reversed_scores_miss_everything():
    scores = np.array([0.0, 0.1, 0.8, 0.9])
    labels = np.array([1, 1, 0, 0])
    got = error_rates(scores, labels)
    assert got["eer"] == pytest.approx(100.0)
    # Rejecting everything costs p / min(p, 1 - p) = 1: no threshold does better.
    assert got["mindcf@0.05"] == pytest.approx(1.0)


def _random_embeddings(rng, names, dim=8):
    return {
        n: (lambda v: v / np.linalg.norm(v))(rng.standard_normal(dim)) for n in names
    }


def test_as_norm_matches_a_direct_loop_per_trial():
    rng = np.random.default_rng(0)
    emb = _random_embeddings(rng, [f"u{i}" for i in range(12)])
    pairs = [(f"u{i}", f"u{j}") for i in range(12) for j in range(i + 1, 12)][:40]
    cohort = np.stack(list(_random_embeddings(rng, range(30)).values()))
    top_n = 7
    got = normalisation.as_norm(emb, pairs, cohort, top_n)
    for (a, b), value in zip(pairs, got):
        s = float(emb[a] @ emb[b])
        stats = []
        for u in (a, b):
            top = sorted((float(emb[u] @ c) for c in cohort), reverse=True)[:top_n]
            stats.append((np.mean(top), np.std(top)))
        want = 0.5 * ((s - stats[0][0]) / stats[0][1] + (s - stats[1][0]) / stats[1][1])
        assert value == pytest.approx(want, rel=1e-12)


def test_cohort_means_are_unit_speaker_averages():
    emb = {
        "a1": np.array([1.0, 0.0]),
        "a2": np.array([0.0, 1.0]),
        "b1": np.array([-1.0, 0.0]),
    }
    means = normalisation.cohort_means(emb, {"a1": "A", "a2": "A", "b1": "B"})
    assert np.allclose(means, [[2**-0.5, 2**-0.5], [-1.0, 0.0]])


def _trials(rng, n_speakers=10, per_speaker=20):
    groups = np.repeat(np.arange(n_speakers), per_speaker)
    labels = rng.integers(0, 2, groups.size)
    return labels, groups


def test_bootstrap_of_identical_systems_is_zero_width_at_zero():
    rng = np.random.default_rng(1)
    labels, groups = _trials(rng)
    seeds = [rng.standard_normal(labels.size) + labels for _ in range(3)]
    point, low, high = metrics.paired_bootstrap(
        seeds, seeds, labels, groups, metrics.eer, n_resamples=200
    )
    assert point == low == high == 0.0


def test_bootstrap_of_a_constant_shift_gives_that_shift():
    rng = np.random.default_rng(2)
    labels, groups = _trials(rng)
    a = [rng.standard_normal(labels.size) for _ in range(2)]
    b = [x - 0.3 for x in a]
    mean_score = lambda s, _labels: float(np.mean(s))  # noqa: E731
    point, low, high = metrics.paired_bootstrap(
        a, b, labels, groups, mean_score, n_resamples=200
    )
    assert point == pytest.approx(0.3) and low == pytest.approx(0.3)
    assert high == pytest.approx(0.3)


def test_bootstrap_interval_covers_the_point_and_widens_with_fewer_speakers():
    rng = np.random.default_rng(3)
    widths = []
    for n_speakers in (40, 5):
        labels, groups = _trials(rng, n_speakers=n_speakers, per_speaker=30)
        a = [rng.standard_normal(labels.size) + 1.5 * labels for _ in range(2)]
        b = [rng.standard_normal(labels.size) + 1.0 * labels for _ in range(2)]
        point, low, high = metrics.paired_bootstrap(
            a, b, labels, groups, metrics.eer, n_resamples=300
        )
        assert low <= point <= high and point < 0  # a separates better: lower EER
        widths.append(high - low)
    assert widths[1] > widths[0]


# The command line on hand-made embeddings whose every cosine, AS-norm score, EER and
# minDCF is known by construction.
#
# Unit vectors with axes 0-1 (a plane), 2 (a "hub" axis), 3 (an axis every utterance
# has 0.2 of) and one private axis per utterance (only for the unit length, it adds
# nothing to any cosine). An enrolment utterance is (0.6, 0, 0, 0.2); a test utterance
# meant to score s against it is (p / 0.6, *, h, 0.2) with p = s - 0.04, so that the
# cosine is 0.6 * p / 0.6 + 0.2 * 0.2 = s; h = 0.6 for a "hub", 0 otherwise.
# The cohort has three speakers of one utterance each, along axis 3, axis 2 and minus
# axis 3: an ordinary utterance scores (0.2, 0, -0.2) against them, a hub (0.2, 0.6,
# -0.2). With --top_n 2 the mean and standard deviation of the two best are 0.1 and 0.1
# for an ordinary utterance, 0.4 and 0.2 for a hub, so AS-norm turns a trial's cosine s
# into 0.5 * ((s - 0.1) / 0.1 + (s - 0.1) / 0.1) = 10 s - 1, or with a hub on the test
# side 0.5 * ((s - 0.1) / 0.1 + (s - 0.4) / 0.2) = 7.5 s - 1.5.
#
# Each system's trials: 4 target and 4 non-target scores against one enrolment
# utterance, for each of two test speakers A and B with the same scores (the bootstrap
# resamples speakers; any resample of two identical halves has the EER of one half,
# so every interval is its point). With k of the 4 targets below k of the non-targets
# and nothing else out of order, the EER is k / 4. At p_target 0.05 or 0.01 one false
# alarm of 8 costs 0.95 / 8 / 0.05 > 1 (more than rejecting everything), so minDCF is
# the share of targets below the highest non-target (or 1).
SYSTEMS = {
    # (model, seed): (target scores, non-target scores, index of the hub non-target)
    # cosine: .15 below the hub's .21: EER 25, minDCF .25. AS-norm: the targets become
    # 1.9 1.7 1.5 .5, the hub 7.5 * .21 - 1.5 = .075, the others 0 -.5 -1: EER 0.
    ("a", 0): ((0.29, 0.27, 0.25, 0.15), (0.21, 0.10, 0.05, 0.00), 0),
    # Separated, with and without AS-norm (10 s - 1 keeps the order): 0 everywhere.
    ("a", 1): ((0.29, 0.27, 0.25, 0.20), (0.15, 0.10, 0.05, 0.00), None),
    # .12 and .08 below .20 and .15: EER 50, minDCF .5, the same with AS-norm.
    ("b", 0): ((0.29, 0.27, 0.12, 0.08), (0.20, 0.15, 0.05, 0.00), None),
    # cosine: the hub's .30 above every target: EER 25 (reject up to .15: 1 miss of 4,
    # 1 false alarm of 4), minDCF 1 (no threshold without a false alarm but rejecting
    # everything). AS-norm: the hub becomes .75, above the target at .5 only: EER 25,
    # minDCF .25.
    ("b", 1): ((0.29, 0.27, 0.25, 0.15), (0.30, 0.10, 0.05, 0.00), 0),
    # The floor: as ("b", 0), cosine only.
    ("floor", 0): ((0.29, 0.27, 0.12, 0.08), (0.20, 0.15, 0.05, 0.00), None),
}
EXPECTED_MEANS = """\
| a | cosine | 2 | 12.50 ± 17.68 | 0.1250 ± 0.1768 | 0.1250 ± 0.1768 |
| a | asnorm | 2 | 0.00 ± 0.00 | 0.0000 ± 0.0000 | 0.0000 ± 0.0000 |
| b | cosine | 2 | 37.50 ± 17.68 | 0.7500 ± 0.3536 | 0.7500 ± 0.3536 |
| b | asnorm | 2 | 37.50 ± 17.68 | 0.3750 ± 0.1768 | 0.3750 ± 0.1768 |
| untrained floor (MFCC mean+std) | cosine | 1 | 50.00 | 0.5000 | 0.5000 |
"""  # std over the seeds: |x - y| / sqrt(2), e.g. 25 / 1.414 = 17.68
EXPECTED_PAIRED = """\
| a | b | cosine | -25.00 | [-25.00, -25.00] |
| a | b | asnorm | -37.50 | [-37.50, -37.50] |
"""  # per seed a - b: cosine 25 - 50 and 0 - 25; AS-norm 0 - 50 and 0 - 25
EXPECTED_PER_SEED = """\
| a | cosine | 0 | 25.00 | 0.2500 | 0.2500 |
| a | cosine | 1 | 0.00 | 0.0000 | 0.0000 |
| a | asnorm | 0 | 0.00 | 0.0000 | 0.0000 |
| a | asnorm | 1 | 0.00 | 0.0000 | 0.0000 |
| b | cosine | 0 | 50.00 | 0.5000 | 0.5000 |
| b | cosine | 1 | 25.00 | 1.0000 | 1.0000 |
| b | asnorm | 0 | 50.00 | 0.5000 | 0.5000 |
| b | asnorm | 1 | 25.00 | 0.2500 | 0.2500 |
| untrained floor (MFCC mean+std) | cosine | 0 | 50.00 | 0.5000 | 0.5000 |
"""
TRIALS = [  # (enrolment, test utterance, label) of each speaker
    (f"{g}-e", f"{g}-{kind}{i}", int(kind == "t"))
    for g in "AB"
    for kind in "tn"
    for i in range(4)
]
UTTS = sorted({u for a, b, _ in TRIALS for u in (a, b)})
DIM = 4 + len(UTTS)


def _vector(utt: str, score=None, hub=False) -> np.ndarray:
    v = np.zeros(DIM)
    if score is None:  # enrolment
        v[0], v[3] = 0.6, 0.2
    else:
        x = (score - 0.04) / 0.6
        v[:4] = [x, np.sqrt(0.36 - x * x), 0.6 if hub else 0.0, 0.2]
    v[4 + UTTS.index(utt)] = np.sqrt(1.0 - v @ v)
    return v


def _embeddings(system, systems=SYSTEMS) -> dict:
    targets, non_targets, hub = systems[system]
    emb = {}
    for a, b, label in TRIALS:
        i = int(b[-1])
        score = (targets if label else non_targets)[i]
        emb[a] = _vector(a)
        emb[b] = _vector(b, score, hub=not label and i == hub)
    return emb


def write_experiment(tmp_path: Path, systems=SYSTEMS):
    """The inputs of the hand-made ``systems`` ((model, seed) -> scores as in SYSTEMS,
    the floor's under ("floor", 0)) under ``tmp_path``; returns the command line
    (AS-norm, --top_n 2, floor, appendix) and where the results go."""
    test = tmp_path / "data" / "test"
    test.mkdir(parents=True)
    (test / "trial_label").write_text(
        "".join(f"{a}*{b} {label}\n" for a, b, label in TRIALS)
    )
    spk = {u: (f"o{u[-1]}" if "-n" in u else f"spk{u[0]}") for u in UTTS}
    (test / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in spk.items()))
    cohort = {"c1": np.eye(DIM)[3], "c2": np.eye(DIM)[2], "c3": -np.eye(DIM)[3]}
    (tmp_path / "cohort_utt2spk").write_text("c1 C1\nc2 C2\nc3 C3\n")
    runs = [s for s in systems if s[0] != "floor"]
    for model, seed in runs:
        d = tmp_path / "exp" / model / f"seed{seed}" / "embed"
        d.mkdir(parents=True)
        np.savez(d / "test_embeddings.npz", **_embeddings((model, seed), systems))
        np.savez(d / "cohort_embeddings.npz", **cohort)
    np.savez(tmp_path / "floor.npz", **_embeddings(("floor", 0), systems))
    models = " ".join(dict.fromkeys(model for model, _ in runs))
    seeds = " ".join(str(seed) for seed in sorted({seed for _, seed in runs}))
    appendix = tmp_path / "flags.md"  # as the cleaning stage appends its evaluation
    appendix.write_text("### Flagged training utterances, seed 0\n\n| 55 | 3 |\n")
    results = tmp_path / "RESULTS.md"
    argv = ["--expdir", str(tmp_path / "exp"), "--models", models, "--seeds", seeds,
            "--test_dir", str(test), "--results", str(results), "--score_norm",
            "asnorm", "--cohort_utt2spk", str(tmp_path / "cohort_utt2spk"),
            "--top_n", "2", "--floor", str(tmp_path / "floor.npz"),
            "--bootstrap", "20", "--append", str(appendix)]  # fmt: skip
    return argv, results


@pytest.fixture
def experiment(tmp_path):
    """The inputs of the hand-made systems (see write_experiment)."""
    return write_experiment(tmp_path)


def test_the_hand_made_scores_are_what_they_were_made_to_be():
    """The construction itself, trial by trial, in plain Python."""
    for system, (targets, non_targets, hub) in SYSTEMS.items():
        emb = _embeddings(system)
        for a, b, label in TRIALS:
            i = int(b[-1])
            assert np.linalg.norm(emb[b]) == pytest.approx(1.0)
            cosine = sum(x * y for x, y in zip(emb[a], emb[b]))
            assert cosine == pytest.approx((targets if label else non_targets)[i])
            on_hub = [emb[b][2] * 1.0, emb[b][3] * 1.0, -emb[b][3]]  # the cohort
            assert sorted(on_hub)[1:] == pytest.approx(
                [0.2, 0.6] if not label and i == hub else [0.0, 0.2]
            )


def _section(text: str, title: str, cells: int = 0) -> str:
    """The data rows of a section's table; with ``cells``, only their first cells."""
    part = text.split(f"## {title}", 1)[1].split("\n#", 1)[0]
    rows = [
        line
        for line in part.splitlines()
        if line.startswith("| ") and not line.startswith("| model")
    ]
    if cells:
        rows = ["|" + "|".join(row.split("|")[1 : cells + 1]) + "|" for row in rows]
    return "".join(row + "\n" for row in rows)


def _known_scores(system, norm):
    """The scores of a hand-made system's trials, in TRIALS order, as constructed:
    cosine, or AS-norm (10 s - 1; 7.5 s - 1.5 with the hub on the test side)."""
    targets, non_targets, hub = SYSTEMS[system]
    out = []
    for _, b, label in TRIALS:
        i = int(b[-1])
        s = (targets if label else non_targets)[i]
        if norm == "asnorm":
            s = 7.5 * s - 1.5 if not label and i == hub else 10 * s - 1
        out.append(s)
    return out


def test_every_row_of_the_results_table(experiment):
    argv, results = experiment
    scoring.main(argv)
    text = results.read_text()
    assert _section(text, "Mean ± std over training seeds", 6) == EXPECTED_MEANS
    assert _section(text, "Paired EER differences") == EXPECTED_PAIRED
    assert _section(text, "Per seed", 6) == EXPECTED_PER_SEED
    # The calibration metrics of every seed's row from the known scores, by the
    # first-principles computations of test_metrics.
    labels = [label for _, _, label in TRIALS]
    for model, norm, seed, *cells in _rows(text, "Per seed"):
        system = ("floor", 0) if model == scoring.FLOOR else (model, int(seed))
        known = _known_scores(system, norm)
        want = [reference_act_dcf(known, labels, p) for p in (0.05, 0.01)]
        want += [reference_cllr(known, labels), reference_min_cllr(known, labels)]
        assert cells[3:] == [f"{v:.4f}" for v in want]
    assert "- test trials: 16 (8 target, 8 non-target) from 6 speakers\n" in text
    assert "AS-norm, top 2 of" in text and "- intervals: 20 bootstrap" in text
    assert text.endswith(" |\n\n### Flagged training utterances, "
                         "seed 0\n\n| 55 | 3 |\n")  # fmt: skip


def test_bootstrap_0_gives_the_differences_without_intervals(experiment):
    argv, results = experiment
    scoring.main(argv[:-4] + ["--bootstrap", "0"])
    text = results.read_text()
    assert _section(text, "Paired EER differences") == (
        "| a | b | cosine | -25.00 | none |\n| a | b | asnorm | -37.50 | none |\n"
    )
    assert "- intervals: none (--bootstrap 0)\n" in text


def test_a_failed_write_keeps_the_previous_results(experiment, monkeypatch, capsys):
    argv, results = experiment
    results.write_text("the previous results\n")

    def power_cut(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", power_cut)
    with pytest.raises(SystemExit) as stop:
        scoring.main(argv)
    assert stop.value.code == 1  # one line, no traceback
    assert capsys.readouterr().err.endswith("error: No space left on device\n")
    assert results.read_text() == "the previous results\n"
    assert [p.name for p in results.parent.iterdir() if p.name.startswith(".tmp")] == []


def _edit_npz(path, **changes):
    emb = dict(np.load(path))
    for key, value in changes.items():
        if value is None:
            del emb[key]
        else:
            emb[key] = value
    np.savez(path, **emb)


def _replace(argv, option, value):
    """``argv`` with ``option``'s value replaced (added when absent; None: removed)."""
    argv = list(argv)
    if value is None:
        i = argv.index(option)
        del argv[i : i + 2]
    elif option not in argv:
        argv += [option, value]
    else:
        argv[argv.index(option) + 1] = value
    return argv


def _at(tmp, template):
    return Path(template.format(tmp=tmp))


EXP = "{tmp}/exp/b/seed1/embed/test_embeddings.npz"
LABELS = "{tmp}/data/test/trial_label"
BAD_INPUTS = {
    # name: (change to the command line, change to the files, status, message)
    "missing embedding": (
        {}, lambda t: _edit_npz(_at(t, EXP), **{"A-t2": None}), 1,
        f"trial A-e*A-t2 ({LABELS}:3): no embedding of A-t2 in {EXP} (model b, seed 1)",
    ),
    "missing embeddings file": (
        {}, lambda t: (_at(t, EXP)).unlink(), 1,
        f"{EXP}: no such file (model b, seed 1); extract its embeddings first",
    ),
    "NaN embedding": (
        {}, lambda t: _edit_npz(_at(t, EXP), **{"B-n3": np.full(DIM, np.nan)}), 1,
        f"{EXP}: the embedding of B-n3 has NaN or Inf (model b, seed 1)",
    ),
    "zero embedding": (
        {}, lambda t: _edit_npz(_at(t, EXP), **{"B-n3": np.zeros(DIM)}), 1,
        f"{EXP}: the embedding of B-n3 has zero length (model b, seed 1)",
    ),
    "embedding of another size": (
        {}, lambda t: _edit_npz(_at(t, EXP), **{"B-n3": np.ones(3)}), 1,
        f"{EXP}: embeddings of different sizes, A-e: {DIM}, B-n3: 3 (model b, seed 1)",
    ),
    "missing cohort embedding": (
        {}, lambda t: _edit_npz(
            t / "exp/a/seed0/embed/cohort_embeddings.npz", c2=None), 1,
        "{tmp}/cohort_utt2spk: no embedding of c2 in "
        "{tmp}/exp/a/seed0/embed/cohort_embeddings.npz (model a, seed 0)",
    ),
    "duplicate trial": (
        {}, lambda t: (_at(t, LABELS)).write_text(
            (_at(t, LABELS)).read_text() + "A-e*A-t1 0\n"), 1,
        f"{LABELS}:17: trial A-e*A-t1 repeats the trial of line 2; list each "
        "trial once",
    ),
    "duplicate trial, reversed": (
        {}, lambda t: (_at(t, LABELS)).write_text(
            (_at(t, LABELS)).read_text() + "A-t1*A-e 1\n"), 1,
        f"{LABELS}:17: trial A-t1*A-e repeats the trial of line 2; list each "
        "trial once",
    ),
    "trial key without *": (
        {}, lambda t: (_at(t, LABELS)).write_text("A-e A-t1 1\n"), 1,
        f"{LABELS}:1: expected '<uttA>*<uttB> <0|1>', got 'A-e A-t1 1'",
    ),
    "trial key with two *": (
        {}, lambda t: _at(t, LABELS).write_text("A-e*A-t1*A-t2 1\n"), 1,
        f"{LABELS}:1: trial key 'A-e*A-t1*A-t2' is not <uttA>*<uttB>",
    ),
    "unreadable embeddings file": (
        {}, lambda t: _at(t, EXP).write_bytes(b"not a zip archive"), 1,
        f"{EXP}: cannot read it (model b, seed 1): ",
    ),
    "target trials only": (
        {}, lambda t: (_at(t, LABELS)).write_text("A-e*A-t1 1\nA-e*A-t2 1\n"), 1,
        f"{LABELS}: all 2 trials are target: EER and minDCF need both target (1) "
        "and non-target (0) trials",
    ),
    "first utterance without a speaker": (
        {}, lambda t: (t / "data/test/utt2spk").write_text("A-e spkA\n"), 1,
        f"trial B-e*B-t0 ({LABELS}:9): B-e is not in {{tmp}}/data/test/utt2spk (the "
        "bootstrap groups trials by the first utterance's speaker)",
    ),
    "top_n 1": (
        {"--top_n": "1"}, None, 2,
        "--top_n must be >= 2 (one score has no spread), got 1",
    ),
    "top_n -1": (
        {"--top_n": "-1"}, None, 2,
        "--top_n must be >= 2 (one score has no spread), got -1",
    ),
    "top_n above the cohort": (
        {"--top_n": "4"}, None, 2,
        "--top_n 4 is more than the 3 cohort speakers of {tmp}/cohort_utt2spk: give "
        "at most 3",
    ),
    "asnorm without a cohort": (
        {"--cohort_utt2spk": None}, None, 2,
        "--score_norm asnorm needs --cohort_utt2spk (the cohort's speakers)",
    ),
    "no seeds": (
        {"--seeds": ""}, None, 2, "--seeds '' names nothing: give one or more",
    ),
    "no models": (
        {"--models": " "}, None, 2, "--models ' ' names nothing: give one or more",
    ),
    "a seed twice": ({"--seeds": "1 0 1"}, None, 2, "--seeds names 1 twice"),
    "a seed that is no number": (
        {"--seeds": "0 one"}, None, 2, "--seeds '0 one': seeds are integers",
    ),
    "bootstrap -1": (
        {"--bootstrap": "-1"}, None, 2,
        "--bootstrap must be >= 0 (0: no intervals), got -1",
    ),
    "missing floor": (
        {"--floor": "{tmp}/nofloor.npz"}, None, 2,
        "--floor {tmp}/nofloor.npz: no such file or directory",
    ),
    "results over an input": (
        {"--results": LABELS}, None, 2,
        f"--results {LABELS} overlaps the input {{tmp}}/data/test: a tool never writes "
        "into its inputs; give an output path outside them",
    ),
    "results over the appendix": (
        {"--results": "{tmp}/flags.md"}, None, 2,
        "--results {tmp}/flags.md overlaps the input {tmp}/flags.md: a tool never "
        "writes into its inputs; give an output path outside them",
    ),
    "results in a missing directory": (
        {"--results": "{tmp}/nowhere/R.md"}, None, 2,
        "--results {tmp}/nowhere/R.md: directory {tmp}/nowhere does not exist",
    ),
    "a reference that is not a model": (
        {"--references": "a c"}, None, 2,
        "--references 'a c': c is not one of --models (a b)",
    ),
    "a reference twice": (
        {"--references": "b b"}, None, 2, "--references names b twice",
    ),
    "json over an input": (
        {"--json": "{tmp}/flags.md"}, None, 2,
        "--json {tmp}/flags.md overlaps the input {tmp}/flags.md: a tool never "
        "writes into its inputs; give an output path outside them",
    ),
    "json in a missing directory": (
        {"--json": "{tmp}/nowhere/r.json"}, None, 2,
        "--json {tmp}/nowhere/r.json: directory {tmp}/nowhere does not exist",
    ),
    "json is a directory": (
        {"--json": "{tmp}/data"}, None, 2, "--json {tmp}/data is a directory",
    ),
    "json is the results file": (
        {"--json": "{tmp}/RESULTS.md"}, None, 2,
        "--json {tmp}/RESULTS.md is the --results file: give another path",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_a_status(name, experiment, tmp_path, capsys):
    """Refused before anything is computed or written: the message is one line
    naming what is wrong (docs/reliability.md lists them)."""
    options, edit, status, message = BAD_INPUTS[name]
    argv, results = experiment
    for option, value in options.items():
        argv = _replace(argv, option, value and value.format(tmp=tmp_path))
    if edit is not None:
        edit(tmp_path)
    inputs = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_:
        scoring.main(argv)
    assert exit_.value.code == status
    err = capsys.readouterr().err
    want = f"{scoring.PROG}: error: {message.format(tmp=tmp_path)}"
    if message.endswith(": "):  # then a library's own words (numpy's) end the line
        assert err.startswith(want) and err.count("\n") == 1 and err.endswith("\n")
    else:
        assert err == want + "\n"
    assert not results.exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == inputs


def _rows(text: str, title: str):
    """The cells of each row of a section's table."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in _section(text, title).splitlines()
    ]


def _mean_std_cell(entry: dict, digits: int) -> str:
    """The Markdown's cell for a JSON entry's mean and std."""
    if entry["std"] is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def _interval_cell(diff: dict, digits: int = 2) -> str:
    if diff["low"] is None:
        return "none"
    return f"[{diff['low']:+.{digits}f}, {diff['high']:+.{digits}f}]"


def _json_metrics(entry: dict):
    """(JSON entry of one metric, digits shown) in the Markdown's column order."""
    return [
        (entry["eer_percent"], 2),
        *((entry["mindcf_by_p_target"][p], 4) for p in ("0.05", "0.01")),
        *((entry["actdcf_by_p_target"][p], 4) for p in ("0.05", "0.01")),
        (entry["cllr_bits"], 4),
        (entry["min_cllr_bits"], 4),
    ]


def check_json_against_markdown(data: dict, text: str) -> None:
    """Every number of the results Markdown is the JSON's, rounded as shown; and the
    JSON has nothing the Markdown lacks."""
    results = data["results"]
    means = _rows(text, "Mean ± std over training seeds")
    assert len(means) == sum(len(per_model) for per_model in results.values())
    for model, norm, n_seeds, *cells in means:
        entry = results[norm][model]
        assert int(n_seeds) == len(entry["seeds"])
        assert list(entry["mindcf_by_p_target"]) == ["0.05", "0.01"]
        assert cells == [_mean_std_cell(m, d) for m, d in _json_metrics(entry)]
    per_seed = _rows(text, "Per seed")
    assert len(per_seed) == sum(
        len(e["seeds"]) for per_model in results.values() for e in per_model.values()
    )
    for model, norm, seed, *cells in per_seed:
        entry = results[norm][model]
        assert cells == [
            f"{m['per_seed'][seed]:.{d}f}" for m, d in _json_metrics(entry)
        ]
    paired = [
        [
            d["model"],
            d["baseline"],
            d["scoring"],
            f"{d['mean']:+.2f}",
            _interval_cell(d),
        ]
        for d in data["paired_eer_differences"]
    ]
    assert _rows(text, "Paired EER differences") == paired
    scoring_diffs = [
        [
            d["model"],
            d["scoring"],
            d["baseline_scoring"],
            d["metric"],
            f"{d['mean']:+.{2 if d['metric'] == 'eer' else 4}f}",
            _interval_cell(d, 2 if d["metric"] == "eer" else 4),
        ]
        for d in data["paired_scoring_differences"]
    ]
    if scoring_diffs:
        assert _rows(text, "Paired differences between scorings") == scoring_diffs
    else:
        assert "## Paired differences between scorings" not in text


def test_json_holds_the_numbers_of_the_markdown(experiment, tmp_path):
    argv, results = experiment
    scoring.main(argv + ["--json", str(tmp_path / "results.json")])
    data = json.loads((tmp_path / "results.json").read_text())
    text = results.read_text()
    check_json_against_markdown(data, text)
    assert data["tool"] == scoring.JSON_TOOL and data["format_version"] == 1
    assert data["models"] == ["a", "b"] and data["seeds"] == [0, 1]
    assert data["references"] == ["a"]
    assert data["test_trials"] == {"total": 16, "target": 8, "non_target": 8}
    assert data["score_normalisations"] == ["cosine", "asnorm"]
    assert data["asnorm_top_n"] == 2 and data["floor"] == scoring.FLOOR
    assert data["bootstrap"] == {"resamples": 20, "resampled_units": "6 speakers"}
    assert list(data["results"]) == ["cosine", "asnorm"]
    assert list(data["results"]["cosine"]) == ["a", "b", scoring.FLOOR]
    # The values known by construction (EXPECTED_* above), unrounded.
    a_cos = data["results"]["cosine"]["a"]
    assert a_cos["eer_percent"]["per_seed"] == {"0": 25.0, "1": 0.0}
    assert a_cos["eer_percent"]["mean"] == pytest.approx(12.5)
    assert a_cos["eer_percent"]["std"] == pytest.approx(25 / 2**0.5)
    floor = data["results"]["cosine"][scoring.FLOOR]
    assert floor["seeds"] == [0] and floor["eer_percent"]["std"] is None
    assert data["paired_eer_differences"][1] == {
        "model": "a", "baseline": "b", "scoring": "asnorm",
        "mean": pytest.approx(-37.5), "low": pytest.approx(-37.5),
        "high": pytest.approx(-37.5),
    }  # fmt: skip


def test_json_without_intervals_or_asnorm(experiment, tmp_path):
    argv, results = experiment
    argv = _replace(_replace(argv, "--bootstrap", "0"), "--score_norm", "none")
    scoring.main(argv + ["--json", str(tmp_path / "results.json")])
    data = json.loads((tmp_path / "results.json").read_text())
    check_json_against_markdown(data, results.read_text())
    assert data["score_normalisations"] == ["cosine"] and data["asnorm_top_n"] is None
    assert [(d["low"], d["high"]) for d in data["paired_eer_differences"]] == [
        (None, None)
    ]


def test_references_give_each_reference_against_every_other_model(experiment, tmp_path):
    argv, results = experiment
    # Speaker B's trials of model b, seed 0 separated (speaker A's keep EER 50): the
    # two speakers now differ, so the bootstrap intervals have a width.
    path = tmp_path / "exp/b/seed0/embed/test_embeddings.npz"
    t0 = np.load(path)["B-t0"]
    _edit_npz(path, **{"B-t2": t0, "B-t3": t0})
    scoring.main(argv + ["--references", "b a", "--json", str(tmp_path / "r.json")])
    data = json.loads((tmp_path / "r.json").read_text())
    check_json_against_markdown(data, results.read_text())
    assert data["references"] == ["b", "a"]
    diffs = {
        (d["model"], d["baseline"], d["scoring"]): d
        for d in data["paired_eer_differences"]
    }
    assert list(diffs) == [
        ("b", "a", "cosine"), ("a", "b", "cosine"),
        ("b", "a", "asnorm"), ("a", "b", "asnorm"),
    ]  # fmt: skip
    for norm in ("cosine", "asnorm"):
        ab, ba = diffs["a", "b", norm], diffs["b", "a", norm]
        assert ab["low"] < ab["mean"] < 0 and ab["mean"] < ab["high"]
        assert ba["mean"] == -ab["mean"]
        assert ba["low"] == pytest.approx(-ab["high"], abs=1e-9)
        assert ba["high"] == pytest.approx(-ab["low"], abs=1e-9)
    # The default reference (the first model) gives the same (a, b) numbers.
    scoring.main(argv + ["--json", str(tmp_path / "default.json")])
    default = json.loads((tmp_path / "default.json").read_text())
    assert default["paired_eer_differences"] == [
        diffs["a", "b", "cosine"],
        diffs["a", "b", "asnorm"],
    ]
