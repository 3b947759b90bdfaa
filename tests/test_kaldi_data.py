"""Data-directory tools: checks with clear errors, the validation hold-out, the cohort
list, nested training subsets, trial lists, the utterances of a trial list; input
directories are only read."""

import itertools
import shutil

import numpy as np
import pytest
import soundfile

from espnet_plugin_intertopk.recipe import kaldi_data
from espnet_plugin_intertopk.recipe.kaldi_data import DataDirError, read_map
from espnet_plugin_intertopk.safe_io import ownership

from conftest import digest, trial_kinds


def test_audio_that_is_missing_or_unreadable_is_named(small_corpus, tmp_path):
    d = tmp_path / "train"
    shutil.copytree(small_corpus / "train", d)
    wavs = read_map(d / "wav.scp")
    first = sorted(wavs)[0]
    (d / "wav.scp").write_text(
        "".join(
            f"{u} {'/nowhere/x.wav' if u == first else p}\n" for u, p in wavs.items()
        )
    )
    with pytest.raises(DataDirError, match="/nowhere/x.wav does not exist"):
        kaldi_data.check_data_dir(d, "train")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all")
    (d / "wav.scp").write_text(
        "".join(f"{u} {garbage if u == first else p}\n" for u, p in wavs.items())
    )
    with pytest.raises(DataDirError, match="cannot read"):
        kaldi_data.check_data_dir(d, "train")


