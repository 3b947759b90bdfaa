"""Attacks generated, not listed: random directory trees of a user's files with
``.done`` files, copied markers, ``cp -a`` copies of a tool's directories, links and
empty directories; each tool's outputs pointed at every part of them (through ``..``
too); SIGKILL-like stops injected at a random file-system call while a tool replaces
its output, each followed by a rerun. Asserted every time: no byte of the user's
changed, no path of the user's went missing, every exit is 0 or one line, a kill never
leaves a state the rerun refuses, and a run that exits 0 leaves a complete output.

The tools run in-process (kaldi_data, synthetic_corpus with a 12-utterance corpus,
run.sh's check before any stage), so the generator stays within a few seconds.
"""

import contextlib
import io
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnet_plugin_intertopk.recipe import kaldi_data, preflight, synthetic_corpus
from espnet_plugin_intertopk.safe_io import ownership

KINDS = ("file", "dir", "done_dir", "forged_marker", "copy_of_tools", "link_to_dir",
         "link_to_file", "tools_dir", "empty_dir")  # fmt: skip
CORPUS = ["--n_train_speakers", "2", "--n_valid_speakers", "2", "--n_test_speakers",
          "2", "--utts_per_speaker", "2", "--valid_utts_per_speaker", "2",
          "--test_utts_per_speaker", "2"]  # fmt: skip
# The os functions through which every tool changes the file system.
CALLS = ("mkdir", "rename", "replace", "unlink", "rmdir", "fsync", "symlink")


class Killed(BaseException):
    """A stop at a file-system call, as SIGKILL would leave it (no handler runs)."""


@contextlib.contextmanager
def kill_at(n):
    """Raise Killed at the n-th file-system call (None: never); yields a list that
    holds True once the kill happened."""
    real = {name: getattr(os, name) for name in CALLS}
    count, fired = [0], []

    def wrap(name):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] == n:
                fired.append(True)
                raise Killed(name)
            return real[name](*args, **kwargs)

        return call

    for name in CALLS:
        setattr(os, name, wrap(name))
    try:
        yield fired
    finally:
        for name, function in real.items():
            setattr(os, name, function)


def _user_lists(train: Path) -> None:
    train.mkdir(parents=True)
    utts = [(f"s{i}", f"s{i}-u{j}") for i in range(4) for j in range(2)]
    (train / "wav.scp").write_text("".join(f"{u} /audio/{u}.wav\n" for _, u in utts))
    (train / "utt2spk").write_text("".join(f"{u} {s}\n" for s, u in utts))
    (train / "spk2utt").write_text("".join(f"s{i} s{i}-u0 s{i}-u1\n" for i in range(4)))


def build_tree(world: Path, proto: Path, entries) -> list:
    """The user's tree under ``world`` (``entries``: (kind, nest) pairs); returns
    the candidate output paths: every path made, one inside each, one through
    ``..``."""
    src = world / "lists" / "train"
    _user_lists(src)
    dirs, paths = [world, world / "lists"], [src, src / "wav.scp"]
    for i, (kind, nest) in enumerate(entries):
        parent = dirs[nest % len(dirs)]
        p = parent / f"e{i}"
        if kind == "file":
            p.write_bytes(b"user data %d\n" % i)
        elif kind == "link_to_dir":
            p.symlink_to(dirs[(nest + 1) % len(dirs)] if nest % 2 else proto)
        elif kind == "link_to_file":
            p.symlink_to(src / "wav.scp")
        elif kind == "copy_of_tools":
            shutil.copytree(proto, p, symlinks=True)  # cp -a: same bytes, new inode
            (p / "notes").write_text("mine\n")
        elif kind == "tools_dir":
            tool = ("kaldi_data", "synthetic_corpus")[nest % 2]
            ownership.claim_dir(p, tool, "x")
            (p / "wav.scp").write_text("u /a.wav\n")
        else:
            p.mkdir()
            if kind == "done_dir":
                (p / ".done").write_text("{}\n")
                (p / "wav.scp").write_text("u1 /mine/u1.wav\n")
            elif kind == "forged_marker":
                shutil.copy2(proto / ownership.MARKER, p / ownership.MARKER)
                (p / "notes").write_text("mine\n")
            elif kind == "dir":
                (p / "notes").write_text("mine\n")
            if kind != "empty_dir":
                dirs.append(p)
        paths += [p, p / "new", p / ".." / p.name]
    return paths + [world, src / ".." / "train", src / "new"]


def snapshot(world: Path, tools: set) -> dict:
    """Every path of the user's under ``world`` -> its bytes, link target or 'dir'
    (the tool's own directories left out)."""
    out = {}
    for root, dirnames, filenames in os.walk(world):
        root = Path(root)
        dirnames[:] = [d for d in dirnames if root / d not in tools]
        for name in dirnames + filenames:
            p = root / name
            if p.is_symlink():
                out[p] = ("link", os.readlink(p))
            elif p.is_dir():
                out[p] = ("dir", None)
            else:
                out[p] = ("file", p.read_bytes())
    return out


