"""Score predictions: binarise each output, then precision / recall / F1 of the abnormal class per template and session.

    python validation/model_evaluate.py --help

Explicit form (writes the metrics JSON, plus PREDICTIONS.labelled.json and PREDICTIONS.diff.json beside the
predictions unless --labelled / --diff say otherwise):
    python validation/model_evaluate.py --predictions predictions.json --testset datasets/testsets/BGL_test.json \
        --sessions datasets/testsets/BGL_test_sessions.json --output-json metrics.json --dataset BGL
Reference form (numbers from validation/model_testset_list.json; -s b = BGL sessions, -s s = Spirit):
    python validation/model_evaluate.py -m 2 -t 0 -s b
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rationanomaly.cli import make_parser, run_command
from rationanomaly.evaluate import MISSING_POLICIES, Evaluation, evaluate_files, format_table
from rationanomaly.io import check_outputs, output_set, write_text_atomic
from rationanomaly.patch import EXACT, MATCH_MODES
from rationanomaly.predict.catalog import DEFAULT_CATALOG, load_catalog, reference_ids, select, session_path
from rationanomaly.results import DATASETS, ResultRow, comparison_table, evaluation_scores

SHOWN_UNKNOWNS = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Reference flags (-m, -t, -s) and explicit ones on top."""
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", help="catalogue model number (reference form, with -t NUMBER)")
    parser.add_argument("-t", "--testset", required=True, help="test set JSON or a catalogue number")
    parser.add_argument("-s", "--session", help="reference form: b (BGL) or s (Spirit) session file from the catalogue")
    parser.add_argument("--predictions", type=Path, help="predictions JSON (instruction, input, output)")
    parser.add_argument("--sessions", type=Path, help="session JSON (rationanomaly.sessions) for session-level scores")
    parser.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="drop",
        help="sessions with an unpredicted template: drop them (reference) or read those lines normal",
    )
    parser.add_argument(
        "--match",
        choices=MATCH_MODES,
        default=EXACT,
        help="session templates vs predicted ones: exact (reference) or punctuation/space-normalised",
    )
    parser.add_argument(
        "--output_json", "--output-json", type=Path, help="metrics JSON (default: results/metrics/ in reference form)"
    )
    parser.add_argument("--labelled", type=Path, help="labelled-output JSON (binarised output beside each label)")
    parser.add_argument("--diff", type=Path, help="JSON of the items whose binarised output differs from the label")
    parser.add_argument("--dataset", choices=DATASETS, help="print the paper's Table 2 rows for this dataset")
    parser.add_argument("--method", default="ours", help="row name in the comparison table (recorded in the JSON)")
    parser.add_argument(
        "--partial",
        action="store_true",
        help="score a prediction file that covers only part of the test set (the report says how much); "
        "by default that is an error",
    )
    parser.add_argument(
        "--results_table", "--results-table", type=Path, help="also write the comparison table (markdown) here"
    )
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="numbered models and test sets")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    """Input and output paths from either the reference numbers or the explicit flags."""
    catalog = load_catalog(args.catalog)
    ids = reference_ids(args.model, args.testset)
    sessions = args.sessions or (session_path(catalog, args.session) if args.session else None)
    if ids is not None:
        chosen = select(catalog, *ids)
        metrics = chosen.results_dir / "metrics" / f"{chosen.stem}.json"
        return {
            "predictions": args.predictions or chosen.predictions_path,
            "testset": chosen.testset_path,
            "sessions": sessions,
            "output_json": args.output_json or metrics,
            "labelled": args.labelled or chosen.labelled_path,
            "diff": args.diff or chosen.diff_path,
            "dataset": args.dataset or (chosen.testset if chosen.testset in DATASETS else None),
        }
    if args.predictions is None:
        raise ValueError("give --predictions FILE (or the reference numbers -m MODEL -t TESTSET)")
    stem = args.predictions.with_suffix("")
    return {
        "predictions": args.predictions,
        "testset": Path(args.testset),
        "sessions": sessions,
        "output_json": args.output_json,
        "labelled": args.labelled or stem.with_name(stem.name + ".labelled.json"),
        "diff": args.diff or stem.with_name(stem.name + ".diff.json"),
        "dataset": args.dataset,
    }


def main(argv: list[str] | None = None) -> int:
    """Evaluate, write the files, print the table, the unknowns and the paper's rows."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return run_command(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    """The command's body: every output is checked first and all of them are written as one set."""
    paths = resolve(args)
    dataset = paths.pop("dataset")
    outputs = [paths["output_json"], paths["labelled"], paths["diff"], args.results_table]
    check_outputs(outputs, [paths["predictions"], paths["testset"], paths["sessions"]])
    with output_set():
        result = evaluate_files(
            **paths, missing=args.missing, match=args.match, partial=args.partial, method=args.method
        )
        wrote_table = report(args, dataset, result, paths)
    written = [p for p in outputs[:3] if p] + ([args.results_table] if wrote_table else [])
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def test_set_label(paths: dict, level: str, block: dict) -> str:
    """`BGL_test.json: 10 entries (4 abnormal)`: the test set behind our row (the sessions at session level)."""
    source = paths["sessions"] if level == "session" and paths["sessions"] else paths["testset"]
    unit = "sessions" if level == "session" else "entries"
    return f"{Path(source).name}: {block['total']} {unit} ({block['support']} abnormal)"


def report(args: argparse.Namespace, dataset: str | None, result: Evaluation, paths: dict) -> bool:
    """Print the table, the unknowns and the paper's rows; stage the comparison table when asked for.

    Returns whether the comparison table was written: without a known dataset there is no paper row to compare.
    """
    print(format_table(result))
    print(f"unknown (not binarisable, counted as not abnormal): {len(result.unknowns)}")
    for item in result.unknowns[:SHOWN_UNKNOWNS]:
        print(f"  {item['input'][:50]!r} -> {item['response'][:60]!r}")
    scores = result.to_dict()
    tables = [
        comparison_table(
            dataset,
            level,
            [
                ResultRow(
                    args.method, evaluation_scores(scores, level), "ours", test_set_label(paths, level, scores[level])
                )
            ],
        )
        for level in ("template", "session")
        if dataset and level in scores
    ]
    print("\n".join(tables))
    if args.results_table is not None and tables:
        write_text_atomic(args.results_table, "\n".join(tables))
        return True
    return False


if __name__ == "__main__":
    raise SystemExit(main())
