"""safe_io's ownership: a marker proves a directory the tool's only when it is bound to
that directory (a copy, a copied marker or a link proves nothing); a replaced output is
renamed aside, never removed, with a bounded number of copies; a removal killed
half-way is finished later; outputs are compared with inputs through ``..`` and links;
and errors of the system are one line."""

import errno
import os
import shutil
import subprocess
import sys

import pytest

from espnet_plugin_intertopk.safe_io import ownership
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly
from espnet_plugin_intertopk.safe_io.ownership import (
    KEEP_ASIDE,
    MARKER,
    check_apart,
    claim_dir,
    made_by,
    remove_owned,
    replace_dir,
)


def _tree(root):
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def test_a_copy_a_copied_marker_or_a_link_proves_nothing(tmp_path):
    ours = claim_dir(tmp_path / "ours", "tool", "out")
    (ours / "list").write_text("made by the tool\n")
    assert made_by(ours) == "tool"
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(ours), str(copy)], check=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes").write_text("mine\n")
    shutil.copy(ours / MARKER, mine / MARKER)
    link = tmp_path / "link"
    link.symlink_to(ours)
    marker_link = tmp_path / "marker_link"
    marker_link.mkdir()
    (marker_link / MARKER).symlink_to(ours / MARKER)
    (marker_link / "notes").write_text("mine\n")
    for d in (copy, mine, link, marker_link):
        assert made_by(d) is None
        before = _tree(tmp_path)
        for act in (replace_dir, claim_dir):
            with pytest.raises(UserError, match="left untouched"):
                act(d, "tool", "out")
        with pytest.raises(UserError, match="left untouched"):
            remove_owned(d, "tool")
        assert _tree(tmp_path) == before
    # A rename keeps the proof: it is still the same directory.
    os.rename(ours, tmp_path / "moved")
    assert made_by(tmp_path / "moved") == "tool"
    # Another tool's directory is not this tool's.
    with pytest.raises(UserError, match="made by tool, not other"):
        replace_dir(tmp_path / "moved", "other", "out")


def test_replacing_keeps_the_old_outputs_aside_within_a_bound(tmp_path, capsys):
    out = tmp_path / "out"
    # A user's directory that merely looks like a copy kept aside: never removed.
    lookalike = tmp_path / ".out.old-1"
    lookalike.mkdir()
    (lookalike / "notes").write_text("mine\n")
    for run in range(1, 6):
        replace_dir(out, "tool", "out")
        (out / "result").write_text(f"run {run}\n")
    asides = sorted(p.name for p in tmp_path.iterdir() if p.name != "out")
    # Runs 3 and 4 are kept (the newest KEEP_ASIDE copies); runs 1 and 2 went.
    assert KEEP_ASIDE == 2
    assert asides == [".out.old-1", ".out.old-4", ".out.old-5"]
    assert (tmp_path / ".out.old-5" / "result").read_text() == "run 4\n"
    assert (tmp_path / ".out.old-4" / "result").read_text() == "run 3\n"
    assert (lookalike / "notes").read_text() == "mine\n"
    log = capsys.readouterr().out
    assert f"kept the earlier {out} as {tmp_path / '.out.old-5'}" in log
    assert f"removed {tmp_path / '.out.old-2'}, an older copy it made" in log
    assert (out / "result").read_text() == "run 5\n"


