"""The edge of every command-line tool: `--help` with defaults, `--debug`, checked numbers, one line per error.

    python datasets/session_builder.py --help

Every CLI in `datasets/` and `validation/` builds its parser with `make_parser` and runs its body through
`run_command`, so they all behave alike:
- exit 0: done; exit 1: it ran but could not produce everything asked for (the summary says what), or an
  unexpected failure; exit 2: refused before or while working (bad input file, path, option or endpoint),
  nothing of the earlier outputs changed; exit 130: interrupted (rerun to resume where supported);
- an error is one line on stderr, `error: WHAT (WHERE): HOW TO FIX`; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable

EXIT_OK, EXIT_INCOMPLETE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130


class UserError(RuntimeError):
    """A failure the user can fix that is not about a value or a path: an endpoint that refuses, a backend that
    is not installed, a teacher that cannot answer. Plain RuntimeErrors stay unexpected: a CUDA out-of-memory or
    a vLLM engine that fails to start is one, and needs its traceback (`--debug`) and exit 1, not a refusal."""


# Errors that describe the input, a path or the environment (the user can fix them), not a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, UserError)

_HINTS = {
    errno.ENOENT: "no such file or folder; check the path",
    errno.EACCES: "permission denied; fix its permissions or choose another path",
    errno.EPERM: "operation not permitted; choose another path",
    errno.EISDIR: "is a folder; name a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOSPC: "no space left on the device; free some space and rerun",
    errno.EROFS: "read-only file system; choose another output folder",
}


class IncompleteRun(UserError):
    """The command ran and wrote what it could, but something requested could not be produced (exit 1)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default and keeps the description's line breaks (usage examples).

    Required options and options without a default (None) show none: "(default: None)" says nothing.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def make_parser(description: str, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser with defaults in `--help` and the shared `--debug` flag."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, **kwargs)
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return parser


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    """`text` as an int or a float, or the argparse error that names what was expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count or a size; 0 and negatives mean nothing here)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer (use 1 or more)")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a number of retries, where 0 means none)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (use 0 or more)")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a timeout in seconds)."""
    value = _number(text, float)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def fraction(low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a number in [0, 1], with either end excluded when `low_open` / `high_open`."""

    def parse(text: str) -> float:
        value = _number(text, float)
        low_ok = value > 0.0 if low_open else value >= 0.0
        high_ok = value < 1.0 if high_open else value <= 1.0
        if not (low_ok and high_ok):
            bounds = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{value} is not a fraction in {bounds}")
        return value

    return parse


def non_empty(text: str) -> str:
    """argparse type: a string with something in it (a model name, a URL)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty")
    return text.strip()


def error_line(error: BaseException) -> str:
    """One line describing `error`: its message (whitespace collapsed), an OSError with its path and a hint."""
    if isinstance(error, OSError) and error.errno in _HINTS and error.filename is not None:
        message = f"{error.filename}: {_HINTS[error.errno]}"
    else:
        message = str(error) or type(error).__name__
    line = " ".join(message.split())
    if not isinstance(error, USER_ERRORS):
        line = f"unexpected {type(error).__name__}: {line} (rerun with --debug for the traceback)"
    return line


def _report(line: str) -> None:
    """The one error line, on stderr (the package never prints; this is the command's own edge)."""
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


def run_command(body: Callable[[], int], debug: bool = False) -> int:
    """Run a CLI body; any error becomes one `error:` line on stderr and an exit code (module docstring)."""
    try:
        return body()
    except KeyboardInterrupt:
        if debug:
            raise
        _report("interrupted; finished outputs are kept, rerun to continue")
        return EXIT_INTERRUPTED
    except IncompleteRun as error:
        if debug:
            raise
        _report(error_line(error))
        return EXIT_INCOMPLETE
    except Exception as error:  # the edge: whatever escaped the command is reported, not dumped
        if debug:
            raise
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        _report(error_line(error))
        return EXIT_REFUSED if isinstance(error, USER_ERRORS) else EXIT_INCOMPLETE
