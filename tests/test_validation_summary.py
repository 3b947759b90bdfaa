"""The sweep's summary reads the validation EER of every epoch from the checkpoint."""

import pytest
import torch

from espnet_plugin_intertopk.recipe.validation_summary import best_valid_eer, main


def test_best_epoch_is_the_lowest_validation_eer_first_on_ties(tmp_path, capsys):
    stats = {
        1: {"train": {"loss": 3.0}, "valid": {"eer": 30.0}},
        2: {"train": {"loss": 2.0}, "valid": {"eer": 12.5}},
        3: {"train": {"loss": 1.0}, "valid": {"eer": 12.5}},
        4: {"train": {"loss": 0.5}, "valid": {"eer": 20.0}},
    }
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"reporter": {"stats": stats}}, run / "checkpoint.pth")
    assert best_valid_eer(run) == (12.5, 2, 4)
    main([str(run)])
    assert f"| {run} | 12.50 | 2 | 4 |" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut", None])
def test_a_truncated_or_missing_checkpoint_is_one_line(tmp_path, capsys, content):
    run = tmp_path / "exp"
    run.mkdir()
    if content is not None:
        (run / "checkpoint.pth").write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        main([str(run)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("validation_summary: error: ")
    assert f"{run / 'checkpoint.pth'}" in err
