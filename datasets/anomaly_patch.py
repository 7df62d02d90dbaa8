r"""python datasets/anomaly_patch.py --input rationanomaly/sample_data/bgl_templates.csv \
    --patch rationanomaly/sample_data/anomaly_patch.json --output runs/patch/bgl_templates.csv \
    --report runs/patch/report.json

Rectify template labels with the expert patch. The input is a LogPrompt template sheet (.xlsx/.csv, columns
`log`, `label`) or a loghub structured CSV; the output has the input's format. `--input`/`--output` may be
repeated in pairs; the report then holds totals plus one section per file.

Run with no arguments (from `datasets/` or anywhere), it does what the reference script did: patch
`datasets/trainsets/BGL.xlsx` and `datasets/trainsets/Spirit.xlsx` with `datasets/anomaly_patch.json`, writing
`trainsets/BGL_rectified.xlsx`, `trainsets/Spirit_rectified.xlsx` and `trainsets/anomaly_patch_report.json`
(the inputs are left untouched so a rerun gives the same result).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rationanomaly.cli import make_parser, run_command
from rationanomaly.patch import EXACT, MATCH_MODES, patch_files

HERE = Path(__file__).resolve().parent
DEFAULT_INPUTS = [HERE / "trainsets" / "BGL.xlsx", HERE / "trainsets" / "Spirit.xlsx"]
DEFAULT_OUTPUTS = [HERE / "trainsets" / "BGL_rectified.xlsx", HERE / "trainsets" / "Spirit_rectified.xlsx"]
SHOWN = 5  # unmatched entries printed; the report lists them all
REPORT_NAME = "anomaly_patch_report.json"
DEFAULT_LAYOUT_HINT = (
    "the default run expects the LogPrompt sheets as datasets/trainsets/BGL.xlsx and Spirit.xlsx and "
    "the RationAnomaly release's anomaly_patch.json in datasets/ (README: data sources)"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("Rectify template labels with an expert anomaly patch.")
    parser.add_argument(
        "--input",
        type=Path,
        action="append",
        help="template sheet or loghub structured CSV "
        "(repeatable; default: trainsets/BGL.xlsx and trainsets/Spirit.xlsx)",
    )
    parser.add_argument("--output", type=Path, action="append", help="patched file, same format as its --input")
    parser.add_argument("--patch", type=Path, default=HERE / "anomaly_patch.json", help="expert patch JSON")
    parser.add_argument(
        "--report", type=Path, default=None, help=f"report JSON (default: {REPORT_NAME} beside the first --output)"
    )
    parser.add_argument(
        "--match",
        choices=MATCH_MODES,
        default=EXACT,
        help="exact (the reference) or normalized (punctuation/whitespace-insensitive fallback)",
    )
    parser.add_argument(
        "--in_place",
        "--in-place",
        action="store_true",
        help="allow an --output to be its own --input (the file is replaced by its patched version)",
    )
    args = parser.parse_args(argv)
    args.default_layout = args.input is None and args.output is None
    if args.default_layout:
        args.input, args.output = DEFAULT_INPUTS, DEFAULT_OUTPUTS
    if args.input is None or args.output is None or len(args.input) != len(args.output):
        parser.error("give one --output per --input (or neither, for the reference's trainsets/ files)")
    if args.report is None:
        args.report = args.output[0].parent / REPORT_NAME
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    """Patch every pair, then print one line per file and the totals."""
    try:
        report = patch_files(
            list(zip(args.input, args.output, strict=True)), args.patch, args.report, args.match, args.in_place
        )
    except FileNotFoundError as error:
        if args.default_layout:
            raise FileNotFoundError(f"{error}; {DEFAULT_LAYOUT_HINT}") from error
        raise
    for item in report["files"]:
        print(
            f"{item['input']}: {item['templates']} templates, {item['matched']} matched, {item['changed']} changed "
            f"(+{item['normal_to_abnormal']} abnormal, -{item['abnormal_to_normal']}), anomalies "
            f"{item['anomalies_before']} -> {item['anomalies_after']} -> {item['output']}"
        )
    print(
        f"patch {args.patch}: {report['matched']}/{report['patch_entries']} entries matched ({args.match}); "
        f"{len(report['matched_normalized_only'])} only when normalized; {len(report['already_rectified'])} "
        f"already rectified; {len(report['ambiguous'])} ambiguous"
    )
    for entry in report["unmatched"][:SHOWN]:
        print(f"  unmatched: {entry!r}")
    if len(report["unmatched"]) > SHOWN:
        print(f"  ... and {len(report['unmatched']) - SHOWN} more unmatched entries (listed in the report)")
    if report["unmatched"] and args.match == EXACT:
        print("  (try --match normalized to recover near-misses)")
    print(f"report -> {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
