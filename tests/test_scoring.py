"""EER and minDCF (ESPnet's helpers, through the recipe's scoring) on score lists
whose answers are worked out by hand."""

import numpy as np
import pytest

from espnet_plugin_intertopk.recipe import scoring
from espnet_plugin_intertopk.recipe.scoring import error_rates


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
    assert got == {"eer": 0.0, "mindcf@0.05": 0.0, "mindcf@0.01": 0.0}


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
    got = scoring.as_norm(emb, pairs, cohort, top_n)
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
    means = scoring.cohort_means(emb, {"a1": "A", "a2": "A", "b1": "B"})
    assert np.allclose(means, [[2**-0.5, 2**-0.5], [-1.0, 0.0]])


def _trials(rng, n_speakers=10, per_speaker=20):
    groups = np.repeat(np.arange(n_speakers), per_speaker)
    labels = rng.integers(0, 2, groups.size)
    return labels, groups


def test_bootstrap_of_identical_systems_is_zero_width_at_zero():
    rng = np.random.default_rng(1)
    labels, groups = _trials(rng)
    seeds = [rng.standard_normal(labels.size) + labels for _ in range(3)]
    point, low, high = scoring.paired_bootstrap(
        seeds, seeds, labels, groups, scoring.eer, n_resamples=200
    )
    assert point == low == high == 0.0


def test_bootstrap_of_a_constant_shift_gives_that_shift():
    rng = np.random.default_rng(2)
    labels, groups = _trials(rng)
    a = [rng.standard_normal(labels.size) for _ in range(2)]
    b = [x - 0.3 for x in a]
    mean_score = lambda s, _labels: float(np.mean(s))  # noqa: E731
    point, low, high = scoring.paired_bootstrap(
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
        point, low, high = scoring.paired_bootstrap(
            a, b, labels, groups, scoring.eer, n_resamples=300
        )
        assert low <= point <= high and point < 0  # a separates better: lower EER
        widths.append(high - low)
    assert widths[1] > widths[0]


def test_results_of_two_models_over_two_seeds(tmp_path):
    """scoring.main on generated embeddings: mean ± std rows equal the per-seed error
    rates computed directly, paired rows for the second model, a floor row."""
    rng = np.random.default_rng(4)
    speakers = {f"s{i}": [f"s{i}u{j}" for j in range(4)] for i in range(6)}
    utt2spk = {u: s for s, us in speakers.items() for u in us}
    utts = sorted(utt2spk)
    pairs = [(a, b) for i, a in enumerate(utts) for b in utts[i + 1 :]]
    test = tmp_path / "test"
    test.mkdir()
    (test / "trial_label").write_text(
        "".join(f"{a}*{b} {int(utt2spk[a] == utt2spk[b])}\n" for a, b in pairs)
    )
    (test / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utt2spk.items()))
    cohort_spk = {f"c{i}u{j}": f"c{i}" for i in range(5) for j in range(2)}
    (tmp_path / "cohort_utt2spk").write_text(
        "".join(f"{u} {s}\n" for u, s in cohort_spk.items())
    )
    centres = {s: rng.standard_normal(16) for s in speakers}
    direct = {}
    for model, noise in (("a", 0.8), ("b", 1.5)):
        for seed in (0, 1):
            emb = {
                u: centres[utt2spk[u]] + noise * rng.standard_normal(16) for u in utts
            }
            d = tmp_path / "exp" / model / f"seed{seed}" / "embed"
            d.mkdir(parents=True)
            np.savez(d / "test_embeddings.npz", **emb)
            cohort = {u: rng.standard_normal(16) for u in cohort_spk}
            np.savez(d / "cohort_embeddings.npz", **cohort)
            unit = scoring.unit_embeddings(emb)
            labels = np.array([int(utt2spk[a] == utt2spk[b]) for a, b in pairs])
            direct[(model, seed)] = error_rates(
                scoring.cosine_scores(unit, pairs), labels
            )
    floor = {u: rng.standard_normal(16) for u in utts}
    np.savez(tmp_path / "floor.npz", **floor)
    results = tmp_path / "RESULTS.md"
    appendix = tmp_path / "flags.md"  # as the cleaning stage appends its evaluation
    appendix.write_text("### Flagged training utterances, seed 0\n\n| 55 | 3 |\n")
    scoring.main(
        ["--expdir", str(tmp_path / "exp"), "--models", "a b", "--seeds", "0 1",
         "--test_dir", str(test), "--results", str(results), "--score_norm", "asnorm",
         "--cohort_utt2spk", str(tmp_path / "cohort_utt2spk"), "--top_n", "3",
         "--floor", str(tmp_path / "floor.npz"), "--bootstrap", "50",
         "--append", str(appendix)]
    )  # fmt: skip
    text = results.read_text()
    assert text.endswith("\n\n" + appendix.read_text())
    rows = {
        tuple(c.strip() for c in line.split("|")[1:3]): line
        for line in text.split("## Paired")[0].splitlines()
        if line.startswith("| ") and "±" in line
    }
    assert set(rows) == {
        ("a", "cosine"),
        ("a", "asnorm"),
        ("b", "cosine"),
        ("b", "asnorm"),
    }
    eers = [direct[("a", s)]["eer"] for s in (0, 1)]
    want = f"{np.mean(eers):.2f} ± {np.std(eers, ddof=1):.2f}"
    assert want in rows[("a", "cosine")]
    assert "| a | b | cosine |" in text and "| a | b | asnorm |" in text
    assert "| untrained floor (MFCC mean+std) | cosine | 1 |" in text
    assert (
        f"{len(pairs)} (36 target, {len(pairs) - 36} non-target) from 6 speakers"
        in text
    )
