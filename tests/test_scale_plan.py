"""Which runs local/scale.sh and local/compare_losses.sh plan: the real scripts, with
run.sh and the checkout's python replaced by stand-ins that record their command lines
and succeed, so that a whole experiment's plan takes a second."""

import shlex
import shutil
import subprocess
from pathlib import Path

from conftest import RECIPE, TESTS

RECORDER = (
    '#!/usr/bin/env bash\nprintf "%q " "$(basename "$0")" "$@" >> "{calls}"\n'
    'echo >> "{calls}"\n'
)
CORPUS = "downloads/scale1000_seed0"


def plan(
    tmp_path: Path,
    *args: str,
    logs: tuple[str, ...] = (),
    script: str = "local/scale.sh",
    files: tuple[str, ...] = (),
) -> list[list[str]]:
    """The command lines (program name first) that ``SCRIPT ARGS`` runs, in order;
    ``logs``: run directories (in the recipe) given a train.log first, ``files``:
    other (empty) files made first."""
    checkout = tmp_path / "checkout"
    recipe = checkout / "egs" / "synth" / "spk1"
    recipe.mkdir(parents=True)
    for path in [f"{run}/train.log" for run in logs] + list(files):
        (recipe / path).parent.mkdir(parents=True, exist_ok=True)
        (recipe / path).write_text("")
    shutil.copytree(RECIPE / "local", recipe / "local")
    (recipe / "conf").symlink_to(TESTS.parent / "conf")
    calls = tmp_path / "calls"
    # local/job_pool.sh takes the checkout's .venv python, four levels above local/.
    for stub in (recipe / "run.sh", checkout / ".venv" / "bin" / "python"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(RECORDER.format(calls=calls))
        stub.chmod(0o755)
    proc = subprocess.run(
        ["bash", script, *args],
        cwd=recipe,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in calls.read_text().splitlines()]


def value(argv: list[str], option: str) -> str | None:
    """The value of ``option`` given once in ``argv``; None where it is not given."""
    found = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]
    assert len(found) <= 1, argv
    return found[0] if found else None


def of(calls: list[list[str]], module: str) -> list[list[str]]:
    """The calls of ``python -m espnet_plugin_intertopk.recipe.<module>``."""
    return [c for c in calls if f"espnet_plugin_intertopk.recipe.{module}" in c]


def trainings(calls: list[list[str]]) -> list[tuple[str, str, str]]:
    """(experiment directory, model name, use_lm) of each training run."""
    return [
        (value(c, "--expdir"), value(c, "--tag"), value(c, "--use_lm"))
        for c in calls
        if c[0] == "run.sh" and value(c, "--stage") == "3"
    ]


def test_smaller_scales_train_on_the_corpus_of_corpus_speakers(tmp_path):
    logs = (
        "exp/scale300/aamsoftmax/seed0",
        "exp/scale300/aamsoftmax/seed7",  # not a seed of this call
        "exp/scale300/aamsoftmax_sc_topk_lm/seed0",
    )
    calls = plan(tmp_path, "--scales", "300 100", "--corpus_speakers", "1000",
                 "--parts", "curve", "--seeds", "0", logs=logs)  # fmt: skip
    corpora = of(calls, "synthetic_corpus")
    assert {c[3] for c in corpora} == {CORPUS}
    assert {value(c, "--n_train_speakers") for c in corpora} == {"1000"}
    assert [
        (c[4], c[5], value(c, "--n_speakers")) for c in of(calls, "kaldi_data")
    ] == [(f"{CORPUS}/train", f"{CORPUS}_train{n}", str(n)) for n in (300, 100)]
    # Not the corpus's scale: only the plugin gets LM, and no ablation is planned.
    expected = [("aamsoftmax_sc_topk", "true"), ("aamsoftmax_sc_topk_espnet", "false"),
                ("aamsoftmax", "false")]  # fmt: skip
    planned = [(f"exp/scale{n}", *m) for n in (300, 100) for m in expected]
    assert trainings(calls) == planned
    # The trainings' curves, from the runs a scale has (not LM's, nor at 100: none).
    (curves,) = of(calls, "training_curves")
    assert value(curves, "--run") == "aamsoftmax/seed0=exp/scale300/aamsoftmax/seed0"
    assert value(curves, "--out") == "RESULTS_scale300_training.md"
    (summary,) = of(calls, "scale_summary")
    assert [summary[i + 1] for i, a in enumerate(summary) if a == "--point"] == [
        "300=RESULTS_scale300.json",
        "100=RESULTS_scale100.json",
    ]


