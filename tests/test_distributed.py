"""Distributed training on CPU with gloo, launched by torchrun, through the real
ESPnet trainer and the plugin's margin scheduler."""

import ast
import socket
import sys

import pytest

from conftest import SCHEDULE, epoch_results, run_python, train_command

pytestmark = pytest.mark.slow


def test_two_rank_cpu_training_with_torchrun(tiny_corpus, tmp_path):
    exp = tmp_path / "ddp"
    args = train_command(
        tiny_corpus,
        exp,
        *SCHEDULE,
        "--max_epoch",
        "2",
        "--multiprocessing_distributed",
        "false",
        "--dist_backend",
        "gloo",
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
    log = run_python(args, launcher=launcher)
    epochs = epoch_results(log)
    assert sorted(epochs) == [1, 2]
    assert all(0.0 <= epochs[e]["valid/eer"] <= 100.0 for e in epochs)
    lines = [line for line in log.splitlines() if "margin per rank" in line]
    assert len(lines) == 2
    for line in lines:
        rows = ast.literal_eval(line.split("margin per rank (steps, mean, last): ")[1])
        assert len(rows) == 2 and rows[0] == rows[1]