def test_training_set_with_one_speaker_is_refused(small_corpus, tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    utt, path = sorted(read_map(small_corpus / "train" / "wav.scp").items())[0]
    (d / "wav.scp").write_text(f"{utt} {path}\n")
    (d / "utt2spk").write_text(f"{utt} s1\n")
    (d / "spk2utt").write_text(f"s1 {utt}\n")
    with pytest.raises(DataDirError, match="at least 2"):
        kaldi_data.check_data_dir(d, "train")


def _tree(root):
    """Every path under ``root`` with its bytes and modification time: a file or
    directory written, added or removed (even a temporary one) changes it."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.is_file() and p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def test_no_subcommand_writes_into_its_input(small_corpus, tmp_path):
    train, test = small_corpus / "train", small_corpus / "test"
    before = _tree(small_corpus)
    for argv in (
        ["check", "train", str(train)],
        ["check", "test", str(test)],
        ["shape", str(train / "wav.scp"), str(tmp_path / "train_shape")],
        ["copy", "train", str(train), str(tmp_path / "copy")],
        ["holdout", str(train), str(tmp_path / "tr"), str(tmp_path / "va")]
        + ["--n_speakers", "2", "--n_trials", "8"],
        ["cohort", str(train), str(tmp_path / "cohort")],
        ["subset", str(train), str(tmp_path / "subset"), "--n_speakers", "2"],
        ["utterances", str(test), str(tmp_path / "utterances")],
    ):
        kaldi_data.main(argv)
        assert _tree(small_corpus) == before, argv
    # The outputs were written (the comparison above is not vacuous).
    assert (tmp_path / "copy" / "wav.scp").read_bytes() == (
        train / "wav.scp"
    ).read_bytes()
    assert (tmp_path / "cohort" / "trial.scp").stat().st_size > 0
    assert (tmp_path / "utterances" / "trial2.scp").stat().st_size > 0


def test_holdout_splits_speakers_and_makes_validation_trials(small_corpus, tmp_path):
    before = digest(small_corpus)
    out_train, out_valid = tmp_path / "train", tmp_path / "valid"
    kaldi_data.holdout(small_corpus / "train", out_train, out_valid, 2, 8, seed=0)
    assert digest(small_corpus) == before
    train_spk = set(read_map(out_train / "spk2utt"))
    valid_spk = set(read_map(out_valid / "spk2utt"))
    assert len(train_spk) == 2 and len(valid_spk) == 2 and not train_spk & valid_spk
    assert train_spk | valid_spk == set(read_map(small_corpus / "train" / "spk2utt"))
    kaldi_data.check_data_dir(out_train, "train")
    kaldi_data.check_data_dir(out_valid, "test")
    utt2spk = read_map(out_valid / "utt2spk")
    labels = read_map(out_valid / "trial_label")
    assert sorted(labels.values()) == ["0"] * 4 + ["1"] * 4
    for key, label in labels.items():
        a, b = key.split("*")
        assert label == ("1" if utt2spk[a] == utt2spk[b] else "0")
    with pytest.raises(DataDirError, match="at least|>= 2"):
        kaldi_data.holdout(small_corpus / "train", out_train, out_valid, 3, 8, seed=0)


def test_zero_validation_trials_means_every_pair(small_corpus, tmp_path):
    out_train, out_valid = tmp_path / "train", tmp_path / "valid"
    kaldi_data.holdout(small_corpus / "train", out_train, out_valid, 2, 0, seed=0)
    utt2spk = read_map(out_valid / "utt2spk")
    keys = {tuple(sorted(k.split("*"))) for k in read_map(out_valid / "trial_label")}
    # Every unordered pair of the held-out utterances, once.
    assert keys == set(itertools.combinations(sorted(utt2spk), 2))


def test_cohort_lists_utterances_of_every_training_speaker(small_corpus, tmp_path):
    kaldi_data.cohort_list(small_corpus / "train", tmp_path / "cohort", per_speaker=2)
    utt2spk = read_map(tmp_path / "cohort" / "utt2spk")
    assert sorted(set(utt2spk.values())) == sorted(
        read_map(small_corpus / "train" / "spk2utt")
    )
    assert all(list(utt2spk.values()).count(s) == 2 for s in set(utt2spk.values()))
    keys = read_map(tmp_path / "cohort" / "trial.scp")
    assert sorted(keys) == sorted(f"{u}*{u}" for u in utt2spk)


def _first_by_hand(utt2spk, n_speakers, per_speaker):
    """utterance -> speaker of the first ``n_speakers`` speakers in sorted order (0:
    all) with each one's first ``per_speaker`` utterances (0: all), from utt2spk."""
    speakers = sorted(set(utt2spk.values()))[: n_speakers or len(utt2spk)]
    out = {}
    for s in speakers:
        mine = sorted(u for u, t in utt2spk.items() if t == s)
        out.update({u: s for u in mine[: per_speaker or len(mine)]})
    return out


def test_cohort_of_the_first_speakers(small_corpus, tmp_path, capsys):
    src = small_corpus / "train"
    argv = ["cohort", src, tmp_path / "two", "--n_speakers", "2", "--per_speaker", "2"]
    assert _cli(argv, capsys)[0] == 0
    utt2spk = read_map(tmp_path / "two" / "utt2spk")
    assert utt2spk == _first_by_hand(read_map(src / "utt2spk"), 2, 2)
    assert len(set(utt2spk.values())) == 2 and len(utt2spk) == 4
    assert sorted(read_map(tmp_path / "two" / "trial.scp")) == sorted(
        f"{u}*{u}" for u in utt2spk
    )
    # 0: every speaker, the same lists as without the option.
    assert _cli(["cohort", src, tmp_path / "zero", "--n_speakers", "0"], capsys)[0] == 0
    assert _cli(["cohort", src, tmp_path / "default"], capsys)[0] == 0
    assert digest(tmp_path / "zero") == digest(tmp_path / "default")
    assert len(set(read_map(tmp_path / "zero" / "utt2spk").values())) == 4
    status, err = _cli(["cohort", src, tmp_path / "one", "--n_speakers", "1"], capsys)
    assert status == 2 and "argument --n_speakers: invalid" in err
    assert not (tmp_path / "one").exists()


def test_subset_takes_the_first_speakers_and_utterances_nested(small_corpus, tmp_path,
                                                               capsys):  # fmt: skip
    src = small_corpus / "train"
    given = read_map(src / "utt2spk")  # 4 speakers of 3 utterances
    wavs = read_map(src / "wav.scp")
    made = {}
    for n, per in ((2, 0), (3, 0), (4, 0), (2, 2), (3, 2), (3, 1)):
        out = tmp_path / f"sub{n}_{per}"
        argv = ["subset", src, out, "--n_speakers", n]
        assert _cli(argv + (["--per_speaker", per] if per else []), capsys)[0] == 0
        kaldi_data.check_data_dir(out, "train")  # wav.scp, utt2spk, spk2utt agree
        utt2spk = read_map(out / "utt2spk")
        assert utt2spk == _first_by_hand(given, n, per), (n, per)
        assert read_map(out / "wav.scp") == {u: wavs[u] for u in utt2spk}
        spk2utt = {s: u.split() for s, u in read_map(out / "spk2utt").items()}
        assert {u: s for s, us in spk2utt.items() for u in us} == utt2spk
        assert (out / "category2utt").read_text() == (out / "spk2utt").read_text()
        made[n, per] = set(utt2spk.items())
    assert made[4, 0] == set(given.items())  # all of them: the input's lists
    assert len(made[3, 2]) == 6 and len(made[3, 1]) == 3
    # Smaller selections are nested in larger ones.
    nested = [((2, 0), (3, 0)), ((3, 0), (4, 0)), ((2, 2), (3, 2)), ((3, 2), (3, 0)),
              ((3, 1), (3, 2)), ((2, 2), (2, 0))]  # fmt: skip
    for small, large in nested:
        assert made[small] < made[large], (small, large)


def test_subset_refuses_more_speakers_or_a_directory_it_did_not_make(
    small_corpus, tmp_path, capsys
):
    src = small_corpus / "train"
    out = tmp_path / "out"
    status, err = _cli(["subset", src, out, "--n_speakers", 5], capsys)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err == f"kaldi_data: error: {src}: 4 speakers, fewer than --n_speakers 5\n"
    assert not out.exists()
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    status, err = _cli(["subset", src, users, "--n_speakers", 2], capsys)
    assert status == 2 and err.count("\n") == 1 and "not made by kaldi_data" in err
    assert [p.name for p in users.iterdir()] == ["notes.txt"]
    # Its own output: replaced whole by the next subset.
    assert _cli(["subset", src, out, "--n_speakers", 3], capsys)[0] == 0
    assert _cli(["subset", src, out, "--n_speakers", 2], capsys)[0] == 0
    assert len(read_map(out / "spk2utt")) == 2
    for argv, option in (
        (["--n_speakers", "1"], "--n_speakers"),
        (["--n_speakers", "x"], "--n_speakers"),
        (["--n_speakers", "2", "--per_speaker", "-1"], "--per_speaker"),
    ):
        status, err = _cli(["subset", src, tmp_path / "bad", *argv], capsys)
        assert status == 2 and "usage: kaldi_data subset" in err
        assert f"argument {option}: invalid" in err
    status, err = _cli(["subset", src, tmp_path / "bad"], capsys)
    assert status == 2 and "--n_speakers" in err and "required" in err
    assert not (tmp_path / "bad").exists()


def test_utterances_lists_each_utterance_of_the_trials_once(small_corpus, tmp_path,
                                                            capsys):  # fmt: skip
    src = small_corpus / "test"
    out = tmp_path / "utts"
    assert _cli(["utterances", src, out], capsys) == (0, "")
    wavs = read_map(src / "wav.scp")
    sides = [k.split("*") for k in read_map(src / "trial_label")]
    utts = sorted({u for pair in sides for u in pair})
    assert len(utts) < 2 * len(sides)  # utterances in several trials: listed once
    keys = [f"{u}*{u}" for u in utts]
    for name in ("trial.scp", "trial2.scp"):
        assert [line.split()[0] for line in _lines(out / name)] == keys  # sorted, once
        assert read_map(out / name) == {f"{u}*{u}": wavs[u] for u in utts}
    assert _lines(out / "trial_label") == [f"{k} 1" for k in keys]
    names = sorted(p.name for p in out.iterdir())
    assert names == [ownership.MARKER, "trial.scp", "trial2.scp", "trial_label"]


def _hand_made_trials(directory, pairs):
    """trial.scp, trial2.scp and trial_label of ``pairs``, each side's path naming the
    list that gives it."""
    directory.mkdir(exist_ok=True)
    _write(directory / "trial.scp", [f"{x}*{y} /first/{x}.wav" for x, y in pairs])
    _write(directory / "trial2.scp", [f"{x}*{y} /second/{y}.wav" for x, y in pairs])
    _write(directory / "trial_label", [f"{x}*{y} 0" for x, y in pairs])
    return directory


def test_utterances_takes_each_sides_path_from_its_own_list(tmp_path, capsys):
    # "b" only ever second, "c" only first, "a" and "e" on both sides.
    pairs = [("a", "b"), ("c", "b"), ("a", "e"), ("e", "a")]
    trials = _hand_made_trials(tmp_path / "trials", pairs)
    out = tmp_path / "out"
    assert _cli(["utterances", trials, out], capsys) == (0, "")
    # trial.scp is read first: an utterance it names keeps that path.
    expected = {"a": "/first/a.wav", "b": "/second/b.wav", "c": "/first/c.wav",
                "e": "/first/e.wav"}  # fmt: skip
    for name in ("trial.scp", "trial2.scp"):
        assert _lines(out / name) == [f"{u}*{u} {p}" for u, p in expected.items()]
    assert _lines(out / "trial_label") == [f"{u}*{u} 1" for u in expected]
    # Without the trial e*a, e is only ever second: its path is trial2.scp's.
    _hand_made_trials(trials, pairs[:3])
    assert _cli(["utterances", trials, out], capsys) == (0, "")
    expected["e"] = "/second/e.wav"
    assert _lines(out / "trial.scp") == [f"{u}*{u} {p}" for u, p in expected.items()]


def test_utterances_without_trial2_is_one_line(small_corpus, tmp_path, capsys):
    trials = _copy(small_corpus, tmp_path, "test")
    (trials / "trial2.scp").unlink()
    out = tmp_path / "out"
    status, err = _cli(["utterances", trials, out], capsys)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"kaldi_data: error: {trials / 'trial2.scp'}: cannot read")
    assert not out.exists()


