"""python -m rationanomaly.watch rationanomaly/sample_data/watch --out runs/watch

Read verl console logs and/or file-logger JSONL (files or folders searched for *.log and *.jsonl),
write reward/timing plots and summary.json into --out, print one line per run. Exit 1 when no
training step was found, 2 on a bad argument or a missing path.
"""

from __future__ import annotations

import argparse
import sys

from rationanomaly.watch import NoStepsError, describe_run, watch
from rationanomaly.watch.analysis import DEFAULT_RECENT_STEPS, DEFAULT_SIGMA


def build_parser() -> argparse.ArgumentParser:
    """The command line: inputs, output folder, smoothing and time-left knobs."""
    parser = argparse.ArgumentParser(prog="python -m rationanomaly.watch", description=__doc__.split("\n\n")[1])
    parser.add_argument("inputs", nargs="+", metavar="LOG_OR_DIR", help="verl console log, JSONL file or folder")
    parser.add_argument("--out", required=True, help="output folder for the PNGs and summary.json")
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA,
                        help=f"Gaussian smoothing width in steps, 0 = off (default {DEFAULT_SIGMA:g})")
    parser.add_argument("--recent_steps", type=int, default=DEFAULT_RECENT_STEPS,
                        help=f"median over this many last step durations (default {DEFAULT_RECENT_STEPS})")
    parser.add_argument("--total_steps", type=int, default=None,
                        help="planned number of steps, when the log does not say (overrides the log)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the watch on the command line's inputs; print one line per run; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        summary = watch(args.inputs, args.out, args.sigma, args.recent_steps, args.total_steps)
    except (FileNotFoundError, ValueError) as error:  # NoStepsError is a ValueError: exit 1, the rest 2
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 1 if isinstance(error, NoStepsError) else 2
    for record in summary["runs"]:
        print(describe_run(record))  # noqa: T201
    print(f"wrote {', '.join(summary['plots'])} and summary.json to {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
