"""The recipe's guards, which act before any stage runs Python: option checks (run.sh's
and local/scale.sh's), the user's lists inside the recipe's data directory, and the
directories the recipe removes; and the scoring options run.sh hands on. Each run stops
at a guard (or runs a stand-in ``--python``), so these take well under a second."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from espnet_plugin_intertopk.safe_io.ownership import MARKER, claim_dir, made_by

from conftest import copy_recipe, digest


@pytest.fixture()
def recipe(tmp_path) -> Path:
    return copy_recipe(tmp_path)


def run(
    recipe: Path, *args: str, script: str = "run.sh"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(recipe / script), *args],
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
        (["--calibrate", "test"], "--calibrate 'test': must be valid, train, both "),
        (
            ["--score_norm", "none"],
            "--calibrate valid calibrates AS-norm scores: give --score_norm asnorm or "
            "--calibrate none",
        ),
        (["--clean_init", "x"], "--clean_init 'x': must be scratch, collapsed or both"),
        (["--train_dir", "nowhere"], "--train_dir nowhere: no such directory"),
        (["--test_dir", "/nowhere"], "--test_dir /nowhere: no such directory"),
        (["--train_config", "no.yaml"], "--train_config no.yaml: no such file"),
        (["--lm_config", "no.yaml"], "--lm_config no.yaml: no such file"),
        (["--python", "/no/python"], "--python /no/python: no such program"),
        (["--extract_num_eval", "0"], "--extract_num_eval '0': must be at least 1"),
        (["--extract_duration", "0.0"], "--extract_duration '0.0': must be above 0"),
        (
            ["--cohort_utts_per_speaker", "0"],
            "--cohort_utts_per_speaker '0': must be at least 1",
        ),
    ],
)
def test_a_bad_option_stops_the_recipe_before_any_stage(recipe, args, message):
    proc = run(recipe, *args)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""  # no stage ran, no "done"
    assert sorted(p.name for p in recipe.iterdir()) == ["conf", "local", "run.sh"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parts", "foo"], "--parts 'foo': must be curve, ablation, grouped, mech"),
        (["--parts", "curve foo"], "--parts 'foo': must be curve, ablation, grou"),
        (["--scales", "50"], "--scales '50': scales are integers >= 100"),
        (["--scales", "1000 3e2"], "--scales '3e2': scales are integers >= 100"),
        (["--score_only", "maybe"], "--score_only 'maybe': must be true or false"),
        (
            ["--scales", "300 100", "--corpus_speakers", "200"],
            "--corpus_speakers '200': must be an integer >= every scale (300)",
        ),
        (
            ["--corpus_speakers", "1e3"],
            "--corpus_speakers '1e3': must be an integer >=",
        ),
        (["--jobs", "0"], "--jobs '0': must be a positive integer"),
        (["--seeds", "0 x"], "--seeds '0 x': must be integers separated by spaces"),
        (["--train_seed", "1"], "unknown option '--train_seed'"),
    ],
)
def test_a_bad_option_stops_the_scale_experiment_before_anything(recipe, args,
                                                                 message):  # fmt: skip
    local = sorted(p.name for p in (recipe / "local").iterdir())
    proc = run(recipe, "--jobs", "2", *args, script="local/scale.sh")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""  # no part started
    # Nothing made: no exp/ (its wall-time table), data, corpus or results.
    assert sorted(p.name for p in recipe.iterdir()) == ["conf", "local", "run.sh"]
    assert sorted(p.name for p in (recipe / "local").iterdir()) == local


def _recording_python(directory: Path) -> Path:
    """A stand-in for --python that appends each command line it gets to
    ``<itself>.calls`` (one per line, shell-quoted) and succeeds."""
    stub = directory / "python"
    stub.write_text(
        '#!/usr/bin/env bash\nprintf "%q " "$@" >> "$0.calls"\necho >> "$0.calls"\n'
    )
    stub.chmod(0o755)
    return stub


def _checking_python(directory: Path) -> Path:
    """A stand-in for --python that runs the recipe's checks and its ownership
    commands for real and fails every other command."""
    stub = directory / "python"
    checks = "espnet_plugin_intertopk.recipe.preflight"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'case "$2" in {checks}|espnet_plugin_intertopk.safe_io.ownership)\n'
        f'    exec {sys.executable} "$@" ;;\nesac\nexit 1\n'
    )
    stub.chmod(0o755)
    return stub


def _values(argv, option):
    return [argv[i + 1] for i, token in enumerate(argv[:-1]) if token == option]


def test_score_json_and_references_reach_the_scoring(recipe, tmp_path):
    stub = _recording_python(tmp_path)
    calls = Path(f"{stub}.calls")
    stage_6 = ["--stage", "6", "--stop_stage", "6", "--python", str(stub)]
    references = "aamsoftmax_sc_topk_lm aamsoftmax"
    proc = run(recipe, *stage_6, "--score_json", "scores dir/s.json",
               "--score_references", references)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    checks, floor, scoring = [shlex.split(x) for x in calls.read_text().splitlines()]
    assert checks[:2] == ["-m", "espnet_plugin_intertopk.recipe.preflight"]
    assert floor[:2] == ["-m", "espnet_plugin_intertopk.recipe.mfcc_floor"]
    assert scoring[:2] == ["-m", "espnet_plugin_intertopk.scoring.compare"]
    assert _values(scoring, "--json") == ["scores dir/s.json"]
    assert _values(scoring, "--references") == [references]  # one argument
    assert _values(scoring, "--floor") == ["exp/mfcc_floor/test_embeddings.npz"]
    # Without them (and without the floor): scoring's defaults, no empty values.
    calls.unlink()
    proc = run(recipe, *stage_6, "--floor", "false")
    assert proc.returncode == 0, proc.stderr
    _, scoring = [shlex.split(line) for line in calls.read_text().splitlines()]
    assert scoring[:2] == ["-m", "espnet_plugin_intertopk.scoring.compare"]
    assert not {"--json", "--references", "--floor"} & set(scoring)


def test_calibration_stage_hands_its_options_to_the_scoring(recipe, tmp_path):
    """Stage 7 scores with calibration into its own results file; validation
    embeddings newer than the checkpoint are not extracted again; --calibrate none
    skips the stage."""
    stub = _recording_python(tmp_path)
    calls = Path(f"{stub}.calls")
    model = recipe / "exp/aamsoftmax_sc_topk/seed0"
    (model / "embed").mkdir(parents=True)
    (model / "valid.eer.best.pth").write_text("")
    (model / "embed/valid_embeddings.npz").write_text("")
    os.utime(model / "valid.eer.best.pth", (1e9, 1e9))  # older than the embeddings
    stage_7 = ["--stage", "7", "--stop_stage", "7", "--python", str(stub)]
    proc = run(recipe, *stage_7, "--use_lm", "false", "--calibration_json", "c.json",
               "--quality_measures", "norm cohort")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    checks, scoring = [shlex.split(x) for x in calls.read_text().splitlines()]
    assert checks[:2] == ["-m", "espnet_plugin_intertopk.recipe.preflight"]
    assert "calibration_json=c.json" in _values(checks, "--output")
    assert scoring[:2] == ["-m", "espnet_plugin_intertopk.scoring.compare"]
    assert _values(scoring, "--calibrate") == ["valid"]
    assert _values(scoring, "--calibration_dir") == ["data/valid"]
    assert _values(scoring, "--results") == ["RESULTS_calibrated.md"]
    assert _values(scoring, "--json") == ["c.json"]
    assert _values(scoring, "--quality_measures") == ["norm cohort"]
    assert _values(scoring, "--score_norm") == ["asnorm"]
    calls.unlink()
    proc = run(recipe, *stage_7, "--calibrate", "none")
    assert proc.returncode == 0 and "stage 7: skipped" in proc.stdout
    (only,) = [shlex.split(x) for x in calls.read_text().splitlines()]
    assert only[:2] == ["-m", "espnet_plugin_intertopk.recipe.preflight"]


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
    proc = run(recipe, "--stop_stage", "1", "--python", sys.executable, *args)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{option} " in proc.stderr and " overlaps " in proc.stderr
    assert digest(recipe) == before


def test_extraction_removes_only_its_own_scratch_directory(recipe, tmp_path):
    scratch = recipe / "exp/aamsoftmax_sc_topk/seed0/embed_test"
    scratch.mkdir(parents=True)
    (scratch / "mine.txt").write_text("not the recipe's")
    python = str(_checking_python(tmp_path))
    args = ["--stage", "5", "--stop_stage", "5", "--use_lm", "false", "--python"]
    args += [python, "--score_norm", "none"]
    proc = run(recipe, *args)
    assert proc.returncode == 1 and "was not made by run.sh" in proc.stderr
    assert (scratch / "mine.txt").read_text() == "not the recipe's"
    # A marker naming run.sh copied in proves nothing: it names another directory.
    (scratch / MARKER).write_text("run.sh 0:0\n")
    proc = run(recipe, *args)
    assert proc.returncode == 1 and "was not made by run.sh" in proc.stderr
    assert (scratch / "mine.txt").read_text() == "not the recipe's"
    # A scratch directory of the recipe's (an interrupted extraction) is replaced;
    # the stand-in python then fails the extraction itself.
    (scratch / "mine.txt").unlink()
    (scratch / MARKER).unlink()
    claim_dir(scratch, "run.sh", "scratch")
    (scratch / "half.npz").write_text("partial")
    proc = run(recipe, *args)
    assert proc.returncode == 1 and "was not made" not in proc.stderr
    assert [p.name for p in scratch.iterdir()] == [MARKER]
    assert made_by(scratch) == "run.sh"


def test_cleaning_stage_removes_nothing_in_its_output_directory(recipe, tmp_path):
    cleaning = recipe / "exp/aamsoftmax_sc_topk/seed0/cleaning_th55"
    cleaning.mkdir(parents=True)
    (cleaning / "mine.txt").write_text("kept")
    python = str(_checking_python(tmp_path))
    proc = run(recipe, "--stage", "8", "--stop_stage", "8", "--python", python)
    assert proc.returncode == 1
    assert (cleaning / "mine.txt").read_text() == "kept"
    assert (cleaning.parent / "cleaning_th55.log").is_file()  # the log is beside it


def _users_corpus(root: Path, n_speakers: int = 4) -> None:
    """mine/train and mine/test of a user (lists only: the checks before the first
    stage read no audio), audio under mine/audio."""
    utts = [(f"s{i}", f"s{i}-u{j}") for i in range(n_speakers) for j in range(2)]
    train, test = root / "mine" / "train", root / "mine" / "test"
    for d in (train, test):
        d.mkdir(parents=True)
        (d / "wav.scp").write_text(
            "".join(f"{u} mine/audio/{u}.wav\n" for _, u in utts)
        )
    (train / "utt2spk").write_text("".join(f"{u} {s}\n" for s, u in utts))
    (train / "spk2utt").write_text(
        "".join(f"s{i} s{i}-u0 s{i}-u1\n" for i in range(n_speakers))
    )
    for name in ("trial.scp", "trial2.scp"):
        (test / name).write_text(f"s0-u0*s1-u0 mine/audio/s{name[5:6]}.wav\n")
    (test / "trial_label").write_text("s0-u0*s1-u0 0\n")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--results", "mine/test/trial_label"],
         "--results mine/test/trial_label overlaps the input --valid_dir mine/test"),
        (["--dump", "mine/train/dump"],
         "--dump mine/train/dump overlaps the input --train_dir mine/train"),
        (["--expdir", "mine/audio/../audio/exp"],
         "--expdir mine/audio/../audio/exp overlaps the input mine/audio (audio of"),
        (["--data", "mine"], "--data mine overlaps the input --train_dir mine/train"),
        (["--score_json", "mine"], "--score_json mine overlaps the input"),
        (["--results", "exp/R.md"], "--results exp/R.md overlaps --expdir exp"),
        (["--clean_threshold", "0"], "--clean_threshold 0: must be an angle in (0,"),
        (["--cohort_speakers", "1"], "--cohort_speakers 1: give 0 (all) or 2 or more"),
        ([], "--top_n 50 is more than the 4 cohort speakers stage 6 will have"),
        (["--valid_dir", "", "--n_valid_speakers", "3"],
         "--n_valid_speakers 3: 4 training speakers cannot give that many"),
        (["--stage", "6", "--top_n", "1"], "--top_n 1: must be >= 2"),
        (["--quality_measures", "duration nrm"],
         "--quality_measures 'duration nrm': nrm is not one of duration norm cohort"),
        (["--calibrate", "both", "--cohort_utts_per_speaker", "1"],
         "--calibrate both with --cohort_utts_per_speaker 1: the cohort would have "
         "no same-speaker trials"),
    ],
)  # fmt: skip
def test_every_output_and_late_option_is_checked_before_any_stage(
    recipe, args, message
):
    # The user's own directories as inputs; outputs pointed into them (through ..
    # too), and options that only a late stage used to refuse.
    _users_corpus(recipe)
    before = digest(recipe)
    users = ["--train_dir", "mine/train", "--valid_dir", "mine/test", "--test_dir",
             "mine/test", "--python", sys.executable, "--stop_stage", "9"]  # fmt: skip
    proc = run(recipe, *users, *args)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and proc.stdout == ""  # no stage started
    assert digest(recipe) == before  # nothing written, nothing made
    made = sorted(p.name for p in recipe.iterdir())
    assert made == ["conf", "local", "mine", "run.sh"]


def test_training_speaker_calibration_needs_a_cohort_with_same_speaker_trials(
    recipe,
):
    """From stage 3 on the cohort exists: one utterance per speaker is refused
    before training, not at stage 7."""
    cohort = recipe / "data" / "cohort"
    cohort.mkdir(parents=True)
    (cohort / "utt2spk").write_text("a-u0 a\nb-u0 b\nc-u0 c\n")
    before = digest(recipe)
    proc = run(recipe, "--stage", "3", "--calibrate", "train", "--top_n", "2",
               "--python", sys.executable)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert (
        "--calibrate train: data/cohort/utt2spk has no speaker with two or more "
        "utterances" in proc.stderr
    )
    assert proc.stdout == "" and digest(recipe) == before
