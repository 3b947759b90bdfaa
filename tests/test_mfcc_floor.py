"""The MFCC floor: one standardised vector per test utterance, written atomically
outside its inputs; bad arguments and data are one line."""

import numpy as np
import pytest

from espnet_plugin_intertopk.recipe import mfcc_floor
from espnet_plugin_intertopk.recipe.kaldi_data import read_map


def _argv(corpus, out, *extra):
    return ["--train_dir", str(corpus / "train"), "--test_dir", str(corpus / "test"),
            "--out", str(out), *extra]  # fmt: skip


def test_one_finite_vector_per_test_utterance(small_corpus, tmp_path):
    out = tmp_path / "floor" / "test_embeddings.npz"
    mfcc_floor.main(_argv(small_corpus, out, "--n_mfcc", "13"))
    got = dict(np.load(out))
    assert set(got) == set(read_map(small_corpus / "test" / "wav.scp"))
    assert all(v.shape == (26,) and np.isfinite(v).all() for v in got.values())
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left


def _refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        mfcc_floor.main(argv)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "where, extra, status, message",
    [
        ("test/floor.npz", [], 2, "--out {out} overlaps the input {corpus}/test: a "
         "tool never writes into its inputs; give an output path outside them"),
        ("floor", [], 2, "--out {out} must be an .npz file"),
        ("floor.npz", ["--n_mfcc", "0"], 2, "--n_mfcc must be in [1, 40], got 0"),
        ("floor.npz", ["--n_mfcc", "41"], 2, "--n_mfcc must be in [1, 40], got 41"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line(
    where, extra, status, message, small_corpus, tmp_path, capsys
):
    out = (small_corpus if where.startswith("test/") else tmp_path) / where
    assert _refused(_argv(small_corpus, out, *extra), capsys) == (
        status,
        f"{mfcc_floor.PROG}: error: "
        + message.format(out=out, corpus=small_corpus)
        + "\n",
    )
    assert not out.exists()


def test_audio_that_is_not_16khz_mono_is_named(small_corpus, tmp_path, capsys):
    import soundfile

    corpus = tmp_path / "corpus"
    for part in ("train", "test"):
        (corpus / part).mkdir(parents=True)
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.zeros((1600, 2), dtype=np.float32), 16000)
    (corpus / "train" / "wav.scp").write_text(f"u1 {stereo}\n")
    (corpus / "test" / "wav.scp").write_text(f"u1 {stereo}\n")
    status, err = _refused(_argv(corpus, tmp_path / "f.npz"), capsys)
    assert status == 1 and err.splitlines()[-1] == (
        f"{mfcc_floor.PROG}: error: {stereo}: 16000 Hz, shape (1600, 2); the floor "
        "needs 16 kHz mono audio with samples"
    )