@pytest.mark.parametrize(
    "first, second, message",
    [
        (["a*b /x/a.wav", "c /x/c.wav"], ["a*b /x/b.wav", "c /x/c.wav"],
         "trial.scp:2: trial key 'c' is not <uttA>*<uttB>"),
        (["a*b /x/a.wav", "a*b*c /x/a.wav"], ["a*b /x/b.wav", "a*b*c /x/c.wav"],
         "trial.scp:2: trial key 'a*b*c' is not <uttA>*<uttB>"),
        (["a*b /x/a.wav", "a*c /x/a.wav"], ["a*b /x/b.wav"],
         "trial.scp and trial2.scp list other trials (a*c is in one only)"),
    ],
)  # fmt: skip
def test_utterances_refuses_malformed_trial_keys(tmp_path, capsys, first, second,
                                                 message):  # fmt: skip
    trials = tmp_path / "trials"
    trials.mkdir()
    _write(trials / "trial.scp", first)
    _write(trials / "trial2.scp", second)
    out = tmp_path / "out"
    status, err = _cli(["utterances", trials, out], capsys)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not out.exists()


def _grouped(n_speakers=6, per_speaker=3, group_size=3):
    """speaker -> utterances, utterance -> speaker, speaker -> group."""
    utts = {
        f"s{i}": [f"s{i}-u{j}" for j in range(per_speaker)] for i in range(n_speakers)
    }
    spk_of = {u: s for s, us in utts.items() for u in us}
    return utts, spk_of, {s: f"g{i // group_size}" for i, s in enumerate(utts)}


