"""The one rule every command of this project follows for bad input: a one-line ``error: ...`` on stderr and exit
status 2, never a traceback (``ValueError`` is what the library raises for a bad file, setting or path)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

BAD_INPUT = 2


def one_line(error: BaseException) -> str:
    """The error's message on one line (a parser's multi-line message is joined)."""
    return " ".join(str(error).split()) or type(error).__name__


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's ``main``: a ``ValueError`` raised anywhere in it prints ``error: <message>`` and
    returns :data:`BAD_INPUT`; everything else (``SystemExit`` from argparse included) passes through."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except ValueError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            return BAD_INPUT

    return wrapper
