"""The plugin trainer's hook, driven directly through ESPnet's real training loop
(``MarginSchedulingSpkTrainer.train_one_epoch``, ESPnet's Reporter, a real
ESPnetSpeakerModel built by the task from the tiny config)."""

import logging

import pytest
import torch
from espnet2.train.distributed_utils import DistributedOption
from espnet2.train.reporter import Reporter

from espnet_plugin_intertopk.bin import spk_embed_extract, spk_train
from espnet_plugin_intertopk.safe_io.errors import UserError
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask
from espnet_plugin_intertopk.train.trainer import MarginSchedulingSpkTrainer

from conftest import TINY_CONFIG

N_SPK = 4


def build(tmp_path, *extra):
    spk2utt = tmp_path / "spk2utt"
    spk2utt.write_text("".join(f"s{i} u{i}\n" for i in range(N_SPK)))
    args = IntertopkSpeakerTask.get_parser().parse_args(
        [
            "--config",
            str(TINY_CONFIG),
            "--spk_num",
            str(N_SPK),
            "--spk2utt",
            str(spk2utt),
            "--output_dir",
            str(tmp_path),
            *extra,
        ]
    )
    torch.manual_seed(0)
    model = IntertopkSpeakerTask.build_model(args)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    options = MarginSchedulingSpkTrainer.build_options(args)
    return model, optim, options


def batches(n, nan_at=None):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        speech = torch.randn(4, 8000, generator=g)
        if i == nan_at:
            speech[1] = float("nan")
        out.append(
            (
                [f"u{j}" for j in range(4)],
                {"speech": speech, "spk_labels": torch.arange(4).unsqueeze(1)},
            )
        )
    return out


def one_epoch(model, optim, options, data, epoch=1):
    reporter = Reporter()
    reporter.set_epoch(epoch)
    with reporter.observe("train") as sub:
        MarginSchedulingSpkTrainer.train_one_epoch(
            model=model,
            iterator=data,
            optimizers=[optim],
            schedulers=[None],
            scaler=None,
            reporter=sub,
            summary_writer=None,
            options=options,
            distributed_option=DistributedOption(),
        )
    return reporter


def test_margin_is_set_before_every_step_and_reported(tmp_path):
    model, optim, options = build(
        tmp_path,
        "--margin_scheduler",
        "linear",
        "--margin_scheduler_conf",
        "increase_start_epoch=1",
        "--margin_scheduler_conf",
        "fix_start_epoch=2",
    )
    seen = []
    original = model.loss.update
    model.loss.update = lambda m: (seen.append(m), original(m))
    reporter = one_epoch(model, optim, options, batches(4))
    assert seen == pytest.approx([0.0, 0.05, 0.1, 0.15])  # 0.2 * i / 4
    assert model.loss.margin == pytest.approx(0.15)
    assert reporter.get_value("train", "margin") == pytest.approx(0.075)


def test_without_scheduler_the_margin_stays(tmp_path):
    model, optim, options = build(tmp_path, "--loss_conf", "margin=0.3")
    assert options.margin_scheduler is None
    one_epoch(model, optim, options, batches(2))
    assert model.loss.margin == 0.3


def test_non_finite_embeddings_do_not_touch_the_weights(tmp_path, caplog):
    """With the value checks off (as on an accelerator after the first step), a NaN
    batch gives a non-finite gradient norm and ESPnet's trainer skips the update."""
    model, optim, options = build(tmp_path, "--loss_conf", "check_values=false")
    one_epoch(model, optim, options, batches(1))  # a normal step first
    before = {
        k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()
    }
    with caplog.at_level(logging.WARNING):
        one_epoch(model, optim, options, batches(1, nan_at=0), epoch=2)
    assert "Skipping updating the model" in caplog.text
    after = model.state_dict()
    assert all(
        torch.equal(before[k], after[k])
        for k in ("loss.weight",)
        + tuple(k for k in before if k.startswith("projector"))
    )
    assert all(torch.isfinite(v).all() for v in before.values())