# 6 speakers of 3 utterances in 2 groups of 3: 18 target pairs; 2 x 3 x 9 = 54
# non-target pairs within groups and 9 x 9 = 81 across groups.
@pytest.mark.parametrize(
    "ratio, within_group, expected",
    [
        (2.0, 0.25, (18, 9, 27)),
        (2.0, 0.5, (18, 18, 18)),
        (2.0, 1.0, (18, 36, 0)),
        (4.0, 1.0, (18, 54, 18)),  # 72 wanted, only 54 within: the rest across
        (6.0, 0.1, (18, 27, 81)),  # 108 wanted, 11 within, only 81 across: 27 within
        (float("inf"), 0.1, (18, 54, 81)),  # every pair
        (float("inf"), 0.9, (18, 54, 81)),
    ],
)
def test_make_trials_draws_that_fraction_of_non_targets_within_groups(
    ratio, within_group, expected
):
    utts, spk_of, group_of = _grouped()
    for seed in range(3):
        trials = kaldi_data.make_trials(
            utts, 100, ratio, np.random.default_rng(seed), group_of, within_group
        )
        kinds = trial_kinds(trials, spk_of, group_of)  # labels right, no pair twice
        assert (kinds["target"], kinds["within"], kinds["across"]) == expected


def test_make_trials_draws_as_before_without_a_within_group_fraction():
    utts, spk_of, group_of = _grouped()
    drawn = []
    for kwargs in (
        {},
        {"group_of": None},
        {"group_of": group_of},
        {"group_of": group_of, "within_group": 0.0},
        {"group_of": None, "within_group": 0.5},
    ):
        rng = np.random.default_rng(11)
        trials = kaldi_data.make_trials(utts, 10, 2.0, rng, **kwargs)
        # The same trials, and the generator left where it was: later draws (the
        # corpus's) are the same as before the option.
        drawn.append((trials, rng.bit_generator.state))
    assert all(d == drawn[0] for d in drawn[1:])
    kinds = trial_kinds(drawn[0][0], spk_of, group_of)
    assert kinds["target"] == 10 and kinds["within"] + kinds["across"] == 20
    # A fraction within groups is another draw (the comparison above is not vacuous).
    rng = np.random.default_rng(11)
    assert kaldi_data.make_trials(utts, 10, 2.0, rng, group_of, 0.5) != drawn[0][0]


