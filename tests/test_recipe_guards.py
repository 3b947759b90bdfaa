"""The recipe's guards, which act before any stage runs Python: option checks, the
user's lists inside the recipe's data directory, and the directories the recipe
removes. Each run stops at a guard (or at a stand-in ``--python false``), so these
take well under a second."""

import subprocess
from pathlib import Path

import pytest

from espnet_plugin_intertopk.safe_io.ownership import MARKER

from conftest import copy_recipe, digest


@pytest.fixture()
def recipe(tmp_path) -> Path:
    return copy_recipe(tmp_path)


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(recipe / "run.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "one"], "--stage 'one': must be a non-negative integer"),
        (["--ngpu", "-1"], "--ngpu '-1': must be a non-negative integer"),
        (
            ["--cohort_speakers", "x"],
            "--cohort_speakers 'x': must be a non-negative integer",
        ),
        (["--lm_margin", "x"], "--lm_margin 'x': must be a non-negative number"),
        (["--score_seeds", "0,1"], "--score_seeds '0,1': must be integers"),
        (["--use_lm", "yes"], "--use_lm 'yes': must be true or false"),
        (["--loss", "softmax"], "--loss 'softmax': must be aamsoftmax_sc_topk, "),
        (["--score_norm", "snorm"], "--score_norm 'snorm': must be asnorm or none"),
        (["--clean_init", "x"], "--clean_init 'x': must be scratch, collapsed or both"),
        (["--train_dir", "nowhere"], "--train_dir nowhere: no such directory"),
        (["--test_dir", "/nowhere"], "--test_dir /nowhere: no such directory"),
        (["--train_config", "no.yaml"], "--train_config no.yaml: no such file"),
        (["--lm_config", "no.yaml"], "--lm_config no.yaml: no such file"),
        (["--python", "/no/python"], "--python /no/python: no such program"),
    ],
)
def test_a_bad_option_stops_the_recipe_before_any_stage(recipe, args, message):
    proc = run(recipe, *args)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""  # no stage ran, no "done"
    assert sorted(p.name for p in recipe.iterdir()) == ["conf", "local", "run.sh"]


@pytest.mark.parametrize(
    "args, option",
    [
        (["--train_dir", "data/train", "--test_dir", "data/test"], "--train_dir"),
        (["--train_dir", "mine", "--test_dir", "data/test/"], "--test_dir"),
        (["--train_dir", "mine", "--test_dir", "mine", "--data", "mine/out"],
         "--train_dir"),
        (["--corpus_dir", "data"], "--corpus_dir"),
    ],
)  # fmt: skip
def test_the_users_lists_in_the_recipes_data_dir_are_refused_untouched(
    recipe, args, option
):
    for d in ("data/train", "data/test", "mine"):
        (recipe / d).mkdir(parents=True)
        (recipe / d / "wav.scp").write_text("u1 /audio/u1.wav\n")
    before = digest(recipe)
    proc = run(recipe, "--stop_stage", "1", *args)
    assert proc.returncode == 1
    assert f"{option} " in proc.stderr and "which this stage writes" in proc.stderr
    assert digest(recipe) == before


def test_extraction_removes_only_its_own_scratch_directory(recipe):
    scratch = recipe / "exp/aamsoftmax_sc_topk/seed0/embed_test"
    scratch.mkdir(parents=True)
    (scratch / "mine.txt").write_text("not the recipe's")
    args = ["--stage", "5", "--stop_stage", "5", "--use_lm", "false"]
    proc = run(recipe, *args, "--score_norm", "none", "--python", "false")
    assert proc.returncode == 1 and "was not made by run.sh" in proc.stderr
    assert (scratch / "mine.txt").read_text() == "not the recipe's"
    # A scratch directory of the recipe's (an interrupted extraction) is replaced;
    # the stand-in python then fails the extraction itself.
    (scratch / MARKER).write_text("run.sh\n")
    proc = run(recipe, *args, "--score_norm", "none", "--python", "false")
    assert proc.returncode == 1 and "was not made" not in proc.stderr
    assert [p.name for p in scratch.iterdir()] == [MARKER]


def test_cleaning_stage_removes_nothing_in_its_output_directory(recipe):
    cleaning = recipe / "exp/aamsoftmax_sc_topk/seed0/cleaning_th55"
    cleaning.mkdir(parents=True)
    (cleaning / "mine.txt").write_text("kept")
    proc = run(recipe, "--stage", "7", "--stop_stage", "7", "--python", "false")
    assert proc.returncode == 1
    assert (cleaning / "mine.txt").read_text() == "kept"
    assert (cleaning.parent / "cleaning_th55.log").is_file()  # the log is beside it
