"""The built-in corpus generator and the data-directory checks."""

import argparse
import dataclasses
import inspect
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from espnet_plugin_intertopk.recipe import synthetic_corpus
from espnet_plugin_intertopk.recipe.kaldi_data import (
    DataDirError,
    check_data_dir,
    read_map,
)
from espnet_plugin_intertopk.safe_io import ownership

from conftest import SMALL, digest, trial_kinds


def test_same_seed_same_bytes_other_seed_other_audio(small_corpus, tmp_path):
    synthetic_corpus.generate(tmp_path / "b", seed=7, **SMALL)
    assert digest(small_corpus) == digest(tmp_path / "b")
    synthetic_corpus.generate(tmp_path / "c", seed=8, **SMALL)
    wavs = [k for k in digest(small_corpus) if k.endswith(".wav")]
    assert len(wavs) == 4 * 3 + 3 * 3 + 3 * 4
    assert all(digest(small_corpus)[k] != digest(tmp_path / "c")[k] for k in wavs)


def test_train_valid_and_test_speakers_are_disjoint(small_corpus):
    train = set(read_map(small_corpus / "train" / "spk2utt"))
    valid = set(read_map(small_corpus / "valid" / "spk2utt"))
    test = set(read_map(small_corpus / "test" / "spk2utt"))
    assert (len(train), len(valid), len(test)) == (4, 3, 3)
    assert not train & valid and not train & test and not valid & test


def test_kaldi_files_are_consistent(small_corpus):
    for split in ("train", "valid", "test"):
        d = small_corpus / split
        wav = read_map(d / "wav.scp")
        utt2spk = read_map(d / "utt2spk")
        spk2utt = {s: u.split() for s, u in read_map(d / "spk2utt").items()}
        assert set(wav) == set(utt2spk) == set(read_map(d / "utt2num_samples"))
        assert all(Path(p).is_file() for p in wav.values())
        assert {u: s for s, us in spk2utt.items() for u in us} == utt2spk
        assert (d / "category2utt").read_text() == (d / "spk2utt").read_text()
        check_data_dir(d, "train" if split == "train" else "test")


@pytest.mark.parametrize(
    "split, n_target, n_nontarget",
    # Validation: balanced, about n_valid_trials. Test: every target pair
    # (3 speakers x C(4, 2)) and twice as many non-target pairs.
    [("valid", 5, 5), ("test", 18, 36)],
)
def test_trials_are_counted_and_labelled_right(
    small_corpus, split, n_target, n_nontarget
):
    d = small_corpus / split
    utt2spk = read_map(d / "utt2spk")
    wav = read_map(d / "wav.scp")
    labels = read_map(d / "trial_label")
    first, second = read_map(d / "trial.scp"), read_map(d / "trial2.scp")
    assert sorted(labels.values()).count("1") == n_target
    assert sorted(labels.values()).count("0") == n_nontarget
    assert len({tuple(sorted(k.split("*"))) for k in labels}) == len(labels)
    for key, label in labels.items():
        a, b = key.split("*")
        assert a != b
        assert label == ("1" if utt2spk[a] == utt2spk[b] else "0")
        assert first[key] == wav[a] and second[key] == wav[b]


def test_voices_differ_between_speakers():
    import numpy as np

    rng = np.random.default_rng(0)
    voices = [synthetic_corpus.make_voice(rng) for _ in range(50)]
    for field in ("f0", "f0_range", "tract", "tilt", "breath", "rate"):
        values = [getattr(v, field) for v in voices]
        assert len(set(values)) == 50, field


def _cli_args(out, **changes):
    args = [str(out)]
    for k, v in {**SMALL, "seed": 7, **changes}.items():
        args += [f"--{k}", str(v)]
    return args


