"""The VoxCeleb configurations (``conf/voxceleb``): each parses with ``--print_config``
through the plugin's interpreter, and each architecture trains a step, shrunk through
command-line overrides, on the generated corpus; each LM config then fine-tunes a step
from that model (so its model sections match).

All of it runs in one ``espnet-intertopk-python`` process (a process costs some 15 s
of ESPnet imports).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from conftest import reporter_stats, train_command

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parents[1] / "conf" / "voxceleb"
MODELS = ("ecapa_tdnn", "ska_tdnn", "resnet34")
PYTHON = str(Path(sys.executable).with_name("espnet-intertopk-python"))
# Tiny sizes, and what a CPU test run needs (no AMP, no loader workers, one step).
SHRINK = {
    "ecapa_tdnn": ["--encoder_conf", "ndim=16", "--encoder_conf", "output_size=24"],
    "ska_tdnn": ["--encoder_conf", "ndim=16", "--encoder_conf", "ska_dim=8"]
    + ["--encoder_conf", "output_size=24"],
    "resnet34": ["--encoder_conf", "m_channels=2"],
}
COMMON = ["--projector_conf", "output_size=16", "--batch_size", "4"]
COMMON += ["--valid_batch_size", "4", "--num_workers", "0", "--use_amp", "false"]
COMMON += ["--max_epoch", "1", "--num_iters_per_epoch", "1", "--accum_grad", "1"]
MODEL_KEYS = ("frontend", "encoder", "pooling", "projector", "normalize", "specaug")

# What `-m espnet2.bin.spk_train --config C --print_config` runs (ESPnet's
# print_config reads sys.argv), with the output to a file.
RUN_ALL = """
import json, sys
from espnet_plugin_intertopk.bin import spk_train
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask
jobs = json.load(open(sys.argv[1]))
for name, config, out in jobs["print_config"]:
    sys.argv = ["spk_train", "--config", config, "--print_config"]
    with open(out, "w") as f:
        IntertopkSpeakerTask.print_config(file=f)
for cmd in jobs["train"]:
    spk_train.main(cmd)
"""


def write_augmentation_lists(root: Path, corpus: Path) -> None:
    """dump/raw/musan_*.scp and rirs.scp as the configs expect them (relative to the
    run directory): corpus utterances as noise, and one synthetic room response."""
    raw = root / "dump" / "raw"
    raw.mkdir(parents=True)
    wavs = [line.split()[1] for line in (corpus / "valid" / "wav.scp").open()][:3]
    for kind in ("speech", "noise", "music"):
        lines = [f"{kind}{i} {w}\n" for i, w in enumerate(wavs)]
        (raw / f"musan_{kind}.scp").write_text("".join(lines))
    t = np.arange(1600) / 16000
    rir = np.random.default_rng(0).normal(size=t.size) * np.exp(-t / 0.05)
    rir[0] = 1.0
    soundfile.write(raw / "rir0.wav", rir.astype(np.float32), 16000)
    (raw / "rirs.scp").write_text(f"rir0 {raw / 'rir0.wav'}\n")


@pytest.fixture(scope="module")
def voxceleb_runs(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("voxceleb")
    write_augmentation_lists(root, tiny_corpus)
    jobs = {"print_config": [], "train": []}
    for model in MODELS:
        for suffix in ("", "_lm"):
            name = f"train_{model}{suffix}"
            out = str(root / f"{name}.print_config.yaml")
            jobs["print_config"].append([name, str(CONF / f"{name}.yaml"), out])
        exp = root / "exp" / model
        args = train_command(
            tiny_corpus,
            exp,
            *SHRINK[model],
            *COMMON,
            config=CONF / f"train_{model}.yaml",
        )[2:]
        jobs["train"].append(args)
        lm_args = train_command(
            tiny_corpus,
            root / "exp" / f"{model}_lm",
            *SHRINK[model],
            *COMMON,
            "--init_param",
            str(exp / "1epoch.pth"),
            config=CONF / f"train_{model}_lm.yaml",
        )[2:]
        jobs["train"].append(lm_args)
    (root / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run(
        [PYTHON, "-c", RUN_ALL, str(root / "jobs.json")],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-8000:]
    return root, proc.stdout


@pytest.mark.parametrize("model", MODELS)
def test_training_config_prints_the_plugin_loss_and_warm_up(voxceleb_runs, model):
    root, _ = voxceleb_runs
    printed = yaml.safe_load((root / f"train_{model}.print_config.yaml").read_text())
    given = yaml.safe_load((CONF / f"train_{model}.yaml").read_text())
    assert printed["loss"] == "aamsoftmax_sc_topk"
    # The plugin's class answered: its own options are listed with their defaults.
    assert printed["loss_conf"]["class_chunk_size"] is None
    assert printed["loss_conf"]["margin"] == 0.3 and printed["loss_conf"]["K"] == 3
    for key in ("encoder", "pooling", "projector", "optim", "max_epoch", "batch_size"):
        assert printed[key] == given[key], key
    schedule = printed["margin_scheduler_conf"]
    assert printed["margin_scheduler"] == "exp" and schedule["final_margin"] == 0.3
    # WeSpeaker's VoxCeleb proportions: margin from about 13 %, full from about 27 %.
    epochs = printed["max_epoch"]
    assert (schedule["increase_start_epoch"] - 1) / epochs == pytest.approx(
        0.13, abs=0.01
    )
    assert (schedule["fix_start_epoch"] - 1) / epochs == pytest.approx(0.27, abs=0.025)


@pytest.mark.parametrize("model", MODELS)
def test_lm_config_keeps_the_model_and_sets_a_large_margin(voxceleb_runs, model):
    root, _ = voxceleb_runs
    lm = yaml.safe_load((root / f"train_{model}_lm.print_config.yaml").read_text())
    train = yaml.safe_load((root / f"train_{model}.print_config.yaml").read_text())
    for key in MODEL_KEYS:
        assert lm[key] == train[key] and lm[f"{key}_conf"] == train[f"{key}_conf"], key
    assert lm["loss_conf"]["do_lm"] is True and lm["loss_conf"]["margin"] == 0.5
    assert lm["loss_conf"]["K"] == train["loss_conf"]["K"]
    assert lm["margin_scheduler"] == "constant"
    assert lm["margin_scheduler_conf"]["margin"] == 0.5
    assert lm["preprocessor_conf"]["target_duration"] == 6.0
    assert lm["optim_conf"]["lr"] <= train["optim_conf"]["lr"] / 10
    assert lm["max_epoch"] <= 5


@pytest.mark.parametrize("model", MODELS)
def test_each_architecture_trains_a_step_then_fine_tunes(voxceleb_runs, model):
    root, log = voxceleb_runs
    trained = reporter_stats(root / "exp" / model)[1]["train"]
    assert np.isfinite(trained["loss"])
    assert trained["margin"] == 0.0  # epoch 1 is before the warm-up starts
    tuned = reporter_stats(root / "exp" / f"{model}_lm")[1]["train"]
    assert np.isfinite(tuned["loss"]) and tuned["margin"] == 0.5
    config = yaml.safe_load((root / "exp" / f"{model}_lm" / "config.yaml").read_text())
    assert config["init_param"] == [str(root / "exp" / model / "1epoch.pth")]
    assert "do_lm=True" in log and "k_top=0" in log
