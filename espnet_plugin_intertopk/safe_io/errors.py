"""A user's mistake: one clear line and a non-zero exit, never a traceback."""

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Something the user gave (an argument, a file, a directory) cannot be used.

    The message is shown as it is, on one line, so it must name the argument or the
    file (and the line) and say what to do. ``status`` is the exit status: 2 for a bad
    command line, as argparse exits, 1 for bad data.
    """

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def exits_cleanly(prog: str) -> Callable:
    """Decorate a command's ``main``: a ``UserError`` prints ``prog: error: message``
    to stderr and exits with its status."""

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except UserError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                sys.exit(err.status)

        return wrapper

    return decorate
