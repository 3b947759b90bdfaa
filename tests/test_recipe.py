"""The recipe egs/synth/spk1/run.sh, shrunken, every stage, through the real ESPnet."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "synth" / "spk1"


@pytest.fixture()
def recipe(tmp_path) -> Path:
    """A copy of the recipe directory (so the test writes nothing into the checkout)."""
    d = tmp_path / "spk1"
    d.mkdir()
    shutil.copy(RECIPE / "run.sh", d)
    shutil.copytree(RECIPE / "local", d / "local")
    (d / "conf").symlink_to(ROOT / "conf")
    return d


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        ["bash", str(recipe / "run.sh"), "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


SHRUNKEN = [
    "--n_train_speakers",
    "5",
    "--n_test_speakers",
    "3",
    "--utts_per_speaker",
    "5",
    "--test_utts_per_speaker",
    "4",
    "--n_trials",
    "30",
    "--train_config",
    str(TINY_CONFIG),
    "--train_args",
    "--max_epoch 1",
    "--lm_config",
    str(TINY_CONFIG),
    "--lm_args",
    "--max_epoch 1 --loss_conf do_lm=true --margin_scheduler constant",
    "--extract_num_eval",
    "2",
    "--extract_duration",
    "1.0",
]


@pytest.mark.slow
def test_every_stage_of_the_shrunken_recipe(recipe):
    proc = run(recipe, *SHRUNKEN)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    for stage in range(1, 7):
        assert f"stage {stage}:" in log
    for f in (
        "data/train/category2utt",
        "dump/train_shape",
        "dump/valid_shape",
        "exp/aamsoftmax_sc_topk/valid.eer.best.pth",
        "exp/aamsoftmax_sc_topk_lm/valid.eer.best.pth",
        "exp/aamsoftmax_sc_topk/embed/test_embeddings.npz",
        "exp/aamsoftmax_sc_topk_lm/embed/test_embeddings.npz",
    ):
        assert (recipe / f).exists(), f
    assert "k_top=0" in (recipe / "exp/aamsoftmax_sc_topk_lm/train.log").read_text()
    rows = [
        line
        for line in (recipe / "RESULTS.md").read_text().splitlines()
        if line.startswith("| aamsoftmax")
    ]
    assert [r.split("|")[1].strip() for r in rows] == [
        "aamsoftmax_sc_topk",
        "aamsoftmax_sc_topk_lm",
    ]
    for row in rows:
        eer, dcf5, dcf1 = (float(v) for v in row.split("|")[2:5])
        assert all(math.isfinite(v) for v in (eer, dcf5, dcf1))
        assert 0.0 <= eer <= 100.0 and 0.0 <= dcf5 and 0.0 <= dcf1

    # A stage re-run alone: scoring again gives the same table body.
    before = (recipe / "RESULTS.md").read_text().split("\n\n", 2)[-1]
    again = run(recipe, "--stage", "6", "--stop_stage", "6")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (recipe / "RESULTS.md").read_text().split("\n\n", 2)[-1] == before


def test_user_data_dir_without_a_required_file_is_named(recipe, tmp_path):
    train = tmp_path / "mytrain"
    test = tmp_path / "mytest"
    train.mkdir()
    test.mkdir()
    (train / "wav.scp").write_text("u1 /nowhere/u1.wav\n")
    (train / "utt2spk").write_text("u1 s1\n")
    for name in ("wav.scp", "trial.scp", "trial2.scp", "trial_label"):
        (test / name).write_text("")
    proc = run(
        recipe, "--stop_stage", "1", "--train_dir", str(train), "--test_dir", str(test)
    )
    assert proc.returncode != 0
    assert "spk2utt" in proc.stderr and "missing" in proc.stderr


def test_unknown_option_is_refused(recipe):
    proc = run(recipe, "--no_such_option", "1")
    assert proc.returncode != 0 and "unknown option --no_such_option" in proc.stderr