def _copy(small_corpus, tmp_path, split):
    d = tmp_path / split
    shutil.copytree(small_corpus / split, d)
    return d


def _lines(path):
    return path.read_text().splitlines()


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("name", ["wav.scp", "utt2spk", "spk2utt"])
def test_a_key_given_twice_is_refused_with_both_lines(small_corpus, tmp_path, name):
    d = _copy(small_corpus, tmp_path, "train")
    lines = _lines(d / name)
    _write(d / name, lines + [lines[0]])
    key = lines[0].split()[0]
    with pytest.raises(
        DataDirError,
        match=rf"{name}:{len(lines) + 1}: {key} is listed twice \(also on line 1\)",
    ):
        kaldi_data.check_data_dir(d, "train")


def test_a_trial_given_twice_is_refused(small_corpus, tmp_path):
    d = _copy(small_corpus, tmp_path, "test")
    lines = _lines(d / "trial_label")
    _write(d / "trial_label", lines[:3] + [lines[1]] + lines[3:])
    with pytest.raises(DataDirError, match=r"trial_label:4: .* listed twice .*line 2"):
        kaldi_data.check_data_dir(d, "test")


def _spk2utt_cases(spk2utt, utt2spk):
    """(description, new spk2utt lines, expected message) for spk2utt lists that do
    not match utt2spk."""
    (s1, u1), (s2, u2) = list(spk2utt.items())[:2]
    moved = u1.split()[0]
    rest = list(spk2utt.items())[2:]
    own = [f"{s} {u}" for s, u in rest]
    return [
        (
            "a speaker utt2spk does not have",
            [f"{s1} {u1}", f"{s2} {u2}", "ghost ghost-utt1", *own],
            r"spk2utt:3: utterance ghost-utt1 of speaker ghost is not in utt2spk",
        ),
        (
            "an utterance under another speaker",
            [f"{s1} {' '.join(u1.split()[1:])}", f"{s2} {u2} {moved}", *own],
            rf"spk2utt:2: utterance {moved} is under speaker {s2}, but utt2spk line "
            rf"\d+ gives {s1}",
        ),
        (
            "an utterance left out",
            [f"{s1} {' '.join(u1.split()[1:])}", f"{s2} {u2}", *own],
            rf"utt2spk:\d+: utterance {moved} \(speaker {s1}\) is missing from "
            "spk2utt",
        ),
        (
            "an utterance under two speakers",
            [f"{s1} {u1}", f"{s2} {u2} {moved}", *own],
            rf"spk2utt:2: utterance {moved} is listed twice \(also on line 1\)",
        ),
    ]


