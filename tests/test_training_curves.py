"""recipe.training_curves: ESPnet train.log lines parsed back to the numbers written
into them, the chance-level summary, and the command's outputs and refusals."""

import json
import math

import pytest

from espnet_plugin_intertopk.recipe import training_curves

ITERS = 4
EERS = [49.5, 45.0, 38.25, 30.0, 31.0, 20.5, 22.0, 21.0]


def write_log(path, eers=EERS, resumed_epoch=None):
    """A train.log as ESPnet writes it, with a comma it drops between two statistics
    and, optionally, an epoch logged twice (a resumed run)."""
    lines = ["[vm] 2026 (trainer:1) INFO: nothing to parse here"]
    for epoch, eer in enumerate(eers, start=1):
        for first in (1, 3):
            step = (epoch - 1) * ITERS + first + 1
            lines.append(
                f"[vm] 2026 (trainer:811) INFO: {epoch}epoch:train:{first}-{first + 1}"
                f"batch: iter_time=0.010, diag_target_cos={step / 100:.3f}, "
                f"diag_hardneg_above=0.986diag_mp_eff={step * 1e-3:.3e}, "
                f"loss={10 - step / 10:.3f}, margin=0.000e+00"
            )
        lines.append(
            f"[vm] 2026 (trainer:351) INFO: {epoch}epoch results: [train] "
            f"loss={10 - epoch:.3f}, diag_target_cos={epoch / 10:.3f}, time=1.2 s, "
            f"total_count={epoch * ITERS}, [valid] eer={eer:.3f}, mindcf=0.999, "
            f"n_trials=5.104e+04, time=1.75 seconds, total_count={epoch}"
        )
        if epoch == resumed_epoch:
            lines.append(lines[-1].replace(f"eer={eer:.3f}", "eer=99.000"))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_value_written_is_read_back(tmp_path):
    steps, epochs = training_curves.parse_log(write_log(tmp_path / "train.log"))
    assert [r["epoch"] for r in epochs] == list(range(1, len(EERS) + 1))
    assert [r["valid_eer"] for r in epochs] == EERS
    assert [r["steps"] for r in epochs] == [ITERS * e for e in range(1, 9)]
    assert len(steps) == 2 * len(EERS)
    for row in steps:
        step = row["step"]
        assert row["step"] == (row["epoch"] - 1) * ITERS + row["batch"]
        assert row["diag_target_cos"] == pytest.approx(step / 100)
        assert row["diag_hardneg_above"] == pytest.approx(0.986)  # comma dropped
        assert row["diag_mp_eff"] == pytest.approx(step * 1e-3)
        assert row["loss"] == pytest.approx(10 - step / 10)


def test_a_resumed_epoch_counts_once_with_its_last_record(tmp_path):
    _, epochs = training_curves.parse_log(
        write_log(tmp_path / "train.log", resumed_epoch=3)
    )
    assert len(epochs) == len(EERS)
    assert epochs[2]["valid_eer"] == 99.0


def test_summary_chance_level_and_best(tmp_path):
    _, epochs = training_curves.parse_log(write_log(tmp_path / "train.log"))
    s = training_curves.summarise(epochs)
    assert s["first_epoch_below_40"] == 3  # 38.25 is the first below 40
    assert s["quarter_epoch"] == 2 and s["valid_eer_at_quarter"] == 45.0
    assert (s["best_valid_eer"], s["best_epoch"]) == (20.5, 6)
    stalled = training_curves.summarise(epochs[:2])
    assert stalled["first_epoch_below_40"] is None


def test_command_writes_table_json_and_plot(tmp_path):
    a = write_log(tmp_path / "a.log")
    b = write_log(tmp_path / "b.log", eers=[50.0] * 8)
    c = tmp_path / "c.log"  # no validation statistics at all: NaN in the summary
    c.write_text(b.read_text().replace(", [valid] eer=50.000", ""))
    out, js, png = tmp_path / "t.md", tmp_path / "t.json", tmp_path / "t.png"
    training_curves.main(
        [
            "--run",
            f"m/0={a}",
            "--run",
            f"m/1={b}",
            "--run",
            f"n/0={c}",
            "--out",
            str(out),
            "--json",
            str(js),
            "--plot",
            str(png),
        ]  # fmt: skip
    )
    rows = [line for line in out.read_text().splitlines() if line.startswith("| m/")]
    assert rows[0].split("|")[3].strip() == "3 / 8"
    assert rows[1].split("|")[3].strip() == "never / 8"
    data = json.loads(js.read_text())  # standard JSON: no NaN
    assert "NaN" not in js.read_text()
    assert data["n/0"]["summary"]["best_valid_eer"] is None
    assert data["m/1"]["summary"]["best_valid_eer"] == 50.0
    assert not math.isnan(data["m/0"]["steps"][0]["loss"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--run", "nolabel"], "NAME=RUN_DIR"),
        (["--run", "a=LOG", "--run", "a=LOG"], "each NAME once"),
        (["--run", "a=LOG", "--out", "LOG"], "overlaps the input"),
        (["--run", "a=MISSING"], "cannot read"),
        (["--run", "a=EMPTY"], "no 'epoch results' line"),
        # A run directory is an input whole: its config or checkpoints are not outputs.
        (["--run", "a=RUNDIR", "--json", "RUNDIR/config.yaml"], "overlaps the input"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    log = write_log(tmp_path / "train.log")
    (tmp_path / "empty.log").write_text("")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_log(run_dir / "train.log")
    (run_dir / "config.yaml").write_text("kept")
    paths = {"LOG": str(log), "MISSING": str(tmp_path / "missing.log"),
             "EMPTY": str(tmp_path / "empty.log"), "RUNDIR": str(run_dir)}  # fmt: skip
    for key, value in paths.items():
        argv = [a.replace(key, value) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        training_curves.main(argv)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert (run_dir / "config.yaml").read_text() == "kept"


def test_diagnostic_columns_only_where_a_run_logged_them(tmp_path):
    with_diag = training_curves.parse_log(write_log(tmp_path / "a.log"))
    plain_log = tmp_path / "b.log"
    text = write_log(tmp_path / "b0.log").read_text()
    plain_log.write_text(text.replace("diag_target_cos", "other_stat"))
    plain = training_curves.parse_log(plain_log)
    table = training_curves.markdown({"diag": with_diag, "plain": plain})
    head, rule, *rows = table.splitlines()
    columns = [c.strip() for c in head.strip("|").split("|")]
    assert columns[-1] == "target cos, 1st 1/4"  # the only one in epoch results
    assert len(rule.strip("|").split("|")) == len(columns)
    cells = {r.split("|")[1].strip(): r.strip("|").split("|") for r in rows}
    assert float(cells["diag"][-1]) == pytest.approx((0.1 + 0.2) / 2)  # epochs 1-2
    assert cells["plain"][-1].strip() == "-"
    only_plain = training_curves.markdown({"plain": plain})
    assert "1st 1/4" not in only_plain and "nan" not in only_plain
