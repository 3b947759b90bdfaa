"""The refusal to resume a run whose settings or data lists changed (in-process, with
the task's real parser; the recipe test runs it through run.sh)."""

import pytest
import yaml
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

from espnet_plugin_intertopk.train.resume_check import ChangedRunError, check_and_record
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

from conftest import TINY_CONFIG


def parse(tmp_path, out, *extra):
    wav = tmp_path / "wav.scp"
    if not wav.exists():
        wav.write_text("u1 /a.wav\n")
    return IntertopkSpeakerTask.get_parser().parse_args(
        ["--config", str(TINY_CONFIG), "--output_dir", str(out), "--resume", "true"]
        + ["--train_data_path_and_name_and_type", f"{wav},speech,sound", *extra]
    )


def finished_run(tmp_path, *extra):
    """A run directory as ESPnet leaves it (config.yaml, checkpoint.pth) plus the
    recorded digests."""
    out = tmp_path / "exp"
    args = parse(tmp_path, out, *extra)
    check_and_record(args)
    (out / "config.yaml").write_text(yaml_no_alias_safe_dump(vars(args)))
    (out / "checkpoint.pth").write_bytes(b"")
    return out


def test_same_settings_longer_training_or_moved_directory_resume(tmp_path):
    out = finished_run(tmp_path, "--max_epoch", "2")
    check_and_record(parse(tmp_path, out, "--max_epoch", "2"))
    check_and_record(parse(tmp_path, out, "--max_epoch", "5"))
    moved = tmp_path / "moved"
    out.rename(moved)
    check_and_record(parse(tmp_path, moved, "--max_epoch", "2"))


def test_changed_settings_are_named(tmp_path):
    out = finished_run(tmp_path)
    with pytest.raises(
        ChangedRunError, match="loss_conf.*'margin': 0.2.*'margin': 0.3"
    ):
        check_and_record(parse(tmp_path, out, "--loss_conf", "margin=0.3"))
    with pytest.raises(ChangedRunError, match="seed: 0 -> 1"):
        check_and_record(parse(tmp_path, out, "--seed", "1"))


def test_changed_data_list_is_named(tmp_path):
    out = finished_run(tmp_path)
    (tmp_path / "wav.scp").write_text("u1 /b.wav\n")
    with pytest.raises(ChangedRunError, match="content of .*wav.scp"):
        check_and_record(parse(tmp_path, out))


def test_a_new_run_records_its_inputs(tmp_path):
    out = tmp_path / "new"
    check_and_record(parse(tmp_path, out))
    recorded = yaml.safe_load((out / "input_digests.yaml").read_text())
    assert list(recorded) == [str(tmp_path / "wav.scp")]
    assert len(recorded[str(tmp_path / "wav.scp")]) == 64


def test_the_conf_of_a_choice_that_is_off_may_change(tmp_path):
    out = finished_run(tmp_path, "--margin_scheduler", "none")
    changed = ["--margin_scheduler_conf", "fix_start_epoch=9"]
    check_and_record(parse(tmp_path, out, "--margin_scheduler", "none", *changed))
    with pytest.raises(ChangedRunError, match="margin_scheduler: None -> 'exp'"):
        check_and_record(parse(tmp_path, out, "--margin_scheduler", "exp", *changed))


def test_a_truncated_config_yaml_does_not_hide_a_change(tmp_path):
    # A kill while ESPnet rewrites config.yaml in place leaves it cut short; the
    # check reads its own atomically written record of the requested settings.
    out = finished_run(tmp_path, "--seed", "0")
    (out / "config.yaml").write_text("loss: aamsoftmax_sc_t")
    assert (out / "requested_config.yaml").exists()
    with pytest.raises(ChangedRunError, match="seed: 0 -> 1"):
        check_and_record(parse(tmp_path, out, "--seed", "1"))
    check_and_record(parse(tmp_path, out, "--seed", "0"))


def test_resume_false_does_not_train_over_an_existing_run(tmp_path):
    out = finished_run(tmp_path)
    before = (out / "requested_config.yaml").read_bytes()
    with pytest.raises(ChangedRunError, match="--resume is false") as err:
        check_and_record(parse(tmp_path, out, "--resume", "false", "--seed", "1"))
    assert err.value.status == 2
    # Nothing of the old run's records was rewritten.
    assert (out / "requested_config.yaml").read_bytes() == before
