"""The documentation against the code: every command line shown in a fenced code block
of README.md, docs/*.md and the recipe's README runs a module or script that exists,
with options its own argument parser (or, for run.sh and the recipe's local/ scripts,
the script) accepts; the YAML blocks name options the loss and the scheduler take; and
every relative link and #anchor resolves.

Nothing is run: a tool's parser is its ``get_parser()``, or the parser its ``main()``
builds, caught at ``parse_args`` before it reads anything; a shell script's options
are the variables it sets before sourcing ``parse_options.sh`` (run.sh, local/data.sh),
or its own ``--name)`` cases plus run.sh's where it hands ``"$@"`` to run.sh
(run_recipe.sh, the recipe's local/ scripts; a ``"$@"`` inside a shell function is that
function's arguments, not the script's: local/scale.sh). Only fenced blocks marked
bash/sh/shell/console are read. Their commands run from the repository root (the
recipe's README: from the recipe); a ``cd`` changes that, and after a ``cd`` out of
this repository (ESPnet's own recipe) a command is only checked for the ``conf/`` files
it names and the plugin's interpreter.
"""

import argparse
import contextlib
import functools
import importlib
import importlib.util
import inspect
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "synth" / "spk1"
# The recipe script that run_recipe.sh and the local/ scripts hand their "$@" to.
RUN_SH = RECIPE / "run.sh"
INTERPRETER = "espnet-intertopk-python"
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
CONF_FILE = re.compile(r"^(?:\.\./)*conf/\S+\.ya?ml$")


def documents() -> List[Tuple[Path, Path]]:
    """(markdown file, directory its commands run from)."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [(d, ROOT) for d in docs] + [(RECIPE / "README.md", RECIPE)]


# ---------------------------------------------------------------- markdown


@dataclass
class Block:
    lang: str
    line: int  # line number of the first line inside the fence
    lines: List[str]


def fenced_blocks(text: str) -> Iterator[Block]:
    fence: Optional[str] = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if match:
                fence, block = match.group(1), Block(match.group(2), number + 1, [])
        elif stripped.startswith(fence) and not stripped.strip(fence[0]):
            yield block
            fence = None
        else:
            block.lines.append(line)


def _outside_fences(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks (each fenced line as an empty one)."""
    fence: Optional[str] = None
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})", stripped)
            if match:
                fence = match.group(1)
                yield ""
            else:
                yield line
        else:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            yield ""


