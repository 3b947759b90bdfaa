"""Distributed training on CPU with gloo, launched by torchrun, through the real
ESPnet trainer, the plugin's margin scheduler and the class-sharded head: its
checkpoints hold the full weight, resume on another number of ranks, and serve a
single-process extraction."""

import ast
import re
import shutil
import socket
import sys

import pytest
import soundfile
import torch
from espnet2.bin.spk_inference import Speech2Embedding
from espnet2.train.distributed_utils import DistributedOption

from espnet_plugin_intertopk.train.loss_options import split_loss_options
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask
from espnet_plugin_intertopk.train.trainer import validation_stats

from conftest import (
    N_TRAIN_SPK,
    SCHEDULE,
    epoch_results,
    run_python,
    run_pythons,
    train_command,
)

pytestmark = pytest.mark.slow
# Plots and tensorboard events are tested elsewhere; here they only cost time.
NO_PLOTS = ["--use_matplotlib", "false", "--use_tensorboard", "false"]


def test_two_rank_cpu_training_with_torchrun_and_a_sharded_head(tiny_corpus, tmp_path):
    exp = tmp_path / "ddp"
    args = train_command(
        tiny_corpus,
        exp,
        *SCHEDULE,
        "--loss_conf",
        "shard_classes=true",
        "--max_epoch",
        "1",
        "--multiprocessing_distributed",
        "false",
        "--dist_backend",
        "gloo",
        *NO_PLOTS,
    )
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
    ]
    log = log_two_ranks = run_python(args, launcher=launcher)
    epochs = epoch_results(log)
    assert sorted(epochs) == [1]
    assert all(0.0 <= epochs[e]["valid/eer"] <= 100.0 for e in epochs)
    lines = [line for line in log.splitlines() if "margin per rank" in line]
    assert len(lines) == 1
    for line in lines:
        rows = ast.literal_eval(line.split("margin per rank (steps, mean, last): ")[1])
        assert len(rows) == 2 and rows[0] == rows[1]
    # Rank 0 (the one that logs) held the first half of the classes.
    half = N_TRAIN_SPK // 2
    assert set(re.findall(r"class_range=\((\d+), (\d+)\)", log)) == {("0", str(half))}

    # Checkpoints hold the full weight, gathered on save: no NaN placeholder rows.
    K, nout = 3, 32
    for name in ("checkpoint.pth", "1epoch.pth", "valid.eer.best.pth"):
        states = torch.load(exp / name, map_location="cpu", weights_only=False)
        weight = states.get("model", states)["loss.weight"]
        assert weight.shape == (K * N_TRAIN_SPK, nout), name
        assert torch.isfinite(weight).all(), name
        # Both ranks' blocks were trained away from the same initial scale.
        assert weight[: K * half].abs().sum() > 0 and weight[K * half :].abs().sum() > 0
    checkpoint = torch.load(exp / "checkpoint.pth", weights_only=False)
    before = checkpoint["model"]
    # Adam's moments of the sharded weight too, in the full shape.
    moments = [
        state["exp_avg"]
        for state in checkpoint["optimizers"][0]["state"].values()
        if state["exp_avg"].shape[0] == K * N_TRAIN_SPK
    ]
    assert len(moments) == 1 and torch.isfinite(moments[0]).all()
    assert moments[0][: K * half].abs().sum() > 0
    assert moments[0][K * half :].abs().sum() > 0
    torch.save(before, tmp_path / "two_ranks.pth")

    # Validation across ranks (each embeds half the utterances, the embeddings are
    # gathered) reports what one process validating the same model does.
    one = IntertopkSpeakerTask.get_parser().parse_args(args[2:])
    split_loss_options(one)
    model, _ = IntertopkSpeakerTask.build_model_from_file(
        exp / "config.yaml", exp / "1epoch.pth", "cpu"
    )
    factory = IntertopkSpeakerTask.build_iter_factory(
        one, DistributedOption(distributed=False), "valid"
    )
    single = validation_stats(one, model, factory.build_iter(1))
    two_ranks = checkpoint["reporter"]["stats"][1]["valid"]
    n_trials = len((tiny_corpus / "valid" / "trial_label").read_text().splitlines())
    assert single["n_trials"] == two_ranks["n_trials"] == n_trials
    # Rank 0 (the one that logs) embedded half of the 12 utterances, not all.
    assert "validation: 6 of 12 utterances embedded here" in log_two_ranks
    for key in ("eer", "mindcf", "trg_mean", "nontrg_mean", "nontrg_std"):
        assert two_ranks[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key

    # Resume on one process (the block becomes the whole weight): epoch 2 only;
    # beside it the same checkpoint resumed as an ordinary unsharded run. The
    # sharded run's gathered weight and Adam state must continue exactly as that.
    plain = tmp_path / "plain"
    shutil.copytree(exp, plain)
    log, _ = run_pythons(
        [
            train_command(tiny_corpus, exp, *SCHEDULE, "--loss_conf",
                          "shard_classes=true", "--max_epoch", "2", *NO_PLOTS),
            train_command(tiny_corpus, plain, *SCHEDULE, "--max_epoch", "2",
                          *NO_PLOTS),
        ]
    )  # fmt: skip
    assert sorted(epoch_results(log)) == [2]
    assert f"class_range=(0, {N_TRAIN_SPK})" in log
    resumed = torch.load(exp / "2epoch.pth", weights_only=False)
    assert not torch.equal(resumed["loss.weight"], before["loss.weight"])
    unsharded = torch.load(plain / "2epoch.pth", weights_only=False)
    assert resumed.keys() == unsharded.keys()
    for key in resumed:
        assert torch.equal(resumed[key], unsharded[key]), key

    # Extraction in one process from the 2-rank checkpoint: no loss needed.
    embed = Speech2Embedding(
        train_config=exp / "config.yaml", model_file=tmp_path / "two_ranks.pth"
    )
    wav = next(iter((tiny_corpus / "train" / "wav.scp").open())).split()[1]
    speech = torch.tensor(soundfile.read(wav, dtype="float32")[0])
    vector = embed(speech)
    assert vector.shape[-1] == nout and torch.isfinite(vector).all()
    assert torch.equal(embed.spk_model.loss.weight.detach(), before["loss.weight"])
