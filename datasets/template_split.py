r"""python datasets/template_split.py --input rationanomaly/sample_data/bgl_templates.csv --name BGL \
    --output-dir runs/split

Split one dataset's labelled templates (a template sheet, or a loghub structured log whose unique EventTemplates are
abnormal if any of their lines is) into train/test sample JSON (reference layout, labels normal/abnormal),
with a target training anomaly rate (paper: 2,000 entries at 15%; the metadata says what was achievable).
With --sessions (a test_sessions.json from session_builder.py) it also writes the session test set without the
sessions that contain a training template. Writes {name}_train.json, {name}_test.json, [{name}_test_sessions.json]
and {name}_split.json into --output-dir.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rationanomaly.cli import fraction, make_parser, positive_int, run_command
from rationanomaly.loaders import LINE_ORDERS, REFUSE
from rationanomaly.patch import EXACT, MATCH_MODES
from rationanomaly.splits import (
    CHRONOLOGICAL,
    DEFAULT_ANOMALY_RATE,
    DEFAULT_TRAIN_RATIO,
    DEFAULT_TRAIN_SIZE,
    ORDERS,
    build_template_split,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("Split labelled templates into train/test sample JSON.")
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="template sheet (.xlsx/.csv, columns log, label) or loghub structured log (.csv), ideally patched",
    )
    parser.add_argument("--name", help="dataset name used in the output file names (default: input file stem)")
    parser.add_argument("--output_dir", "--output-dir", type=Path, required=True, help="folder for the split files")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default=CHRONOLOGICAL,
        help="chronological = file order (paper); random = seeded shuffle",
    )
    parser.add_argument(
        "--train_ratio",
        "--train-ratio",
        type=fraction(low_open=True, high_open=True),
        default=DEFAULT_TRAIN_RATIO,
        help="share of templates (first in --order) forming the training pool",
    )
    parser.add_argument(
        "--train_size", "--train-size", type=positive_int, default=DEFAULT_TRAIN_SIZE, help="most training entries"
    )
    parser.add_argument(
        "--anomaly_rate",
        "--anomaly-rate",
        type=fraction(low_open=True, high_open=True),
        default=DEFAULT_ANOMALY_RATE,
        help="training anomaly rate",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --order random")
    parser.add_argument("--sessions", type=Path, help="session test set to drop training templates from")
    parser.add_argument(
        "--match", choices=MATCH_MODES, default=EXACT, help="how session templates are compared with training templates"
    )
    parser.add_argument(
        "--unsorted",
        choices=LINE_ORDERS,
        default=REFUSE,
        help="a structured log whose LineIds go backwards: refuse it, or sort it by LineId (with a warning)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    """Split, write the files and print the counts."""
    name = args.name or args.input.stem
    meta = build_template_split(
        args.input,
        args.output_dir,
        name,
        args.train_ratio,
        args.train_size,
        args.anomaly_rate,
        args.order,
        args.seed,
        args.sessions,
        args.match,
        args.unsorted,
    )
    print(f"{name} ({args.input}): {meta['templates']} templates, order {args.order}, seed {args.seed}")
    if "mixed_labels" in meta:
        print(
            f"  from {meta['lines']} log lines ({meta['abnormal_lines']} abnormal); {meta['mixed_labels']} templates "
            "have both normal and abnormal lines (labelled abnormal)"
        )
    for part in ("train", "test", "unused"):
        counts = meta[part]
        print(
            f"  {part:>6}: {counts['entries']:5d} entries, {counts['abnormal']:4d} abnormal "
            f"(rate {counts['anomaly_rate']})"
        )
    print(f"  {meta['note']}")
    if "sessions" in meta:
        sessions = meta["sessions"]
        print(
            f"  sessions: kept {sessions['kept']} ({sessions['kept_abnormal']} abnormal), dropped "
            f"{sessions['dropped']} that contain a training template"
            + ("; none left for session-level evaluation (try a smaller --train_ratio)" if not sessions["kept"] else "")
        )
    print("-> " + ", ".join(meta["outputs"].values()) + f", {args.output_dir / f'{name}_split.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
