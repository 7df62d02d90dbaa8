"""python datasets/log_parser.py --input rationanomaly/sample_data/bgl_raw.log --output runs/data/bgl_parsed.csv

Turn a raw supercomputer log (loghub's full BGL.log; Thunderbird, and Spirit in the same Sandia syslog layout)
into the loghub structured CSV (LineId, Label, header fields, Content, EventId, EventTemplate) that
datasets/anomaly_patch.py and datasets/session_builder.py read. Header fields are split exactly as in loghub's
own structured files; EventTemplate masks every token holding a digit as <*> (not loghub's Drain parser).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rationanomaly.cli import make_parser, run_command
from rationanomaly.io import check_outputs
from rationanomaly.parsing import HEADERS, structure_log


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser(__doc__.split("\n\n")[1])
    parser.add_argument("--input", type=Path, required=True, help="raw log, one line per event")
    parser.add_argument(
        "--layout",
        choices=sorted(HEADERS),
        default="bgl",
        help="bgl: BGL's RAS lines; thunderbird: Sandia syslog lines (Thunderbird, Spirit)",
    )
    parser.add_argument("--output", type=Path, required=True, help="structured CSV to write")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        parser.error(f"--input {args.input} does not exist; unpack the raw log (e.g. loghub's BGL.zip holds BGL.log)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    """Structure the log (the raw log is never the output: it would be replaced by the CSV) and print the counts."""
    check_outputs([args.output], [args.input])
    summary = structure_log(args.input, args.output, args.layout)
    print(f"{summary.lines} lines ({summary.alerts} alerts), {summary.templates} templates -> {summary.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