def prose(text: str) -> str:
    """The text outside fenced blocks, with inline code spans blanked."""
    return "\n".join(re.sub(r"`[^`]*`", "code", x) for x in _outside_fences(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """The anchors of a markdown file's headings (a repeated one gets -1, -2, ...)."""
    out: Set[str] = set()
    count: Dict[str, int] = {}
    for line in _outside_fences(path.read_text()):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = count.get(base, 0)
            count[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def rel(path: Path) -> str:
    """A path as the messages show it: relative to the repository if inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


LINK = re.compile(
    r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def link_problems(doc: Path) -> List[str]:
    text = prose(doc.read_text())
    targets = LINK.findall(text) + REFERENCE.findall(text)
    problems = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            problems.append(f"{rel(doc)}: link {target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(
                f"{rel(doc)}: link {target}: no heading with that anchor in {rel(path)}"
            )
    return problems


# ---------------------------------------------------------------- command lines


@dataclass
class Command:
    doc: str
    line: int
    tokens: List[str]
    cwd: Optional[Path]  # None: outside this repository (ESPnet's own recipe)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {' '.join(self.tokens)}"


def _logical_lines(block: Block) -> Iterator[Tuple[int, str]]:
    start, parts = None, []
    for number, line in enumerate(block.lines, block.line):
        if start is None:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, " ".join(parts)
        start, parts = None, []
    if parts:
        yield start, " ".join(parts)


def _split(line: str) -> List[List[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in commands + [current] if c]


def commands_in(doc: Path, cwd: Path) -> List[Command]:
    out = []
    for block in fenced_blocks(doc.read_text()):
        if block.lang not in SHELL_BLOCKS:
            continue
        here: Optional[Path] = cwd
        for number, line in _logical_lines(block):
            for tokens in _split(line):
                while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):
                    tokens = tokens[1:]  # VAR=value before the command
                if not tokens:
                    continue
                if tokens[0] == "cd" and len(tokens) > 1:
                    target = Path(tokens[1])
                    if target.is_absolute():
                        inside = target == ROOT or ROOT in target.parents
                        here = target if inside else None
                    elif here is not None:
                        here = (here / target).resolve()
                    continue
                out.append(Command(rel(doc), number, tokens, here))
    return out


def all_commands() -> List[Command]:
    return [c for doc, cwd in documents() for c in commands_in(doc, cwd)]


# ---------------------------------------------------------------- parsers


class _Parsed(BaseException):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


def _parser_of_main(main: Callable, argv0: str) -> argparse.ArgumentParser:
    """The parser ``main()`` builds, caught when it would parse the command line."""

    def stop(self, *args, **kwargs):
        raise _Parsed(self)

    with contextlib.ExitStack() as patches:
        for method in ("parse_args", "parse_known_args"):
            patches.enter_context(
                mock.patch.object(argparse.ArgumentParser, method, stop)
            )
        patches.enter_context(mock.patch.object(sys, "argv", [argv0]))
        try:
            main()
        except _Parsed as caught:
            return caught.parser
    raise AssertionError(f"{argv0}: main() returned without parsing a command line")


@functools.lru_cache(maxsize=None)
def module_parser(module_name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(module_name)
    if callable(getattr(module, "get_parser", None)):
        return module.get_parser()
    return _parser_of_main(module.main, module_name)


@functools.lru_cache(maxsize=None)
def script_parser(path: Path) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return _parser_of_main(module.main, str(path))


def _outside_functions(lines: List[str]) -> List[str]:
    """The lines of a shell script outside its function bodies (``name() {`` to the
    ``}`` at that indentation, or ``name() { ...; }`` on one line), where ``"$@"`` is
    the script's own arguments rather than a function's."""
    out: List[str] = []
    end: Optional[str] = None  # the line that closes the function being skipped
    for line in lines:
        if end is not None:
            if line.rstrip() == end:
                end = None
            continue
        match = re.match(r"(\s*)(?:function\s+)?[A-Za-z_][\w-]*\s*\(\)\s*\{(.*)$", line)
        if match is None:
            out.append(line)
        elif not match.group(2).rstrip().endswith("}"):
            end = match.group(1) + "}"
    return out


@functools.lru_cache(maxsize=None)
def shell_options(path: Path) -> Optional[Set[str]]:
    """The ``--options`` a shell script takes; None where it hands them on to a tool
    that is not checked here (scripts/test.sh: pytest)."""
    text = path.read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*\.\s+.*parse_options\.sh", line):
            names = set()
            for earlier in lines[:i]:
                match = re.match(r"([A-Za-z_]\w*)=", earlier)
                if match:
                    names.add("--" + match.group(1))
            return names
    own = set(re.findall(r"^\s*(--[A-Za-z][\w-]*)\)", text, re.M))
    own |= set(re.findall(r"=\s*(--[A-Za-z][\w-]*)\s*\]", text))
    forwards = [
        line for line in lines if re.search(r"\"\$(@|\{@:)", line) and "run.sh" in line
    ]
    if forwards:
        return own | shell_options(RUN_SH)
    if any(re.search(r"\"\$@\"", line) for line in _outside_functions(lines)):
        return None
    return own


def _option_problems(
    parser: argparse.ArgumentParser, args: List[str], what: str
) -> List[str]:
    problems = []
    actions = dict(parser._option_string_actions)
    subcommands = [
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]
    if subcommands:
        positional = [a for a in args if not a.startswith("-")]
        choices = subcommands[0].choices
        if not positional or positional[0] not in choices:
            return [f"{what}: needs a subcommand, one of {sorted(choices)}"]
        actions.update(choices[positional[0]]._option_string_actions)
    for i, token in enumerate(args):
        if not re.fullmatch(r"--[A-Za-z][\w-]*(=.*)?", token):
            continue
        name, _, attached = token.partition("=")
        action = actions.get(name)
        if action is None:
            problems.append(f"{what}: no option {name}")
            continue
        value = attached or (args[i + 1] if i + 1 < len(args) else None)
        if value is None or value.startswith("-") or value == "..." or action.nargs:
            continue
        try:
            converted = action.type(value) if callable(action.type) else value
        except Exception as err:  # noqa: BLE001 - any refusal of the value counts
            problems.append(f"{what}: {name} {value}: {err}")
            continue
        if action.choices is not None and converted not in action.choices:
            problems.append(f"{what}: {name} {value}: not one of {action.choices}")
    return problems


def _python_target(args: List[str]) -> Tuple[Optional[str], Optional[str], List[str]]:
    """(module, script, their arguments) of a python or torchrun command line."""
    i = 0
    while i < len(args):
        token = args[i]
        if token == "-m" and i + 1 < len(args):
            return args[i + 1], None, args[i + 2 :]
        if token.startswith("-m") and len(token) > 2:
            return token[2:], None, args[i + 1 :]
        if token == "-c":
            return None, None, []
        if not token.startswith("-"):
            return None, token, args[i + 1 :]
        if token in ("-W", "-X"):
            i += 1
        i += 1
    return None, None, []


def _console_scripts() -> Dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[)", text, re.M | re.S)
    pairs = re.findall(r'^([\w.-]+)\s*=\s*"([^"]+)"', section.group(1), re.M)
    return dict(pairs)


def _is_python(program: str) -> bool:
    return bool(re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", program))


def command_problems(command: Command) -> List[str]:
    tokens = [t.lstrip("[").rstrip("]") for t in command.tokens]
    tokens = [t for t in tokens if t]
    program, args = tokens[0], tokens[1:]
    where = str(command)
    problems: List[str] = []
    for token in tokens:
        if CONF_FILE.match(token):
            base = command.cwd if command.cwd is not None else ROOT
            if not (base / token).exists():
                problems.append(f"{where}: {token}: no such file")
    if "--python" in args[:-1]:
        value = args[args.index("--python") + 1]
        if value == INTERPRETER and INTERPRETER not in _console_scripts():
            problems.append(f"{where}: {INTERPRETER} is not in pyproject's scripts")
    if program == INTERPRETER or _is_python(program) or program == "torchrun":
        if program == INTERPRETER:
            entry = _console_scripts().get(INTERPRETER)
            if entry is None:
                return problems + [f"{where}: {INTERPRETER} is not in pyproject"]
            module_name, _, function = entry.partition(":")
            if not hasattr(importlib.import_module(module_name), function):
                return problems + [f"{where}: {entry} does not exist"]
        module, script, rest = _python_target(args)
        if module is not None:
            if program == INTERPRETER:
                from espnet_plugin_intertopk.bin.interpreter import REPLACED_MODULES

                module = REPLACED_MODULES.get(module, module)
            if importlib.util.find_spec(module) is None:
                return problems + [f"{where}: no module {module}"]
            return problems + _option_problems(module_parser(module), rest, where)
        if script is not None and script.endswith(".py"):
            if command.cwd is None:
                return problems
            path = (command.cwd / script).resolve()
            if not path.is_file():
                return problems + [f"{where}: no script {script}"]
            return problems + _option_problems(script_parser(path), rest, where)
        return problems
    if program in ("bash", "sh") and args:
        program, args = args[0], args[1:]
    if program.endswith(".sh"):
        if command.cwd is None:
            return problems  # ESPnet's own recipe: only the checks above
        path = (command.cwd / program).resolve()
        if not path.is_file():
            return problems + [f"{where}: no script {program}"]
        options = shell_options(path)
        if options is None:
            return problems
        for token in args:
            if re.fullmatch(r"--[A-Za-z][\w-]*", token) and token not in options:
                problems.append(f"{where}: {program} has no option {token}")
    return problems


# ---------------------------------------------------------------- YAML


def yaml_problems(doc: Path) -> List[str]:
    from espnet2.tasks.spk import loss_choices

    from espnet_plugin_intertopk.train.margin_scheduler import (
        margin_scheduler_choices,
    )

    task = module_parser("espnet_plugin_intertopk.bin.spk_train")
    problems = []
    for block in fenced_blocks(doc.read_text()):
        if block.lang not in ("yaml", "yml"):
            continue
        where = f"{rel(doc)}:{block.line}"
        config = yaml.safe_load("\n".join(block.lines))
        if not isinstance(config, dict):
            continue
        for key in config:
            if f"--{key}" not in task._option_string_actions:
                problems.append(f"{where}: spk_train has no option --{key}")
        for name, choices, build in (
            ("loss", loss_choices, lambda cls, conf: cls(nout=8, nclasses=20, **conf)),
            (
                "margin_scheduler",
                margin_scheduler_choices,
                lambda cls, conf: cls(**conf),
            ),
        ):
            if name not in config:
                continue
            cls = choices.get_class(config[name])
            conf = config.get(f"{name}_conf") or {}
            unknown = set(conf) - set(inspect.signature(cls.__init__).parameters)
            if unknown:
                problems.append(f"{where}: {cls.__name__} takes no {sorted(unknown)}")
                continue
            try:
                build(cls, conf)
            except Exception as err:  # noqa: BLE001 - the class refused the values
                problems.append(f"{where}: {cls.__name__}({conf}): {err}")
    return problems


# ---------------------------------------------------------------- tests

COMMANDS = all_commands()


def test_the_readme_shows_the_test_command():
    """CI (.ci/run) runs the README's test command; the README must keep showing it."""
    shown = [" ".join(c.tokens) for c in COMMANDS if c.doc == "README.md"]
    assert "bash scripts/test.sh" in shown


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.doc}:{c.line}")
def test_command_line(command):
    assert command_problems(command) == []


@pytest.mark.parametrize("doc", [d for d, _ in documents()], ids=rel)
def test_links(doc):
    assert link_problems(doc) == []


@pytest.mark.parametrize("doc", [d for d, _ in documents()], ids=rel)
def test_yaml(doc):
    assert yaml_problems(doc) == []


def test_the_checks_catch_a_made_up_option_and_a_broken_link(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n[fine](#title) [gone](missing.md) [no anchor](#nothing)\n\n"
        "```bash\n"
        "python -m espnet_plugin_intertopk.scoring.compare --expdir x --made_up 1\n"
        "python -m espnet_plugin_intertopk.recipe.mfcc_floor --out a.npz --invented b\n"
        "python -m espnet_plugin_intertopk.recipe.kaldi_data shape a b\n"
        "python -m espnet_plugin_intertopk.recipe.no_such_tool --x 1\n"
        f"cd {RECIPE}\n"
        "./run.sh --stage 3 --no_such_variable 1\n"
        "bash local/label_noise.sh --jobs 2 --stop_stage 9 --nope 1\n"
        "bash local/scale.sh --jobs 2 --parts curve --stage 3\n"
        "```\n"
    )
    found = [p for c in commands_in(doc, tmp_path) for p in command_problems(c)]
    assert len(found) == 6, found
    assert "no option --made_up" in found[0]
    assert "no option --invented" in found[1]
    assert "no module espnet_plugin_intertopk.recipe.no_such_tool" in found[2]
    assert "run.sh has no option --no_such_variable" in found[3]
    assert "label_noise.sh has no option --nope" in found[4]
    # scale.sh: its own options only (its "$@" are its functions' arguments).
    assert "scale.sh has no option --stage" in found[5]
    problems = link_problems(doc)
    assert len(problems) == 2 and "missing.md" in problems[0], problems
    assert "#nothing" in problems[1]
