"""Shared fixtures: a tiny generated corpus and real ESPnet training runs."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from espnet_plugin_intertopk.kernels import fused_cpu
from espnet_plugin_intertopk.recipe import synthetic_corpus
from espnet_plugin_intertopk.recipe.kaldi_data import check_data_dir, write_shape_file
from espnet_plugin_intertopk.safe_io.ownership import MARKER


def _cpu_compiler_problem() -> str:
    """Why the fused C++ kernels or torch.compile cannot be built here ('' if they
    can)."""
    problem = fused_cpu.build_problem()
    if problem:
        return f"compile_kernels on CPU: {problem}"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as err:  # noqa: BLE001 - any failure means: no compiler
        return f"torch.compile on CPU needs a C++ compiler: {err}"
    return ""


# The compile_kernels tests run wherever a C++ compiler and ninja are found (they are on
# this project's machines) and are reported as skipped, with the reason, where not.
NO_CPU_COMPILER = _cpu_compiler_problem()
needs_cpu_compiler = pytest.mark.skipif(
    bool(NO_CPU_COMPILER), reason=NO_CPU_COMPILER or "compiler found"
)

SMALL = dict(
    n_train_speakers=4,
    n_valid_speakers=3,
    n_test_speakers=3,
    utts_per_speaker=3,
    valid_utts_per_speaker=3,
    test_utts_per_speaker=4,
    n_valid_trials=10,
    min_duration=0.5,
    max_duration=0.8,
)


def digest(root: Path):
    """Hash of every file, with the (location-dependent) root path and the device and
    inode an ownership marker names taken out."""
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        data = f.read_bytes().replace(str(root.resolve()).encode(), b"<root>")
        if f.name == MARKER:
            data = data.split()[0]
        out[str(f.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def trial_kinds(trials, spk_of: Dict[str, str], group_of: Dict[str, str]):
    """How many of ``trials`` ((uttA, uttB, label)) are target, non-target within a
    speaker group and non-target across groups, after checking that every label says
    whether the two speakers are one and that no pair comes twice."""
    pairs = [frozenset((a, b)) for a, b, _ in trials]
    assert all(len(p) == 2 for p in pairs) and len(set(pairs)) == len(pairs)
    kinds = {"target": 0, "within": 0, "across": 0}
    for a, b, label in trials:
        assert int(label) == (spk_of[a] == spk_of[b]), (a, b, label)
        same_group = group_of[spk_of[a]] == group_of[spk_of[b]]
        kinds["target" if int(label) else "within" if same_group else "across"] += 1
    return kinds


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """A few seconds of audio: for the corpus and data-directory tests."""
    root = tmp_path_factory.mktemp("a")
    synthetic_corpus.generate(root, seed=7, **SMALL)
    return root


TESTS = Path(__file__).resolve().parent
RECIPE = TESTS.parent / "egs" / "synth" / "spk1"


def copy_recipe(tmp_path: Path) -> Path:
    """A copy of the recipe directory, so that a test writes nothing into the
    checkout (its conf/ is the checkout's)."""
    d = tmp_path / "spk1"
    d.mkdir()
    shutil.copy(RECIPE / "run.sh", d)
    shutil.copytree(RECIPE / "local", d / "local")
    (d / "conf").symlink_to(TESTS.parent / "conf")
    return d


TINY_CONFIG = TESTS / "conf" / "tiny_train.yaml"
N_TRAIN_SPK = 6


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    synthetic_corpus.generate(
        root,
        n_train_speakers=N_TRAIN_SPK,
        n_valid_speakers=3,
        n_test_speakers=3,
        utts_per_speaker=8,
        valid_utts_per_speaker=4,
        test_utts_per_speaker=4,
        n_valid_trials=40,
        min_duration=1.2,
        max_duration=1.8,
        seed=1,
    )
    check_data_dir(root / "train", "train")
    check_data_dir(root / "valid", "test")
    check_data_dir(root / "test", "test")
    write_shape_file(root / "train" / "wav.scp", root / "train_shape")
    write_shape_file(root / "valid" / "trial.scp", root / "valid_shape")
    return root


def train_command(
    corpus: Path,
    output_dir: Path,
    *extra: str,
    config: Path = TINY_CONFIG,
    module: str = "espnet_plugin_intertopk.bin.spk_train",
) -> List[str]:
    d = corpus
    return [
        "-m",
        module,
        "--config",
        str(config),
        "--ngpu",
        "0",
        "--use_preprocessor",
        "true",
        "--resume",
        "true",
        "--output_dir",
        str(output_dir),
        "--train_data_path_and_name_and_type",
        f"{d}/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type",
        f"{d}/train/utt2spk,spk_labels,text",
        "--train_shape_file",
        f"{d}/train_shape",
        "--fold_length",
        "120000",
        "--valid_data_path_and_name_and_type",
        f"{d}/valid/trial.scp,speech,sound",
        "--valid_data_path_and_name_and_type",
        f"{d}/valid/trial2.scp,speech2,sound",
        "--valid_data_path_and_name_and_type",
        f"{d}/valid/trial_label,spk_labels,text",
        "--valid_shape_file",
        f"{d}/valid_shape",
        "--spk2utt",
        f"{d}/train/spk2utt",
        "--spk_num",
        str(N_TRAIN_SPK),
        *extra,
    ]


def run_pythons(commands: List[List[str]], timeout: int = 300) -> List[str]:
    """Run the commands (``python <args>``, or a launcher's command line) side by side,
    one thread each (most of a short ESPnet run is single-threaded imports); return
    their logs, or fail with the log of the first that failed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmds = [c if c[0] != "-m" else [sys.executable, *c] for c in commands]
    procs = [
        subprocess.Popen(
            c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for c in cmds
    ]
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    for cmd, proc, log in zip(cmds, procs, logs):
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-6000:]}"
    return logs


def run_python(args: List[str], launcher: List[str] = None, timeout: int = 300) -> str:
    """Run ``python <args>`` (or ``<launcher> <args>``); return its log or fail."""
    return run_pythons([(launcher or [sys.executable]) + args], timeout)[0]


def train(corpus: Path, output_dir: Path, *extra: str, **kwargs) -> str:
    return run_python(train_command(corpus, output_dir, *extra, **kwargs))


_EPOCH = re.compile(r"(\d+)epoch results: \[train\] (.*?), \[valid\] (.*)$", re.M)


def epoch_results(log: str) -> Dict[int, Dict[str, float]]:
    """Per-epoch training/validation statistics from ESPnet's epoch log lines."""
    out = {}
    for epoch, train_part, valid_part in _EPOCH.findall(log):
        stats = {}
        for prefix, part in (("train", train_part), ("valid", valid_part)):
            for item in part.split(", "):
                if "=" in item:
                    key, value = item.split("=", 1)
                    try:
                        stats[f"{prefix}/{key}"] = float(value.split()[0])
                    except ValueError:
                        pass
        out[int(epoch)] = stats
    return out


# The margin schedule of the ESPnet runs in the tests: exp warm-up over epochs 1-2.
SCHEDULE = [
    "--margin_scheduler",
    "exp",
    "--margin_scheduler_conf",
    "initial_margin=0.0",
    "--margin_scheduler_conf",
    "final_margin=0.2",
    "--margin_scheduler_conf",
    "increase_start_epoch=1",
    "--margin_scheduler_conf",
    "fix_start_epoch=3",
    "--margin_scheduler_conf",
    "update_per=iteration",
]
PLUGIN_REPR = "ArcMarginProduct_intertopk_subcenter(nout=32, nclasses=6"


def reporter_stats(exp: Path):
    return torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"]["stats"]


def loss_weight(path: Path) -> torch.Tensor:
    states = torch.load(path, map_location="cpu", weights_only=False)
    return (states["model"] if "model" in states else states)["loss.weight"]


def margin_by_hand(epoch: int, iteration: int, n: int) -> float:
    """SCHEDULE written out: 0.2 (1 - 0.001^(p / 2)) at p = epoch - 1 + iteration / n
    epochs into training, 0.2 from p = 2 (the start of epoch 3) on."""
    p = epoch - 1 + iteration / n
    return 0.2 * (1 - 0.001 ** (p / 2)) if p < 2 else 0.2


def expected_epoch_margins(stats):
    """Mean of the per-iteration margins by hand, epoch by epoch (ESPnet's
    ``total_count`` counts the iterations of all epochs so far)."""
    out, done = {}, 0
    for epoch in sorted(stats):
        n = stats[epoch]["train"]["total_count"] - done
        done += n
        out[epoch] = sum(margin_by_hand(epoch, i, n) for i in range(n)) / n
    return out


def build_and_save(directory: Path, *extra: str):
    """A model as the plugin's task builds it for a run (seed 0), with config.yaml and
    the weights saved as ESPnet's trainer saves them; returns (config, weights,
    model)."""
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_plugin_intertopk.train.loss_options import split_loss_options
    from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

    args = IntertopkSpeakerTask.get_parser().parse_args(
        ["--config", str(TINY_CONFIG), "--spk_num", str(N_TRAIN_SPK), *extra]
    )
    split_loss_options(args)
    set_all_random_seed(0)
    model = IntertopkSpeakerTask.build_model(args)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml_no_alias_safe_dump(vars(args)))
    torch.save(model.state_dict(), directory / "model.pth")
    return directory / "config.yaml", directory / "model.pth", model
