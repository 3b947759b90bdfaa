"""Crash-safe checkpoints: the saving wrapper and the repair on resume as units, then
fault injection on a real ESPnet training run (SIGKILL at many moments, each followed
by --resume true) against an uninterrupted run."""

import json
import os
from pathlib import Path

import pytest
import torch
from espnet2.train.reporter import Reporter

from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError
from espnet_plugin_intertopk.train.crash_safety import (
    atomic_config,
    crash_safe_saving,
    repair_run_dir,
)

from conftest import SCHEDULE, TESTS, TINY_CONFIG, run_python, train_command


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot be saved")


def test_a_failed_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint.pth"
    with crash_safe_saving(tmp_path):
        torch.save({"epoch": 1}, path)
        with pytest.raises(RuntimeError, match="cannot be saved"):
            torch.save({"epoch": 2, "bad": _Unpicklable()}, path)
    assert torch.load(path) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]
    # Outside the block torch.save is torch's own again (it writes in place).
    assert torch.save.__module__ == "torch.serialization"


def test_a_model_link_is_replaced_without_a_gap(tmp_path):
    (tmp_path / "1epoch.pth").write_bytes(b"1")
    (tmp_path / "2epoch.pth").write_bytes(b"2")
    link = tmp_path / "valid.eer.best.pth"
    link.symlink_to("1epoch.pth")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with crash_safe_saving(tmp_path):
        link.unlink()  # what ESPnet does first: the link stays until replaced
        assert link.read_bytes() == b"1"
        link.symlink_to("2epoch.pth")
        other.unlink()  # anything else is removed as usual
    assert os.readlink(link) == "2epoch.pth"
    assert not other.exists()


