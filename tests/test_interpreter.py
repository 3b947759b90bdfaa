"""``espnet-intertopk-python``: the forms ESPnet's scripts use behave as with Python
itself (output, exit status, signals), with the plugin imported first. Its use by
ESPnet's own command lines is in test_spk_sh.py."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from espnet_plugin_intertopk.bin import interpreter

WRAPPER = str(Path(sys.executable).with_name("espnet-intertopk-python"))
SHOW = (
    "import sys, os\n"
    "print(__name__, sys.argv[1:], os.path.realpath(sys.path[0] or '.'),\n"
    "      sys.flags.optimize, sys.warnoptions)\n"
)
PLUGIN_LOADED = "import sys; print('espnet_plugin_intertopk' in sys.modules)"


def both(args, cwd, stdin=None):
    """(Python's result, the wrapper's result) for the same command line."""
    out = []
    for program in (sys.executable, WRAPPER):
        proc = subprocess.run(
            [program, *args], cwd=cwd, input=stdin, capture_output=True, text=True
        )
        out.append((proc.returncode, proc.stdout))
    return out


def test_minus_c_with_arguments_and_interpreter_options(tmp_path):
    python, wrapper = both(["-c", SHOW, "a", "-b"], tmp_path)
    assert python == wrapper and python[0] == 0
    assert "__main__ ['a', '-b']" in python[1]
    python, wrapper = both(["-OO", "-W", "ignore", "-c", SHOW, "x"], tmp_path)
    assert python == wrapper and python[1].rstrip().endswith("2 ['ignore']")


def test_script_and_stdin(tmp_path):
    script = tmp_path / "sub" / "show.py"
    script.parent.mkdir()
    script.write_text(SHOW)
    python, wrapper = both([str(script), "1", "2"], tmp_path)
    assert python == wrapper and str(script.parent) in python[1]
    python, wrapper = both(["-", "q"], tmp_path, stdin=SHOW)
    assert python == wrapper and "['q']" in python[1]


def test_minus_m_runs_a_module_from_the_current_directory(tmp_path):
    (tmp_path / "showmod.py").write_text(SHOW)
    python, wrapper = both(["-m", "showmod", "--flag", "v"], tmp_path)
    assert python == wrapper and "__main__ ['--flag', 'v']" in python[1]
    python, wrapper = both(["-Wignore", "-mshowmod"], tmp_path)  # attached values
    assert python == wrapper and "['ignore']" in python[1]


@pytest.mark.parametrize(
    "code",
    [
        "import sys; sys.exit(7)",
        "raise ValueError('boom')",
        "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
        "raise KeyboardInterrupt",
    ],
)
def test_exit_status_and_signals_pass_through(tmp_path, code):
    (python_status, _), (wrapper_status, _) = both(["-c", code], tmp_path)
    assert wrapper_status == python_status
    if "SIGTERM" in code:
        assert wrapper_status == -signal.SIGTERM


def test_the_plugin_is_imported_first(tmp_path):
    assert both(["-c", PLUGIN_LOADED], tmp_path) == [(0, "False\n"), (0, "True\n")]


def test_without_a_program_it_prints_its_usage(tmp_path):
    proc = subprocess.run([WRAPPER], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "usage: espnet-intertopk-python" in proc.stderr
    python, wrapper = both(["-m"], tmp_path)
    assert python[0] == wrapper[0] == 2


@pytest.mark.parametrize(
    "args, status",
    [
        (["missing.py", "a"], 2),
        (["sub/missing.py"], 2),
        (["-m", "no_such_module"], 1),
        (["-m", "no_such_package.mod"], 1),
        (["-m", "json.no_such"], 1),
        (["-m", "email"], 1),  # a package without __main__
    ],
)
def test_what_cannot_run_gets_pythons_one_line_and_status(tmp_path, args, status):
    results = []
    for program in (sys.executable, WRAPPER):
        proc = subprocess.run(
            [program, *args], cwd=tmp_path, capture_output=True, text=True
        )
        program_name, message = proc.stderr.split(": ", 1)
        results.append((proc.returncode, message))
    assert results[0] == results[1]  # Python's own line, after the program's name
    assert results[1][0] == status and results[1][1].count("\n") == 1
    assert program_name == "espnet-intertopk-python"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-m", "mod", "-x"], ([], "-m", "mod", ["-x"])),
        (["-uB", "-mmod"], (["-u", "-B"], "-m", "mod", [])),
        (["-W", "error", "-X", "dev", "s.py", "-m"], (["-W", "error", "-X", "dev"],
                                                      "script", "s.py", ["-m"])),
        (["-Wignore", "-cpass", "a"], (["-W", "ignore"], "-c", "pass", ["a"])),
        (["-", "a"], ([], "-", "-", ["a"])),
        (["-u"], (["-u"], None, None, [])),
    ],
)  # fmt: skip
def test_command_line_parsing(argv, expected):
    assert interpreter.parse(argv) == expected


def test_spk_train_module_is_the_plugins(monkeypatch):
    ran = []
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(
        interpreter.runpy, "run_module", lambda name, **kw: ran.append((name, kw))
    )
    interpreter.run(["-m", "espnet2.bin.spk_train", "--print_config"])
    interpreter.run(["-m", "espnet2.bin.spk_embed_extract"])
    assert [name for name, _ in ran] == [
        "espnet_plugin_intertopk.bin.spk_train",
        "espnet2.bin.spk_embed_extract",
    ]
    assert ran[0][1] == {"run_name": "__main__", "alter_sys": True}
