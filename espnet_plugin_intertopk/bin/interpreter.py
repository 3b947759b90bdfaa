"""``espnet-intertopk-python``: the Python interpreter with the plugin imported first.

ESPnet's recipe scripts (``egs2/TEMPLATE/spk1/spk.sh``) run everything as
``${python} -m espnet2.bin.<tool> ...`` or ``${python} <script> ...``, and their only
hook is ``--python``. Given as that interpreter, this command runs

- ``-m MODULE args``: the module as ``__main__``, with the plugin's losses registered;
  ``-m espnet2.bin.spk_train`` runs the plugin's task instead
  (:mod:`espnet_plugin_intertopk.bin.spk_train`: ESPnet's options plus the margin
  scheduler's);
- ``-c CODE args``, ``SCRIPT args`` and ``- args`` (code from stdin): as Python does.

Everything runs in this process, so exit codes and signals are the program's own.
A script that cannot be opened or a module that cannot be found gets Python's own one
line and exit status (2 and 1), not a traceback.
Interpreter options before these forms (``-u``, ``-O``, ``-W arg``, ``-X opt``, ...)
make it start the interpreter again with them (``exec``, same process id).
Processes that ESPnet starts through the same ``${python}`` (``espnet2.bin.launch``)
get the same treatment.
"""

import importlib.util
import os
import runpy
import sys
import types
from typing import List, NoReturn, Optional, Tuple

PROG = "espnet-intertopk-python"
MODULE = "espnet_plugin_intertopk.bin.interpreter"
# Modules run as a plugin module of the same interface instead.
REPLACED_MODULES = {"espnet2.bin.spk_train": "espnet_plugin_intertopk.bin.spk_train"}
USAGE = f"usage: {PROG} [interpreter options] (-m module | -c code | script | -) [args]"
# Interpreter options that take a value (as the next argument or attached).
_WITH_VALUE = "WX"
_LONG_WITH_VALUE = ("--check-hash-based-pycs",)
# Options that only print something: the interpreter itself answers them.
_INFORMATIONAL = ("-h", "-?", "--help", "-V", "--version", "--help-env",
                  "--help-xoptions", "--help-all")  # fmt: skip


def parse(argv: List[str]) -> Tuple[List[str], Optional[str], Optional[str], List[str]]:
    """Split an interpreter command line into (interpreter options, form, target, args).

    form is "-m", "-c", "script" or "-" (stdin); None when there is nothing to run.
    """
    options: List[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "-" or not token.startswith("-"):
            form = "-" if token == "-" else "script"
            return options, form, token, argv[i + 1 :]
        if token == "--":
            rest = argv[i + 1 :]
            return options, ("script" if rest else None), (rest or [None])[0], rest[1:]
        if token.startswith("--"):
            options.append(token)
            if token in _LONG_WITH_VALUE and i + 1 < len(argv):
                options.append(argv[i + 1])
                i += 1
            i += 1
            continue
        for j in range(1, len(token)):
            letter = token[j]
            if letter in "mc" or letter in _WITH_VALUE:
                attached = token[j + 1 :]
                if attached:
                    value, i = attached, i + 1
                elif i + 1 < len(argv):
                    value, i = argv[i + 1], i + 2
                else:
                    print(
                        f"Argument expected for the -{letter} option", file=sys.stderr
                    )
                    raise SystemExit(2)
                if letter in "mc":
                    return options, "-" + letter, value, argv[i:]
                options += ["-" + letter, value]
                break
            options.append("-" + letter)
        else:
            i += 1
    return options, None, None, []


def _set_path0(entry: str) -> None:
    # As Python does: sys.path[0] is the script's directory, or the current directory
    # for -m, -c and stdin (under -P / -I Python adds neither).
    if not (getattr(sys.flags, "safe_path", False) or sys.flags.isolated):
        sys.path[0] = entry


def _run_code(source: str, filename: str, argv0: str, args: List[str]) -> None:
    import espnet_plugin_intertopk  # noqa: F401  (registers the plugin's losses)

    sys.argv = [argv0, *args]
    _set_path0("")
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    exec(compile(source, filename, "exec"), main.__dict__)


def _fail(message: str, status: int) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(status)


def _module_problem(name: str) -> Optional[str]:
    """Python's message when ``-m name`` cannot be run, None when it can."""
    try:
        spec = importlib.util.find_spec(name)
        if spec is None:
            return f"No module named {name}"
        if spec.submodule_search_locations is not None:  # a package runs __main__
            if importlib.util.find_spec(f"{name}.__main__") is None:
                return (
                    f"No module named {name}.__main__; {name!r} is a package and "
                    "cannot be directly executed"
                )
    except (ImportError, ValueError) as err:  # a missing parent, a relative name
        return (
            f"Error while finding module specification for {name!r} "
            f"({type(err).__name__}: {err})"
        )
    return None


def run(argv: List[str]) -> None:
    """Run an interpreter command line (without the program name) in this process."""
    options, form, target, args = parse(argv)
    if any(o in _INFORMATIONAL for o in options):
        _exec_interpreter(argv)
    if form is None:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    if options:
        # Interpreter options act at start-up: start again with them.
        again = {"script": [target], "-": ["-"]}.get(form, [form, target])
        _exec_interpreter([*options, "-m", MODULE, *again, *args])
    if form == "-m":
        sys.argv = [target, *args]  # runpy puts the module's path in argv[0]
        _set_path0(os.getcwd())
        module = REPLACED_MODULES.get(target, target)
        problem = _module_problem(module)
        if problem:
            _fail(problem, 1)
        import espnet_plugin_intertopk  # noqa: F401  (registers the plugin's losses)

        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif form == "-c":
        _run_code(target, "<string>", "-c", args)
    elif form == "-":
        _run_code(sys.stdin.read(), "<stdin>", "-", args)
    else:
        if not os.path.isdir(target):  # a directory or zip runs its __main__.py
            try:
                open(target, "rb").close()
            except OSError as err:
                _fail(
                    f"can't open file {os.path.abspath(target)!r}: "
                    f"[Errno {err.errno}] {err.strerror}",
                    2,
                )
        import espnet_plugin_intertopk  # noqa: F401  (registers the plugin's losses)

        sys.argv = [target, *args]
        _set_path0(os.path.dirname(os.path.realpath(target)))
        runpy.run_path(target, run_name="__main__")


def _exec_interpreter(argv: List[str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv])


def main() -> None:
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