def test_cli_reuses_a_corpus_only_for_the_same_settings(tmp_path, capsys):
    out = tmp_path / "corpus"
    synthetic_corpus.main(_cli_args(out))
    before = digest(out)
    synthetic_corpus.main(_cli_args(out))
    assert "skipping" in capsys.readouterr().out
    assert digest(out) == before
    assert "label_noise" not in (out / ".done").read_text()  # as before the option
    for change in (dict(seed=8), dict(n_train_speakers=5), dict(label_noise=0.1)):
        with pytest.raises(SystemExit) as refused:
            synthetic_corpus.main(_cli_args(out, **change))
        assert refused.value.code == 2
        assert re.search(
            "other settings.*" + next(iter(change)), capsys.readouterr().err
        )
        assert digest(out) == before
    synthetic_corpus.main(_cli_args(out, seed=8) + ["--force"])
    assert digest(out) != before


@pytest.mark.parametrize(
    "kind, missing",
    [
        ("train", "utt2spk"),
        ("train", "spk2utt"),
        ("test", "trial_label"),
        ("test", "trial2.scp"),
    ],
)
def test_missing_file_is_named(small_corpus, tmp_path, kind, missing):
    import shutil

    d = tmp_path / kind
    shutil.copytree(small_corpus / kind, d)
    (d / missing).unlink()
    with pytest.raises(DataDirError, match=missing):
        check_data_dir(d, kind)


def test_audio_is_finite_and_not_clipped(tmp_path):
    import numpy as np
    from scipy.io import wavfile

    # Many voices and long utterances: every random filter must stay stable.
    synthetic_corpus.generate(
        tmp_path,
        n_train_speakers=40,
        n_valid_speakers=2,
        n_test_speakers=2,
        utts_per_speaker=4,
        valid_utts_per_speaker=2,
        test_utts_per_speaker=2,
        n_valid_trials=2,
        min_duration=0.3,
        max_duration=3.0,
        seed=3,
    )
    for wav in (tmp_path / "wav").glob("*.wav"):
        rate, pcm = wavfile.read(wav)
        peak = np.abs(pcm.astype(np.int32)).max()
        assert rate == 16000 and pcm.dtype == np.int16
        assert 0.25 * 32767 < peak <= 0.9 * 32767 + 1, wav.name


def test_label_noise_relabels_a_fraction_and_records_the_truth(small_corpus, tmp_path):
    noisy = tmp_path / "noisy"
    synthetic_corpus.generate(noisy, seed=7, label_noise=0.25, **SMALL)
    clean_labels = read_map(small_corpus / "train" / "utt2spk")
    given = read_map(noisy / "train" / "utt2spk")
    assert sorted(given) == sorted(clean_labels)
    changed = {u for u in given if given[u] != clean_labels[u]}
    assert len(changed) == round(0.25 * len(given))
    truth = [line.split() for line in (noisy / "noise_truth").read_text().splitlines()]
    assert {u for u, _, _ in truth} == changed
    assert all(clean_labels[u] == t and given[u] == g for u, t, g in truth)
    # Only the training labels differ: the audio and the trial lists are the same.
    same = ("wav", "valid", "test")
    assert {k: v for k, v in digest(noisy).items() if k.split("/")[0] in same} == {
        k: v for k, v in digest(small_corpus).items() if k.split("/")[0] in same
    }
    assert "noise_truth" not in {p.name for p in (noisy / "train").iterdir()}


