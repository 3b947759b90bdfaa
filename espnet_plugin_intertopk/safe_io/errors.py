"""A user's mistake: one clear line and a non-zero exit, never a traceback."""

import functools
import sys
from typing import Callable, List


class UserError(Exception):
    """Something the user gave (an argument, a file, a directory) cannot be used.

    The message is shown as it is, on one line, so it must name the argument or the
    file (and the line) and say what to do. ``status`` is the exit status: 2 for a bad
    command line, as argparse exits, 1 for bad data.
    """

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def os_error_line(err: OSError) -> str:
    """An OSError as one line: the file(s) it names and what went wrong."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    reason = err.strerror or str(err)
    return f"{where}: {reason}" if where else reason


def exits_cleanly(prog: str) -> Callable:
    """Decorate a command's ``main``: a ``UserError`` prints ``prog: error: message``
    to stderr and exits with its status; so does an error of the system (a file that
    is missing, a directory, unreadable or unwritable, a full disk: status 1) and a
    file that is not UTF-8 text (status 1), which no tool can do anything about."""

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except UserError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                sys.exit(err.status)
            except OSError as err:
                print(f"{prog}: error: {os_error_line(err)}", file=sys.stderr)
                sys.exit(1)
            except UnicodeDecodeError as err:
                print(
                    f"{prog}: error: a file is not UTF-8 text ({err.reason} at byte "
                    f"{err.start})",
                    file=sys.stderr,
                )
                sys.exit(1)

        return wrapper

    return decorate


def space_separated_names(text: str, option: str) -> List[str]:
    """The names of a command-line option given as one space-separated string; none,
    or a name given twice, is the user's mistake (UserError, status 2)."""
    names = text.split()
    if not names:
        raise UserError(f"{option} {text!r} names nothing: give one or more", status=2)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{option} names {twice[0]} twice", status=2)
    return names