def test_config_yaml_is_replaced_whole(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("seed: 0\n")
    with atomic_config(tmp_path):
        with pytest.raises(KeyboardInterrupt):
            with config.open("w", encoding="utf-8") as f:
                f.write("seed: 1\nlo")  # killed in the middle of the dump
                raise KeyboardInterrupt
        assert config.read_text() == "seed: 0\n"
        with config.open("w", encoding="utf-8") as f:
            f.write("seed: 1\n")
        with (tmp_path / "other.txt").open("w") as f:  # anything else: as usual
            f.write("x")
    assert config.read_text() == "seed: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "other.txt"]


def _checkpoint(directory: Path, eers):
    """checkpoint.pth after len(eers) epochs with these validation EERs."""
    reporter = Reporter()
    for epoch, eer in enumerate(eers, 1):
        reporter.set_epoch(epoch)
        with reporter.observe("valid") as sub:
            sub.register({"eer": eer})
            sub.next()
    model = {"w": torch.arange(4.0) + len(eers)}
    torch.save(
        {"model": model, "reporter": reporter.state_dict()},
        directory / "checkpoint.pth",
    )
    return model


def test_repair_rewrites_what_a_kill_after_the_checkpoint_left_out(tmp_path):
    # Killed after checkpoint.pth of epoch 3 (the best) was saved: 3epoch.pth and
    # the links of epoch 3 were never written; a write was interrupted.
    model = _checkpoint(tmp_path, [30.0, 20.0, 10.0])
    torch.save({"w": torch.zeros(4)}, tmp_path / "2epoch.pth")
    (tmp_path / "latest.pth").symlink_to("2epoch.pth")
    (tmp_path / "valid.eer.best.pth").symlink_to("2epoch.pth")
    (tmp_path / f"{atomic.TEMP_PREFIX}3epoch.pth.x1").write_bytes(b"half")
    repair_run_dir(tmp_path, [("valid", "eer", "min"), ("train", "loss", "min")], 10)
    assert torch.equal(torch.load(tmp_path / "3epoch.pth")["w"], model["w"])
    assert os.readlink(tmp_path / "latest.pth") == "3epoch.pth"
    assert os.readlink(tmp_path / "valid.eer.best.pth") == "3epoch.pth"
    assert not (tmp_path / "train.loss.best.pth").exists()  # never reported
    assert not list(tmp_path.glob(atomic.TEMP_PREFIX + "*"))


@pytest.mark.parametrize("keep", [0, 100, -1])
def test_a_truncated_checkpoint_is_one_line_on_resume(tmp_path, keep):
    # Written in place by plain ESPnet (or cut by a copy): resuming from it is refused
    # with the file named and what to do, not an unpickling traceback.
    _checkpoint(tmp_path, [30.0, 20.0])
    path = tmp_path / "checkpoint.pth"
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[: len(data) // 2])
    with pytest.raises(UserError) as refused:
        repair_run_dir(tmp_path, [("valid", "eer", "min")], 10)
    message = str(refused.value)
    assert message.startswith(f"{path}: cannot resume from it: it is truncated")
    assert "\n" not in message and "move it away" in message
    assert path.read_bytes() == (data[:keep] if keep >= 0 else data[: len(data) // 2])


def test_repair_keeps_an_older_best_and_rewrites_a_stale_epoch_file(tmp_path):
    model = _checkpoint(tmp_path, [10.0, 20.0])
    torch.save({"w": torch.ones(4)}, tmp_path / "1epoch.pth")
    # An epoch file that is not the checkpoint's model (a run of before): rewritten.
    torch.save({"w": torch.full((4,), 7.0)}, tmp_path / "2epoch.pth")
    repair_run_dir(tmp_path, [("valid", "eer", "min")], 10)
    assert os.readlink(tmp_path / "valid.eer.best.pth") == "1epoch.pth"
    assert os.readlink(tmp_path / "latest.pth") == "2epoch.pth"
    assert torch.equal(torch.load(tmp_path / "2epoch.pth")["w"], model["w"])
    assert torch.equal(torch.load(tmp_path / "1epoch.pth")["w"], torch.ones(4))


def test_repair_prunes_as_espnet_would_have(tmp_path):
    # Killed after epoch 4's files, before ESPnet removed the epochs outside the
    # 2 best: epochs 2 and 4 (EER 10, 15) stay, 1 and 3 go; the last one stays too.
    model = _checkpoint(tmp_path, [30.0, 10.0, 40.0, 15.0])
    for epoch in (1, 2, 3):
        torch.save(
            {"w": torch.full((4,), float(epoch))}, tmp_path / f"{epoch}epoch.pth"
        )
    torch.save(model, tmp_path / "4epoch.pth")
    (tmp_path / f"{atomic.TEMP_PREFIX}build").mkdir()  # a directory: not ours
    repair_run_dir(tmp_path, [("valid", "eer", "min")], [1, 2])
    assert sorted(p.name for p in tmp_path.glob("*epoch.pth")) == [
        "2epoch.pth",
        "4epoch.pth",
    ]
    assert (tmp_path / f"{atomic.TEMP_PREFIX}build").is_dir()


def test_saved_files_get_the_mode_a_plain_save_gives(tmp_path):
    umask = os.umask(0o022)
    try:
        torch.save({}, tmp_path / "plain.pth")
        with crash_safe_saving(tmp_path):
            torch.save({}, tmp_path / "atomic.pth")
    finally:
        os.umask(umask)
    mode = (tmp_path / "plain.pth").stat().st_mode & 0o777
    assert mode == 0o644
    assert (tmp_path / "atomic.pth").stat().st_mode & 0o777 == mode


def test_a_save_through_a_link_keeps_the_link(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "checkpoint.pth").symlink_to(scratch / "checkpoint.pth")
    with crash_safe_saving(tmp_path):
        torch.save({"epoch": 1}, tmp_path / "checkpoint.pth")
    assert (tmp_path / "checkpoint.pth").is_symlink()
    assert torch.load(scratch / "checkpoint.pth") == {"epoch": 1}


# The moments of the fault-injection run (3 epochs of about 5 steps each).
FAULTS = [
    {"at": "link", "file": "valid.eer.best.pth"},  # epoch 1: best link not replaced
    {"at": "step", "n": 3},  # inside epoch 2's training
    {"at": "validation"},  # during epoch 2's validation
    {"at": "write", "file": "checkpoint.pth"},  # mid-write of epoch 2's checkpoint
    {"at": "written", "file": "checkpoint.pth"},  # before 2epoch.pth is written
    {"at": "write", "file": "3epoch.pth"},  # mid-write of the last epoch file
    {"at": "average"},  # the n-best averaging after the last epoch
]


def _tensors(path: Path):
    states = torch.load(path, map_location="cpu", weights_only=False)
    return states.get("model", states)


def _assert_same(a: Path, b: Path):
    x, y = _tensors(a), _tensors(b)
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), (a.name, key)


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(tiny_corpus, tmp_path):
    args = train_command(
        tiny_corpus, tmp_path / "unused", *SCHEDULE, "--max_epoch", "3"
    )[2:] + ["--keep_nbest_models", "1"]
    # No plots or tensorboard events: not what is tested, and a second per epoch.
    args += ["--use_matplotlib", "false", "--use_tensorboard", "false"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    runs = [{"output_dir": str(whole), "fault": None}]
    runs += [{"output_dir": str(killed), "fault": f} for f in FAULTS + [None]]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"args": args, "runs": runs}))
    log = run_python([str(TESTS / "fault_driver.py"), str(spec)], timeout=600)
    results = json.loads(next(x for x in log.splitlines() if x.startswith("[{")))
    # Every fault was reached and killed its run; the last run finished.
    assert [r["signal"] for r in results] == [None] + [9] * len(FAULTS) + [None]
    assert results[0]["exit"] == results[-1]["exit"] == 0
    assert log.count("The training was resumed using") >= len(FAULTS) - 1
    for name in ("checkpoint.pth", "3epoch.pth", "valid.eer.best.pth"):
        _assert_same(whole / name, killed / name)
    # The averaged model (ESPnet's n-best averaging) loads and matches too.
    _assert_same(whole / "valid.eer.ave.pth", killed / "valid.eer.ave.pth")
    assert os.readlink(killed / "latest.pth") == "3epoch.pth"
    a = torch.load(whole / "checkpoint.pth", weights_only=False)["reporter"]["stats"]
    b = torch.load(killed / "checkpoint.pth", weights_only=False)["reporter"]["stats"]
    for epoch in (1, 2, 3):
        assert a[epoch]["valid"]["eer"] == b[epoch]["valid"]["eer"]
    assert not list(killed.glob(atomic.TEMP_PREFIX + "*"))
    assert sorted(p.name for p in killed.glob("*epoch.pth")) == sorted(
        p.name for p in whole.glob("*epoch.pth")
    )


def test_a_run_stopped_early_stays_stopped_on_resume(tmp_path):
    from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask
    from espnet_plugin_intertopk.train.trainer import (
        MarginSchedulingSpkTrainer,
        _stop_if_stopped,
    )

    _checkpoint(tmp_path, [10.0, 20.0, 30.0])  # best at 1: 2 epochs without gain
    reporter = repair_run_dir(tmp_path, [("valid", "eer", "min")], 10)
    args = IntertopkSpeakerTask.get_parser().parse_args(
        ["--config", str(TINY_CONFIG), "--max_epoch", "9", "--patience", "1"]
        + ["--early_stopping_criterion", "valid", "eer", "min"]
    )
    options = MarginSchedulingSpkTrainer.build_options(args)
    assert _stop_if_stopped(options, reporter).max_epoch == 3
    options.patience = 2  # not yet stopped: trains on
    assert _stop_if_stopped(options, reporter).max_epoch == 9
