"""Data-directory tools: checks with clear errors, the validation hold-out, the cohort
list; input directories are only read."""

import shutil

import pytest

from espnet_plugin_intertopk.recipe import kaldi_data
from espnet_plugin_intertopk.recipe.kaldi_data import DataDirError, read_map

from conftest import digest


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
    ):
        kaldi_data.main(argv)
        assert _tree(small_corpus) == before, argv
    # The outputs were written (the comparison above is not vacuous).
    assert (tmp_path / "copy" / "wav.scp").read_bytes() == (
        train / "wav.scp"
    ).read_bytes()
    assert (tmp_path / "cohort" / "trial.scp").stat().st_size > 0


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


def test_cohort_lists_utterances_of_every_training_speaker(small_corpus, tmp_path):
    kaldi_data.cohort_list(small_corpus / "train", tmp_path / "cohort", per_speaker=2)
    utt2spk = read_map(tmp_path / "cohort" / "utt2spk")
    assert sorted(set(utt2spk.values())) == sorted(
        read_map(small_corpus / "train" / "spk2utt")
    )
    assert all(list(utt2spk.values()).count(s) == 2 for s in set(utt2spk.values()))
    keys = read_map(tmp_path / "cohort" / "trial.scp")
    assert sorted(keys) == sorted(f"{u}*{u}" for u in utt2spk)