def changed(before: dict) -> int:
    """How many of the user's paths differ from ``before``."""
    n = 0
    for p, (kind, value) in before.items():
        if kind == "link":
            n += not (p.is_symlink() and os.readlink(p) == value)
        elif kind == "dir":
            n += not p.is_dir() or p.is_symlink()
        else:
            n += p.is_symlink() or not p.is_file() or p.read_bytes() != value
    return n


def invoke(command: str, out: Path, out2: Path, src: Path, kill):
    """(exit status, stderr, whether the kill happened) of one tool run."""
    main, prog, argv = {
        "corpus": (synthetic_corpus.main, "synthetic_corpus", [str(out), *CORPUS]),
        "corpus_force": (synthetic_corpus.main, "synthetic_corpus",
                         [str(out), *CORPUS, "--force"]),
        "copy": (kaldi_data.main, "kaldi_data", ["copy", "train", str(src), str(out)]),
        "cohort": (kaldi_data.main, "kaldi_data", ["cohort", str(src), str(out)]),
        "subset": (kaldi_data.main, "kaldi_data",
                   ["subset", str(src), str(out), "--n_speakers", "2"]),
        "holdout": (kaldi_data.main, "kaldi_data",
                    ["holdout", str(src), str(out), str(out2), "--n_speakers", "2"]),
        "preflight": (preflight.main, "run.sh",
                      ["--output", f"data={out}", "--output", f"dump={out2}",
                       "--input", f"train_dir={src}"]),
    }[command]  # fmt: skip
    err = io.StringIO()
    status = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        with kill_at(kill) as fired:
            try:
                main(argv)
            except SystemExit as stop:
                status = stop.code
            except Killed:
                status = None
    err = err.getvalue()
    # A progress bar (the corpus's) is not an error line.
    lines = [line for line in err.splitlines() if "synthesising" not in line]
    if status is not None and status != 0:
        assert status in (1, 2) and len(lines) == 1, err
        assert lines[0].startswith(f"{prog}: error: "), err
    return status, bool(fired)


def complete(command: str, out: Path, out2: Path, src: Path) -> None:
    """Assert that the output of a run that exited 0 is whole."""
    if command.startswith("corpus"):
        assert (out / ".done").is_file()
        for split, kind in (("train", "train"), ("valid", "test"), ("test", "test")):
            kaldi_data.check_data_dir(out / split, kind)
    elif command == "copy":
        for f in src.iterdir():
            if f.is_file():
                assert (out / f.name).read_bytes() == f.read_bytes()
    elif command != "preflight":
        for d in (out, out2) if command == "holdout" else (out,):
            assert ownership.made_by(d) == "kaldi_data"
            listed = "trial_label" if command == "cohort" else "wav.scp"
            assert kaldi_data.read_entries(d / listed)


def test_no_user_byte_changes_under_generated_attacks():
    figures = Counter()
    base = Path(tempfile.mkdtemp(prefix="attacks-"))

    @settings(
        max_examples=30,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def attack(data):
        figures["trees"] += 1
        root = Path(tempfile.mkdtemp(dir=base))
        proto = ownership.claim_dir(root / "proto", "synthetic_corpus", "x")
        entries = data.draw(
            st.lists(
                st.tuples(st.sampled_from(KINDS), st.integers(0, 5)),
                min_size=1,
                max_size=5,
            )
        )
        world = root / "world"
        targets = build_tree(world, proto, entries)
        src = world / "lists" / "train"
        tools = set()  # the tools' own directories: not the user's
        for _ in range(data.draw(st.integers(1, 3))):
            tools |= {p for p in world.rglob("*") if ownership.made_by(p)}
            commands = ("corpus", "copy", "cohort", "subset", "holdout", "preflight")
            command = data.draw(st.sampled_from(commands))
            if command == "corpus" and data.draw(st.booleans()):
                command = "corpus_force"
            # Half the outputs new paths (accepted: the kills' ground), half
            # anything of the tree.
            fresh = [world / f"new{i}" for i in range(3)]
            out, out2 = (
                data.draw(st.sampled_from(fresh) | st.sampled_from(targets))
                for _ in range(2)
            )
            # Killed at one of the file-system calls a run makes (a corpus makes
            # about 74, kaldi_data 16 to 47; the replacement is in the first few),
            # or not at all.
            calls = 74 if command.startswith("corpus") else 20
            kill = data.draw(st.none() | st.integers(1, calls) | st.integers(1, 8))
            before = snapshot(world, tools)
            status, killed = invoke(command, out, out2, src, kill)
            figures["runs"] += 1
            lost = changed(before)
            if killed:
                figures["kills"] += 1
                # The rerun finds the old output or makes the new one: never a
                # state it refuses (the killed run had accepted the output).
                status, _ = invoke(command, out, out2, src, None)
                figures["runs"] += 1
                assert status == 0, (command, out, out2, kill)
            figures["refusals"] += status != 0
            lost += changed(before)
            figures["user_paths_changed"] += lost
            assert lost == 0, (command, out, out2, kill)
            if status == 0:
                complete(command, out, out2, src)

    try:
        attack()
    finally:
        shutil.rmtree(base)
    print(f"attack generator: {dict(figures)}")
    assert figures["trees"] >= 30 and figures["kills"] >= 10
    assert figures["refusals"] >= 5 and figures["user_paths_changed"] == 0