def test_without_corpus_speakers_the_largest_scale_is_the_corpus(tmp_path):
    calls = plan(tmp_path, "--scales", "300 100", "--parts", "curve", "--seeds", "0")
    assert {c[3] for c in of(calls, "synthetic_corpus")} == {"downloads/scale300_seed0"}
    # The baselines' LM is at the largest scale.
    assert ("exp/scale300", "aamsoftmax", "true") in trainings(calls)
    assert ("exp/scale100", "aamsoftmax", "false") in trainings(calls)


def test_the_ablation_runs_at_the_corpus_scale_with_its_reference(tmp_path):
    calls = plan(tmp_path, "--scales", "100", "--corpus_speakers", "1000",
                 "--parts", "ablation", "--seeds", "2")  # fmt: skip
    assert trainings(calls) == [
        ("exp/scale1000", "aamsoftmax_sc_topk", "true"),
        ("exp/scale1000", "ablation_K1", "false"),
        ("exp/scale1000", "ablation_k_top0", "false"),
        ("exp/scale1000", "ablation_constant_margin", "false"),
        ("exp/scale1000", "ablation_k_top5", "false"),
    ]
    runs = [c for c in calls if c[0] == "run.sh"]
    assert {value(c, "--train_seed") for c in runs} - {None} == {"2"}
    scorings = [value(c, "--results") for c in runs if value(c, "--stage") == "6"]
    assert scorings == ["RESULTS_scale1000_ablation.md"]


def test_curve_and_ablation_train_the_reference_once(tmp_path):
    calls = plan(tmp_path, "--scales", "1000 100", "--parts", "curve ablation",
                 "--seeds", "0")  # fmt: skip
    at_1000 = [t for t in trainings(calls) if t[0] == "exp/scale1000"]
    assert [t[1] for t in at_1000] == [
        "aamsoftmax_sc_topk",
        "aamsoftmax_sc_topk_espnet",
        "aamsoftmax",
        "ablation_K1",
        "ablation_k_top0",
        "ablation_constant_margin",
        "ablation_k_top5",
    ]
    assert {t[2] for t in at_1000[:3]} == {"true"}  # LM for all at the corpus scale


def test_the_ablation_alone_prepares_its_data_first(tmp_path):
    calls = plan(tmp_path, "--scales", "1000", "--parts", "ablation", "--seeds", "0")
    runs = [c for c in calls if c[0] == "run.sh"]
    assert value(runs[0], "--stop_stage") == "2"
    assert value(runs[0], "--data") == "data_scale1000"
    assert value(runs[0], "--train_dir") == f"{CORPUS}_train1000"
    assert value(runs[1], "--stage") == "3"


def test_the_comparison_calibrates_only_scores_with_as_norm(tmp_path):
    def last_call(*args: str) -> list[str]:
        calls = plan(tmp_path / str(len(args)), "--seeds", "0", *args,
                     script="local/compare_losses.sh")  # fmt: skip
        return calls[-1]

    scoring = last_call()
    assert (value(scoring, "--stage"), value(scoring, "--stop_stage")) == ("6", "7")
    assert value(scoring, "--calibrate") == "both"
    scoring = last_call("--score_norm", "none")
    assert (value(scoring, "--stage"), value(scoring, "--stop_stage")) == ("6", "6")


def test_wall_time_is_recorded_for_trainings_not_for_reruns(tmp_path):
    finished = "valid.eer.ave.pth"  # ESPnet's last file of a finished training
    files = (
        f"exp/scale100/aamsoftmax/seed0/{finished}",
        # The plugin's stage-3 run finished, its LM not: it trains.
        f"exp/scale100/aamsoftmax_sc_topk/seed0/{finished}",
    )
    plan(tmp_path, "--scales", "100", "--corpus_speakers", "1000", "--parts", "curve",
         "--seeds", "0", files=files)  # fmt: skip
    walltime = tmp_path / "checkout/egs/synth/spk1/exp/scale_walltime.tsv"
    recorded = [line.split("\t")[:3] for line in walltime.read_text().splitlines()]
    assert recorded == [
        ["scale100", "aamsoftmax_sc_topk", "0"],
        ["scale100", "aamsoftmax_sc_topk_espnet", "0"],
    ]
