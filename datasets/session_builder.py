r"""python datasets/session_builder.py --input rationanomaly/sample_data/bgl_structured.csv --output-dir runs/sessions

Cut a loghub structured log into session windows (default 100 consecutive lines; `--mode reference` for the
reference builder's 101-line windows), split them chronologically and subsample the training part towards an
anomaly ratio (seeded). Writes train_sessions.json, test_sessions.json, train_templates.json and test_templates.json
(the unique templates of each side, reference sample layout, abnormal if any of a template's lines is: predict
test_templates.json and every test session can be scored) and data_desc.json into --output-dir.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rationanomaly.cli import fraction, make_parser, positive_int, run_command
from rationanomaly.loaders import LINE_ORDERS, REFUSE
from rationanomaly.sessions import (
    DEFAULT_TRAIN_ANOMALY_RATIO,
    DEFAULT_TRAIN_RATIO,
    DEFAULT_WINDOW,
    DESC_FILE,
    FIXED,
    WINDOW_MODES,
    build_session_dataset,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("Build session windows from a loghub structured log.")
    parser.add_argument("--input", type=Path, required=True, help="loghub *.log_structured.csv (patched or not)")
    parser.add_argument("--output_dir", "--output-dir", type=Path, required=True, help="folder for the five files")
    parser.add_argument("--window", type=positive_int, default=DEFAULT_WINDOW, help="lines per window (paper: 100)")
    parser.add_argument(
        "--mode",
        choices=WINDOW_MODES,
        default=FIXED,
        help="fixed: exactly --window lines; reference: new window once the LineId distance "
        "exceeds --window (window + 1 lines, the reference builder's behaviour)",
    )
    parser.add_argument(
        "--keep_partial", "--keep-partial", action="store_true", help="keep a last window that is not full"
    )
    parser.add_argument(
        "--train_ratio",
        "--train-ratio",
        type=fraction(),
        default=DEFAULT_TRAIN_RATIO,
        help="share of windows (the earliest) used for training",
    )
    parser.add_argument(
        "--train_anomaly_ratio",
        "--train-anomaly-ratio",
        type=fraction(high_open=True),
        default=DEFAULT_TRAIN_ANOMALY_RATIO,
        help="abnormal share to subsample the training windows to (reference: 0.15); 0 keeps all",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training subsample")
    parser.add_argument(
        "--unsorted",
        choices=LINE_ORDERS,
        default=REFUSE,
        help="a log whose LineIds go backwards: refuse it, or sort it by LineId (with a warning)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    """Build the windows and print the counts."""
    desc = build_session_dataset(
        args.input,
        args.output_dir,
        args.window,
        args.mode,
        args.keep_partial,
        args.train_ratio,
        args.train_anomaly_ratio or None,
        args.seed,
        args.unsorted,
    )
    print(f"{args.input}: {desc['lines']} lines ({desc['abnormal_lines']} abnormal), {desc['dropped_lines']} dropped")
    for part in ("all", "train_before_sampling", "train", "test"):
        counts = desc[part]
        print(
            f"  {part:>22}: {counts['sessions']:5d} sessions, {counts['abnormal']:5d} abnormal "
            f"(ratio {counts['anomaly_ratio']})"
        )
    for part in ("all", "train", "test"):
        counts = desc["templates"][part]
        print(
            f"  {part + ' templates':>22}: {counts['templates']:5d} templates, {counts['abnormal']:5d} abnormal "
            f"({counts['mixed_labels']} with both normal and abnormal lines)"
        )
    print(f"  {'test also in train':>22}: {desc['templates']['test_in_train']:5d} templates")
    print("-> " + ", ".join(desc["outputs"].values()) + f", {args.output_dir / DESC_FILE}")
    print(f"   (window {args.window}, mode {args.mode}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
