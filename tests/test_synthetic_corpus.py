"""The built-in corpus generator and the data-directory checks."""

import hashlib
from pathlib import Path

import pytest

from espnet_plugin_intertopk.recipe import synthetic_corpus
from espnet_plugin_intertopk.recipe.kaldi_data import DataDirError, check_data_dir

SMALL = dict(
    n_train_speakers=4,
    n_test_speakers=3,
    utts_per_speaker=3,
    test_utts_per_speaker=4,
    n_trials=24,
    min_duration=0.5,
    max_duration=0.8,
)


def read_map(path: Path):
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def digest(root: Path):
    """Hash of every file, with the (location-dependent) root path taken out."""
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        data = f.read_bytes().replace(str(root.resolve()).encode(), b"<root>")
        out[str(f.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("a")
    synthetic_corpus.generate(root, seed=7, **SMALL)
    return root


def test_same_seed_same_bytes_other_seed_other_audio(corpus, tmp_path):
    synthetic_corpus.generate(tmp_path / "b", seed=7, **SMALL)
    assert digest(corpus) == digest(tmp_path / "b")
    synthetic_corpus.generate(tmp_path / "c", seed=8, **SMALL)
    wavs = [k for k in digest(corpus) if k.endswith(".wav")]
    assert len(wavs) == 4 * 3 + 3 * 4
    assert all(digest(corpus)[k] != digest(tmp_path / "c")[k] for k in wavs)


def test_train_and_test_speakers_are_disjoint(corpus):
    train = set(read_map(corpus / "train" / "spk2utt"))
    test = set(read_map(corpus / "test" / "spk2utt"))
    assert len(train) == 4 and len(test) == 3 and not train & test


def test_kaldi_files_are_consistent(corpus):
    for split in ("train", "test"):
        d = corpus / split
        wav = read_map(d / "wav.scp")
        utt2spk = read_map(d / "utt2spk")
        spk2utt = {s: u.split() for s, u in read_map(d / "spk2utt").items()}
        assert set(wav) == set(utt2spk) == set(read_map(d / "utt2num_samples"))
        assert all(Path(p).is_file() for p in wav.values())
        assert {u: s for s, us in spk2utt.items() for u in us} == utt2spk
        assert (d / "category2utt").read_text() == (d / "spk2utt").read_text()
        check_data_dir(d, split)


def test_trials_are_balanced_and_labelled_right(corpus):
    d = corpus / "test"
    utt2spk = read_map(d / "utt2spk")
    wav = read_map(d / "wav.scp")
    labels = read_map(d / "trial_label")
    first, second = read_map(d / "trial.scp"), read_map(d / "trial2.scp")
    assert len(labels) == 24 and sorted(labels.values()).count("1") == 12
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


def test_cli_skips_an_existing_corpus(corpus, capsys):
    before = digest(corpus)
    synthetic_corpus.main([str(corpus), "--seed", "99"])
    assert "skipping" in capsys.readouterr().out
    assert digest(corpus) == before


@pytest.mark.parametrize(
    "kind, missing",
    [
        ("train", "utt2spk"),
        ("train", "spk2utt"),
        ("test", "trial_label"),
        ("test", "trial2.scp"),
    ],
)
def test_missing_file_is_named(corpus, tmp_path, kind, missing):
    import shutil

    d = tmp_path / kind
    shutil.copytree(corpus / kind, d)
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
        n_test_speakers=2,
        utts_per_speaker=4,
        test_utts_per_speaker=2,
        n_trials=2,
        min_duration=0.3,
        max_duration=3.0,
        seed=3,
    )
    for wav in (tmp_path / "wav").glob("*.wav"):
        rate, pcm = wavfile.read(wav)
        peak = np.abs(pcm.astype(np.int32)).max()
        assert rate == 16000 and pcm.dtype == np.int16
        assert 0.25 * 32767 < peak <= 0.9 * 32767 + 1, wav.name
