"""python -m rationanomaly.watch rationanomaly/sample_data/watch --out runs/watch

Read verl console logs and/or file-logger JSONL (files or folders searched for *.log and *.jsonl),
write reward/component/timing plots and summary.json into --out, print one line per run. Exit 1 when
no training step was found, 2 on a bad argument, a missing path or an output that cannot be written;
every error is one line (--debug adds the traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from rationanomaly.watch import describe_run, explain_error, watch
from rationanomaly.watch.analysis import DEFAULT_RECENT_STEPS, DEFAULT_SIGMA, DEFAULT_STALL_STEPS
from rationanomaly.watch.parse import MAX_STEP


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def _number(
    kind: Callable[[str], float], low: float, high: float | None = None, inclusive_low: bool = True
) -> Callable[[str], float]:
    """An argparse type: `kind(text)` within [low, high] (or (low, high]), finite."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        above = value >= low if inclusive_low else value > low
        if not (math.isfinite(value) and above and (high is None or value <= high)):
            bound = f"{'>=' if inclusive_low else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {bound})")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    """The command line: inputs, output folder, smoothing, time-left and stall knobs."""
    parser = OneLineParser(prog="python -m rationanomaly.watch", description=__doc__.split("\n\n")[1])
    parser.add_argument("inputs", nargs="+", metavar="LOG_OR_DIR", help="verl console log, JSONL file or folder")
    parser.add_argument("--out", required=True, help="output folder for the PNGs and summary.json (required)")
    parser.add_argument(
        "--sigma",
        type=_number(float, 0.0),
        default=DEFAULT_SIGMA,
        help=f"Gaussian smoothing width in steps, 0 = off (default {DEFAULT_SIGMA:g})",
    )
    parser.add_argument(
        "--recent_steps",
        type=_number(int, 1),
        default=DEFAULT_RECENT_STEPS,
        help=f"median over this many last step durations (default {DEFAULT_RECENT_STEPS})",
    )
    parser.add_argument(
        "--total_steps",
        type=_number(int, 1, MAX_STEP),
        default=None,
        help="planned number of steps, overriding the log (default: read from the log's "
        "'Total training steps' or progress bar)",
    )
    parser.add_argument(
        "--stall_steps",
        type=_number(float, 0.0, inclusive_low=False),
        default=DEFAULT_STALL_STEPS,
        help="mark a run stalled when its log has not changed for longer than this many step "
        f"times (default {DEFAULT_STALL_STEPS:g})",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (default off)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the watch on the command line's inputs; print one line per run; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        summary = watch(args.inputs, args.out, args.sigma, args.recent_steps, args.total_steps, args.stall_steps)
    except Exception as error:  # the CLI's edge: one line, the traceback only on request
        if args.debug:
            raise
        message, status = explain_error(error)
        print(f"error: {message}", file=sys.stderr)  # noqa: T201
        return status
    for record in summary["runs"]:
        print(describe_run(record))  # noqa: T201
    print(f"wrote {', '.join(summary['plots'])} and summary.json to {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