@pytest.mark.parametrize("case", range(4))
def test_spk2utt_must_match_utt2spk(small_corpus, tmp_path, case):
    d = _copy(small_corpus, tmp_path, "train")
    spk2utt, utt2spk = read_map(d / "spk2utt"), read_map(d / "utt2spk")
    _, lines, message = _spk2utt_cases(spk2utt, utt2spk)[case]
    _write(d / "spk2utt", lines)
    with pytest.raises(DataDirError, match=message + ".*rebuild it from utt2spk"):
        kaldi_data.check_data_dir(d, "train")


def test_an_utterance_without_a_speaker_is_refused(small_corpus, tmp_path):
    d = _copy(small_corpus, tmp_path, "train")
    wavs = _lines(d / "wav.scp")
    _write(d / "wav.scp", wavs + [f"extra-utt {wavs[0].split()[1]}"])
    with pytest.raises(
        DataDirError, match=rf"wav.scp:{len(wavs) + 1}: extra-utt has no speaker"
    ):
        kaldi_data.check_data_dir(d, "train")


@pytest.mark.parametrize(
    "rate, samples, expected",
    [
        (8000, np.zeros(800), r"is 8000 Hz with 1 channel\(s\); user audio must be "
         r"16 kHz mono: convert it, e\.g\. 'sox in\.wav -r 16000 -c 1"),
        (16000, np.zeros((1600, 2)), r"is 16000 Hz with 2 channel\(s\); user audio "
         "must be 16 kHz mono"),
        (16000, np.zeros(0), r"has no samples \(zero-length audio\)"),
    ],
)  # fmt: skip
def test_audio_must_be_16k_mono_and_not_empty(
    small_corpus, tmp_path, rate, samples, expected
):
    bad = tmp_path / "bad.wav"
    soundfile.write(bad, samples, rate)
    for split, kind in (("train", "train"), ("test", "test")):
        d = _copy(small_corpus, tmp_path, split)
        wavs = _lines(d / "wav.scp")
        _write(d / "wav.scp", [f"{wavs[0].split()[0]} {bad}", *wavs[1:]])
        with pytest.raises(DataDirError, match=rf"wav.scp:1: {bad} {expected}"):
            kaldi_data.check_data_dir(d, kind)


@pytest.mark.parametrize(
    "split, name, message",
    [
        ("train", "wav.scp", "no utterances"),
        ("train", "utt2spk", "no utterances"),
        ("test", "trial_label", "no trials"),
    ],
)
def test_an_empty_list_is_refused(small_corpus, tmp_path, split, name, message):
    d = _copy(small_corpus, tmp_path, split)
    (d / name).write_text("")
    with pytest.raises(DataDirError, match=rf"{name}: {message} \(the file is empty\)"):
        kaldi_data.check_data_dir(d, "train" if split == "train" else "test")


def _rekey(d, old, new):
    for name in ("trial.scp", "trial2.scp", "trial_label"):
        (d / name).write_text((d / name).read_text().replace(f"{old} ", f"{new} "))