def test_value_checks_raise_on_cpu_by_default(tmp_path):
    model, optim, options = build(tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        one_epoch(model, optim, options, batches(1, nan_at=0))


def test_scheduler_with_a_loss_without_update_fails_at_startup(tmp_path):
    with pytest.raises(UserError, match="update"):
        build(tmp_path, "--loss", "aamsoftmax", "--margin_scheduler", "exp")


def test_schedule_beyond_the_hard_negative_bound_fails_at_startup(tmp_path):
    # mp 0.7 at margin 0.5 gives 1.75 rad > pi/2: refused before any step, not when
    # the ramp gets there.
    with pytest.raises(UserError, match="reaches margin 0.5.*mp=0.7"):
        build(tmp_path, "--loss_conf", "mp=0.7", "--margin_scheduler", "exp",
              "--margin_scheduler_conf", "final_margin=0.5")  # fmt: skip


@pytest.mark.parametrize(
    "option, message",
    [
        (["--loss_conf", "K=three"], "--loss aamsoftmax_sc_topk: K must be int"),
        (
            ["--margin_scheduler", "linear", "--margin_scheduler_conf",
             "update_per=step"],
            "--margin_scheduler linear: margin_scheduler_conf: update_per",
        ),
    ],
)  # fmt: skip
def test_a_bad_option_is_one_line_and_exit_2(tmp_path, capsys, option, message):
    with pytest.raises(SystemExit) as exit_info:
        spk_train.main(
            ["--config", str(TINY_CONFIG), "--spk_num", str(N_SPK), "--output_dir",
             str(tmp_path / "exp"), "--dry_run", "true", *option]
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("spk_train: error: " + message), err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize(
    "fault, message",
    [
        ("blank", "spk2utt:3: blank line: remove it"),
        ("crlf", "spk2utt:1: has a carriage return"),
        ("no_newline", "spk2utt:4: the last line has no final newline"),
        ("spk_num", "--spk_num 5: "),
        ("output_in_data", "--output_dir "),
        ("missing", "utt2spk: cannot read it: No such file or directory"),
    ],
)
def test_bad_data_given_directly_is_one_line(tmp_path, capsys, fault, message):
    # What the recipe's stage 1 refuses, refused when spk_train is run by hand too:
    # before ESPnet reads anything (the lists are never built into a model).
    data = tmp_path / "data"
    data.mkdir()
    lines = [f"s{i} u{i}" for i in range(N_SPK)]
    spk2utt = "".join(f"{line}\n" for line in lines)
    (data / "utt2spk").write_text("".join(f"u{i} s{i}\n" for i in range(N_SPK)))
    spk_num, output_dir = N_SPK, tmp_path / "exp"
    if fault == "blank":
        spk2utt = spk2utt.replace("s2 u2\n", "\ns2 u2\n")
    elif fault == "crlf":
        spk2utt = spk2utt.replace("\n", "\r\n")
    elif fault == "no_newline":
        spk2utt = spk2utt.rstrip("\n")
    elif fault == "spk_num":
        spk_num = N_SPK + 1
    elif fault == "output_in_data":
        output_dir = data
    else:
        (data / "utt2spk").unlink()
    (data / "spk2utt").write_text(spk2utt)
    with pytest.raises(SystemExit) as exit_info:
        spk_train.main(
            ["--config", str(TINY_CONFIG), "--spk_num", str(spk_num), "--spk2utt",
             str(data / "spk2utt"), "--train_data_path_and_name_and_type",
             f"{data / 'utt2spk'},spk_labels,text", "--output_dir", str(output_dir),
             "--dry_run", "true"]
        )  # fmt: skip
    assert exit_info.value.code in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spk_train: error: "), err
    assert message in err[0]
    assert (
        sorted(p.name for p in data.iterdir())
        == ["spk2utt", "utt2spk"][: 1 if fault == "missing" else 2]
    )
    assert not (tmp_path / "exp").exists()


def test_extraction_refuses_to_remove_or_overwrite_what_is_not_its_own(
    tmp_path, capsys
):
    # ESPnet's extraction removes every embeddings*.npz of --output_dir and writes
    # <set>_embeddings.npz there: neither may be the user's.
    test = tmp_path / "test"
    test.mkdir()
    (test / "trial.scp").write_text("a*a /a.wav\n")
    keep = {"embeddings_mine.npz": b"mine", "trial.scp": b"a*a /a.wav\n"}
    (test / "embeddings_mine.npz").write_bytes(b"mine")
    trials = f"{test / 'trial.scp'},speech,sound"
    base = ["--spk_train_config", str(TINY_CONFIG), "--spk_model_file", "m.pth",
            "--data_path_and_name_and_type", trials]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        spk_embed_extract.main([*base, "--output_dir", str(test)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spk_embed_extract: error: "), err
    assert "embeddings_mine.npz is there" in err[0]
    assert {p.name: p.read_bytes() for p in test.iterdir()} == keep
    # Once nothing is in the way, the next refusal is a list that does not parse.
    (test / "embeddings_mine.npz").unlink()
    (test / "trial.scp").write_text("a*a /a.wav")
    with pytest.raises(SystemExit):
        spk_embed_extract.main([*base, "--output_dir", str(test)])
    assert "trial.scp:1: the last line has no final newline" in capsys.readouterr().err