def _refused(argv, capsys):
    """The stderr of a command line that must exit 2."""
    with pytest.raises(SystemExit) as refused:
        synthetic_corpus.main(argv)
    assert refused.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "option, value",
    [
        ("label_noise", "2"),
        ("label_noise", "nan"),
        ("n_train_speakers", "-1"),
        ("n_valid_speakers", "1"),
        ("utts_per_speaker", "0"),
        ("test_utts_per_speaker", "1"),
        ("n_valid_trials", "1"),
        ("min_duration", "0"),
        ("max_duration", "0.4"),  # below min_duration 0.5
        ("max_duration", "inf"),
        ("test_nontarget_ratio", "0"),
        ("seed", "-1"),
        ("seed", "one"),
        ("group_size", "0"),
        ("group_size", "1.5"),
        ("within_group_nontargets", "1.5"),
        ("within_group_nontargets", "-0.1"),
        ("within_group_nontargets", "nan"),
        ("within_group_nontargets", "0.5"),  # without --group_size 2 or more
    ],
)
def test_a_bad_setting_is_refused_before_the_disk_is_touched(
    tmp_path, capsys, option, value
):
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    for out in (users, tmp_path / "new"):
        err = _refused(_cli_args(out) + [f"--{option}", value, "--force"], capsys)
        assert "usage: synthetic_corpus" in err and f"--{option}" in err
        assert "Traceback" not in err
    assert [p.name for p in users.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--within_group_nontargets", "0.5"], "--within_group_nontargets needs "
         "--group_size 2 or more (speakers in groups)"),
        (["--group_size", "1", "--within_group_nontargets", "1"],
         "--within_group_nontargets needs --group_size 2 or more"),
        (["--group_size", "3", "--within_group_nontargets", "1.5"],
         "--within_group_nontargets 1.5: must be in [0, 1]"),
        (["--group_size", "3", "--within_group_nontargets", "-0.5"],
         "--within_group_nontargets -0.5: must be in [0, 1]"),
    ],
)  # fmt: skip
def test_within_group_nontargets_needs_groups_and_a_fraction(
    tmp_path, capsys, extra, message
):
    err = _refused(_cli_args(tmp_path / "new") + extra, capsys)
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(
        f"synthetic_corpus: error: {message}"
    )
    assert "Traceback" not in err and not (tmp_path / "new").exists()