def test_trial_keys_must_join_two_utterances_of_the_set(small_corpus, tmp_path):
    d = _copy(small_corpus, tmp_path, "test")
    first = _lines(d / "trial_label")[0].split()[0]
    a, b = first.split("*")
    _rekey(d, first, f"{a}-{b}")
    with pytest.raises(DataDirError, match=r"trial_label:1: trial key .* is not '<"):
        kaldi_data.check_data_dir(d, "test")
    _rekey(d, f"{a}-{b}", f"{a}*nobody")
    with pytest.raises(
        DataDirError, match=r"trial_label:1: nobody \(of trial .*\) is not an utter"
    ):
        kaldi_data.check_data_dir(d, "test")
    _rekey(d, f"{a}*nobody", first)
    kaldi_data.check_data_dir(d, "test")  # restored: accepted
    utt2spk = [line for line in _lines(d / "utt2spk") if not line.startswith(b)]
    _write(d / "utt2spk", utt2spk)  # utt2spk, when given, must know both sides
    with pytest.raises(DataDirError, match=rf"{b} \(of trial .*\) has no speaker"):
        kaldi_data.check_data_dir(d, "test")


def _cli(argv, capsys):
    """(exit status, stderr) of the command line; 0 when it returned."""
    try:
        kaldi_data.main([str(a) for a in argv])
        status = 0
    except SystemExit as done:
        status = done.code
    return status, capsys.readouterr().err


def test_data_errors_exit_1_with_one_line(small_corpus, tmp_path, capsys):
    d = _copy(small_corpus, tmp_path, "train")
    (d / "spk2utt").unlink()
    for argv in (["check", "train", d], ["holdout", d, tmp_path / "a", tmp_path / "b",
                                         "--n_speakers", "2"]):  # fmt: skip
        status, err = _cli(argv, capsys)
        assert status == 1 and err.count("\n") == 1, err
        assert err.startswith(f"kaldi_data: error: {d / 'spk2utt'}")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "option, value", [("--n_speakers", "1"), ("--n_trials", "1"), ("--seed", "x")]
)
def test_argument_errors_exit_2_with_usage(small_corpus, tmp_path, capsys, option,
                                           value):  # fmt: skip
    argv = ["holdout", small_corpus / "train", tmp_path / "a", tmp_path / "b",
            "--n_speakers", "2", option, value]  # fmt: skip
    status, err = _cli(argv, capsys)
    assert status == 2 and "usage: kaldi_data holdout" in err
    assert f"argument {option}: invalid" in err
    assert not (tmp_path / "a").exists()


def test_an_output_that_overlaps_an_input_is_refused(small_corpus, tmp_path, capsys):
    d = _copy(small_corpus, tmp_path, "train")
    t = _copy(small_corpus, tmp_path, "test")
    before = digest(tmp_path)
    for argv in (
        ["copy", "train", d, d],
        ["copy", "train", d, d / "inside"],
        ["copy", "train", d, tmp_path],
        ["holdout", d, d, tmp_path / "v", "--n_speakers", "2"],
        ["holdout", d, tmp_path / "t", tmp_path / "t" / "v", "--n_speakers", "2"],
        ["cohort", d, d / "cohort"],
        ["subset", d, d / "subset", "--n_speakers", "2"],
        ["subset", d, tmp_path, "--n_speakers", "2"],
        ["utterances", t, t / "utterances"],
        ["utterances", t, tmp_path],
        ["shape", d / "wav.scp", d / "wav.scp"],
        ["shape", d / "wav.scp", d / "shape"],
    ):
        status, err = _cli(argv, capsys)
        assert status == 2 and "overlaps" in err and err.count("\n") == 1, argv
        assert digest(tmp_path) == before, argv
    assert not (tmp_path / "t").exists() and not (tmp_path / "v").exists()