def test_a_removal_killed_half_way_is_still_provably_ours(tmp_path):
    out = claim_dir(tmp_path / "out", "tool", "out")
    for name in ("a", "b", "sub/c"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text(name)
    # What a kill leaves at any moment of the removal: the marker goes last.
    for entry in sorted(out.iterdir()):
        if entry.name != MARKER:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            assert made_by(out) == "tool"
    remove_owned(out, "tool")
    assert not out.exists()
    # A kill between the rename aside and the new directory: the next run makes it.
    claim_dir(out, "tool", "out")
    os.rename(out, tmp_path / ".out.old-1")
    assert made_by(replace_dir(out, "tool", "out")) == "tool"


@pytest.mark.parametrize(
    "output, inputs",
    [
        ("data/../data/test/trial_label", ["data/test"]),
        ("data", ["data/test/trial_label"]),
        ("alias/trial_label", ["data/test"]),  # alias -> data/test
        ("data/test/x/..", ["data/test"]),
    ],
)
def test_outputs_are_compared_with_inputs_through_dots_and_links(
    tmp_path, monkeypatch, output, inputs
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "test").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "data" / "test")
    with pytest.raises(UserError, match="overlaps the input"):
        check_apart(output, inputs, "--out")
    check_apart("elsewhere/out", inputs, "--out")  # apart: no error


@pytest.mark.parametrize(
    "error, line",
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "out/x"),
            "out/x: Permission",
        ),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "list"), "list: Is a dir"),
        (OSError(errno.ENOSPC, "No space left on device", "r.md"), "r.md: No space"),
        (FileNotFoundError(errno.ENOENT, "No such file", "a", None, "b"), "a -> b: No"),
        (None, "a file is not UTF-8 text"),  # a decoding error
    ],
)
def test_errors_of_the_system_are_one_line(capsys, error, line):
    @exits_cleanly("tool")
    def main():
        raise error or b"\xff".decode("utf-8")

    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("tool: error: ") and err.count("\n") == 1
    assert line in err


def test_the_command_line_claims_and_removes_only_its_own(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "espnet_plugin_intertopk.safe_io.ownership", *args],
            capture_output=True,
            text=True,
        )

    scratch = tmp_path / "scratch"
    assert cli("claim", str(scratch), "run.sh").returncode == 0
    assert made_by(scratch) == "run.sh"
    assert cli("remove", str(scratch), "run.sh").returncode == 0
    assert not scratch.exists()
    scratch.mkdir()
    (scratch / "mine").write_text("x")
    proc = cli("remove", str(scratch), "run.sh")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert (scratch / "mine").read_text() == "x"
    assert ownership.made_by(scratch) is None


def test_a_marker_of_an_earlier_version_is_adopted_only_on_request(tmp_path, capsys):
    # Earlier markers named the tool only (a copy carried them along): refused, with
    # the command that binds it; the command binds only such a marker.
    old = tmp_path / "data"
    old.mkdir()
    (old / MARKER).write_text("kaldi_data\n")
    (old / "wav.scp").write_text("u /a.wav\n")
    with pytest.raises(UserError, match="not made by kaldi_data as far.*adopt"):
        replace_dir(old, "kaldi_data", "--data")
    with pytest.raises(UserError, match="nothing to adopt"):
        ownership.adopt(old, "synthetic_corpus")
    assert (old / "wav.scp").read_text() == "u /a.wav\n"
    ownership.main(["adopt", str(old), "kaldi_data"])
    assert made_by(old) == "kaldi_data"
    replace_dir(old, "kaldi_data", "--data")  # now replaced: the old one aside
    assert (tmp_path / ".data.old-1" / "wav.scp").read_text() == "u /a.wav\n"


def test_a_marker_bound_to_other_numbers_is_adopted_only_on_request(tmp_path):
    # A remount can change the device number: the marker then proves nothing until
    # the user binds it again; a marker naming another tool is never adopted.
    out = tmp_path / "out"
    ownership.claim_dir(out, "kaldi_data", "--data")
    (out / "wav.scp").write_text("kept\n")
    tool, identity = (out / MARKER).read_text().split()
    (out / MARKER).write_text(f"{tool} 999{identity}\n")
    assert made_by(out) is None
    with pytest.raises(UserError, match="another file system.*adopt"):
        replace_dir(out, "kaldi_data", "--data")
    with pytest.raises(UserError, match="nothing to adopt"):
        ownership.adopt(out, "synthetic_corpus")
    ownership.adopt(out, "kaldi_data")
    assert made_by(out) == "kaldi_data"
    assert (out / "wav.scp").read_text() == "kept\n"