def test_a_directory_it_did_not_make_is_refused_even_with_force(tmp_path, capsys):
    users = tmp_path / "users"
    (users / "sub").mkdir(parents=True)
    (users / "sub" / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        err = _refused(_cli_args(users) + extra, capsys)
        assert err.count("\n") == 1 and "was not made by synthetic_corpus" in err
    assert (users / "sub" / "notes.txt").read_text() == "mine"
    # Another tool's output is not this tool's either.
    theirs = tmp_path / "theirs"
    ownership.claim_dir(theirs, "kaldi_data", "x")
    (theirs / "wav.scp").write_text("u a.wav\n")
    assert "made by kaldi_data" in _refused(_cli_args(theirs, seed=9), capsys)
    assert (theirs / "wav.scp").is_file()


def test_a_done_file_or_a_copied_corpus_proves_nothing(tmp_path, capsys):
    # A Kaldi or ESPnet data directory often has a .done: with --force it was removed.
    users = tmp_path / "users"
    users.mkdir()
    (users / ".done").write_text("{}\n")
    (users / "wav.scp").write_text("u1 /my/u1.wav\n")
    # A corpus of the tool's, copied with cp -a into the user's own tree.
    made = tmp_path / "made"
    synthetic_corpus.main(_cli_args(made, n_train_speakers=2))
    capsys.readouterr()  # its progress bar
    copied = tmp_path / "copied"
    subprocess.run(["cp", "-a", str(made), str(copied)], check=True)
    (copied / "notes.txt").write_text("mine")
    for d in (users, copied):
        before = digest(d)
        for extra in ([], ["--force"]):
            err = _refused(_cli_args(d, seed=9) + extra, capsys)
            assert err.count("\n") == 1 and "was not made by synthetic_corpus" in err
            assert "--force" not in err  # the message must not suggest it
        assert digest(d) == before

    # Its own corpus, regenerated with --force: the old one is kept aside whole,
    # byte for byte (its lists name the audio where it was: renamed back, it works).
    def raw(root):
        files = (p for p in root.rglob("*") if p.is_file())
        return {str(p.relative_to(root)): p.read_bytes() for p in files}

    old = raw(made)
    synthetic_corpus.main(_cli_args(made, n_train_speakers=2, seed=9) + ["--force"])
    assert raw(tmp_path / ".made.old-1") == old
    assert json.loads((made / ".done").read_text())["seed"] == 9


def test_an_interrupted_generation_is_redone(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    synthesize = synthetic_corpus.synthesize
    calls = []

    def killed_midway(*args):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt  # as a kill would leave it: some audio, no lists
        return synthesize(*args)

    monkeypatch.setattr(synthetic_corpus, "synthesize", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        synthetic_corpus.main(_cli_args(out))
    assert not (out / ".done").exists() and len(list((out / "wav").iterdir())) == 5
    monkeypatch.setattr(synthetic_corpus, "synthesize", synthesize)
    synthetic_corpus.main(_cli_args(out))
    redone = digest(out)
    assert json.loads((out / ".done").read_text())["seed"] == 7
    assert redone.pop(".done") and redone.pop(ownership.MARKER)
    assert redone == digest(small_corpus)  # the same corpus as one uninterrupted run


# Speakers in groups of 2 (train: 2, 2, 1; valid: 2; test: 2, 2); the test set's
# 4 x C(3, 2) = 12 target pairs and 24 non-target pairs, half of them within groups
# (18 pairs exist within, 36 across).
GROUPED = dict(
    n_train_speakers=5,
    n_valid_speakers=2,
    n_test_speakers=4,
    utts_per_speaker=1,
    valid_utts_per_speaker=2,
    test_utts_per_speaker=3,
    n_valid_trials=2,
    min_duration=0.3,
    max_duration=0.4,
    group_size=2,
    within_group_nontargets=0.5,
)


@pytest.fixture(scope="module")
def grouped_corpus(tmp_path_factory):
    """A tiny corpus of speakers in groups, with the voice each utterance was made
    from (utterance -> Voice)."""
    root = tmp_path_factory.mktemp("grouped")
    synthesize, write = synthetic_corpus.synthesize, synthetic_corpus.wavfile.write
    last, voice_of = {}, {}

    def synthesize_and_note(voice, *args):
        last["voice"] = voice
        return synthesize(voice, *args)

    def write_and_note(path, *args):
        voice_of[Path(path).stem] = last["voice"]
        write(path, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic_corpus, "synthesize", synthesize_and_note)
        patch.setattr(
            synthetic_corpus, "wavfile", argparse.Namespace(write=write_and_note)
        )
        synthetic_corpus.generate(root, seed=5, **GROUPED)
    return root, voice_of


def test_group_members_share_every_voice_field_but_f0_and_tract(grouped_corpus):
    root, voice_of = grouped_corpus
    voices, groups = {}, {}
    for split, sizes in (("train", [2, 2, 1]), ("valid", [2]), ("test", [2, 2])):
        utt2spk = read_map(root / split / "utt2spk")
        for utt, spk in utt2spk.items():  # one voice per speaker
            assert voices.setdefault(spk, voice_of[utt]) == voice_of[utt]
        spk2group = read_map(root / split / "spk2group")
        assert sorted(spk2group) == sorted(set(utt2spk.values()))
        # Groups of 2 of consecutive speakers (the last may be smaller), each in
        # one set.
        speakers = sorted(spk2group)
        chunks = [speakers[i : i + 2] for i in range(0, len(speakers), 2)]
        assert [len(c) for c in chunks] == sizes
        assert all(len({spk2group[s] for s in c}) == 1 for c in chunks)
        assert len(set(spk2group.values())) == len(sizes)
        assert not set(spk2group.values()) & set(groups.values())
        groups.update(spk2group)
    alike = {f.name for f in dataclasses.fields(synthetic_corpus.Voice)}
    alike -= {"f0", "tract"}
    pairs = 0
    for a, b in ((a, b) for a in voices for b in voices if a < b):
        va, vb = voices[a], voices[b]
        if groups[a] == groups[b]:
            pairs += 1
            assert all(getattr(va, f) == getattr(vb, f) for f in alike), (a, b)
            assert va.f0 != vb.f0 and va.tract != vb.tract, (a, b)
        else:
            assert all(getattr(va, f) != getattr(vb, f) for f in alike), (a, b)
    assert pairs == 2 + 1 + 2


def test_group_member_changes_only_f0_and_tract():
    rng = np.random.default_rng(0)
    base = synthetic_corpus.make_voice(rng)
    for _ in range(20):
        member = synthetic_corpus.group_member(base, rng)
        assert dataclasses.replace(member, f0=base.f0, tract=base.tract) == base
        assert 0.85 <= member.f0 / base.f0 <= 1.18
        assert 0.97 <= member.tract / base.tract <= 1.03


def test_spk2group_only_with_groups_and_test_nontargets_within_them(
    grouped_corpus, small_corpus
):
    root, _ = grouped_corpus
    assert not list(small_corpus.rglob("spk2group"))  # group_size 1 (the default)
    test = root / "test"
    labels = read_map(test / "trial_label")
    trials = [(*key.split("*"), label) for key, label in labels.items()]
    kinds = trial_kinds(
        trials, read_map(test / "utt2spk"), read_map(test / "spk2group")
    )
    assert kinds == {"target": 12, "within": 12, "across": 12}
    check_data_dir(test, "test")


# What ``.done`` recorded before --label_noise, --group_size and
# --within_group_nontargets.
OLD_SETTINGS = {
    "n_train_speakers", "n_valid_speakers", "n_test_speakers", "utts_per_speaker",
    "valid_utts_per_speaker", "test_utts_per_speaker", "n_valid_trials",
    "test_nontarget_ratio", "min_duration", "max_duration", "seed",
}  # fmt: skip


def test_later_settings_are_left_out_of_done_at_their_defaults():
    params = inspect.signature(synthetic_corpus.generate).parameters
    defaults = {k: p.default for k, p in params.items() if k != "out"}
    args = argparse.Namespace(out=Path("x"), force=False, **defaults)
    assert set(synthetic_corpus.settings_of(args)) == OLD_SETTINGS
    for name, value in (
        ("label_noise", 0.1),
        ("group_size", 2),
        ("within_group_nontargets", 0.5),
    ):
        changed = argparse.Namespace(**{**vars(args), name: value})
        settings = synthetic_corpus.settings_of(changed)
        assert set(settings) == OLD_SETTINGS | {name} and settings[name] == value


def test_a_corpus_made_before_the_group_options_is_recognised(tmp_path, capsys):
    out = tmp_path / "corpus"
    tiny = dict(min_duration=0.3, max_duration=0.4)
    synthetic_corpus.main(_cli_args(out, **tiny))
    # .done as the tool wrote it before the options (keys in another order).
    old = {**SMALL, **tiny, "seed": 7, "test_nontarget_ratio": 2.0}
    assert set(old) == OLD_SETTINGS
    assert json.loads((out / ".done").read_text()) == old
    (out / ".done").write_text(json.dumps(dict(reversed(old.items()))) + "\n")
    before = digest(out)
    capsys.readouterr()
    for extra in ({}, dict(group_size=1, within_group_nontargets=0.0, label_noise=0)):
        synthetic_corpus.main(_cli_args(out, **tiny, **extra))
        assert "skipping" in capsys.readouterr().out, extra
        assert digest(out) == before
    err = _refused(_cli_args(out, **tiny, group_size=2), capsys)
    assert re.search(r"other settings.*'group_size': \(None, 2\)", err)
    assert digest(out) == before
    grouped = _cli_args(out, **tiny, group_size=2, within_group_nontargets=0.5)
    synthetic_corpus.main(grouped + ["--force"])
    done = json.loads((out / ".done").read_text())
    assert done["group_size"] == 2 and done["within_group_nontargets"] == 0.5
    assert (out / "test" / "spk2group").is_file()
    capsys.readouterr()
    synthetic_corpus.main(grouped)
    assert "skipping" in capsys.readouterr().out