def test_outputs_replace_only_what_the_tool_made(small_corpus, tmp_path, capsys):
    src = small_corpus / "train"
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    status, err = _cli(["copy", "train", src, users], capsys)
    assert status == 2 and "not made by kaldi_data" in err
    assert [p.name for p in users.iterdir()] == ["notes.txt"]
    status, err = _cli(["cohort", src, users], capsys)
    assert status == 2 and [p.name for p in users.iterdir()] == ["notes.txt"]
    status, err = _cli(["utterances", small_corpus / "test", users], capsys)
    assert status == 2 and "not made by kaldi_data" in err and err.count("\n") == 1
    assert [p.name for p in users.iterdir()] == ["notes.txt"]
    # Its own output: replaced whole (nothing of the earlier run stays).
    out = tmp_path / "out"
    assert _cli(["copy", "train", src, out], capsys)[0] == 0
    (out / "stale").write_text("from an earlier run")
    assert _cli(["copy", "train", src, out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in src.iterdir()] + [".made_by_espnet_plugin_intertopk"]
    )
    # Both holdout outputs are checked before either is written.
    status, _ = _cli(["holdout", src, out, users, "--n_speakers", "2"], capsys)
    assert status == 2 and (out / "category2utt").is_file()
    assert [p.name for p in users.iterdir()] == ["notes.txt"]


def test_lists_are_replaced_whole(tmp_path):
    path = tmp_path / "utt2spk"
    kaldi_data.write_lines(path, ["a s1", "b s2"])
    with open(path) as reader:
        kaldi_data.write_lines(path, ["c s3"])
        # The new list was renamed over the old one: a reader never sees it cut.
        assert reader.read() == "a s1\nb s2\n"
    assert path.read_text() == "c s3\n"
    assert [p.name for p in tmp_path.iterdir()] == ["utt2spk"]


def test_an_output_that_cannot_be_written_is_named(small_corpus, tmp_path, capsys):
    out = tmp_path / "missing" / "train_shape"
    status, err = _cli(["shape", small_corpus / "train" / "wav.scp", out], capsys)
    assert status == 1 and err.count("\n") == 1
    # The file asked for, not the temporary one.
    assert err == f"kaldi_data: error: {out}: No such file or directory\n"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("\n", "\r\n"), ":1: has a carriage return"),
        (lambda t: t.rstrip("\n"), ": the last line has no final newline"),
        (lambda t: t.replace("\n", "\n\n", 1), ":2: blank line"),
        (lambda t: t.replace(" ", "\t", 1), ":1: has a tab"),
        (lambda t: t.replace("\n", " \n", 1), ":1: spaces at the start or end"),
        (lambda t: " " + t, ":1: spaces at the start or end"),
    ],
)
def test_what_espnet_would_misread_is_refused_and_not_counted(
    small_corpus, tmp_path, capsys, edit, message
):
    # A blank line or a missing final newline made `wc -l spk2utt` (run.sh's
    # --spk_num) wrong, and ESPnet fail mid-training.
    d = _copy(small_corpus, tmp_path, "train")
    kaldi_data.main(["speakers", str(d)])
    speakers = len(set(read_map(d / "utt2spk").values()))
    assert capsys.readouterr().out == f"{speakers}\n" and speakers >= 2
    spk2utt = d / "spk2utt"
    spk2utt.write_bytes(edit(spk2utt.read_text()).encode())
    for argv in (["check", "train", d], ["speakers", d]):
        status, err = _cli(argv, capsys)
        assert status == 1 and err.count("\n") == 1, err
        assert err.startswith(f"kaldi_data: error: {spk2utt}") and message in err


def test_a_directory_where_a_list_belongs_is_one_line(small_corpus, tmp_path, capsys):
    d = _copy(small_corpus, tmp_path, "train")
    (d / "spk2utt").unlink()
    (d / "spk2utt").mkdir()
    status, err = _cli(["check", "train", d], capsys)
    assert (status, err) == (1, f"kaldi_data: error: {d / 'spk2utt'}: a directory, "
                                "not a list\n")  # fmt: skip
