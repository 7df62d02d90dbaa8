"""python datasets/cot_distill.py --input rationanomaly/sample_data/bgl_templates.csv \
--patch rationanomaly/sample_data/anomaly_patch.json --rationales rationanomaly/sample_data/rationales.json \
--output_dir runs/cot

Attach chain-of-thought to training templates: join rationale files (R-Log layout) to the templates,
check each rationale against the template's rectified label, and, with --base_url and --model, distil
the missing ones from any OpenAI-compatible endpoint (API key from $OPENAI_API_KEY) first. Writes to
--output_dir:
- train_cot.json: training samples (reference layout, label = <think>..</think><answer>..</answer>);
- rationale_issues.json: every rejected (or explicitly kept) rationale with its reason;
- missing.json: templates still without a usable rationale (the input of distillation);
- distilled.json + distill_cache.jsonl: distilled rationales (R-Log layout) and the resumable cache;
- cot_report.json: counts, inputs and options.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rationanomaly.cli import (
    IncompleteRun,
    make_parser,
    non_empty,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
)
from rationanomaly.distill import API_KEY_ENV, DistillConfig, DistillError, distill, failures_summary
from rationanomaly.io import check_outputs, output_set, write_json_atomic
from rationanomaly.patch import EXACT, MATCH_MODES
from rationanomaly.rationales import (
    issues_as_records,
    join_rationales,
    read_rationales,
    read_templates,
    rectify_templates,
    write_rationales,
)
from rationanomaly.samples import write_samples

OUTPUT_NAMES = ("train_cot.json", "missing.json", "rationale_issues.json", "cot_report.json")
DISTILLED_NAME, CACHE_NAME = "distilled.json", "distill_cache.jsonl"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; multi-word flags accept both snake_case and kebab-case."""
    parser = make_parser(__doc__.split("\n\n")[1])
    parser.add_argument(
        "--input",
        type=Path,
        nargs="+",
        required=True,
        help="rectified template sheets (.csv/.xlsx) or sample JSON with word labels",
    )
    parser.add_argument(
        "--patch",
        type=Path,
        default=None,
        help="expert patch applied to the templates in memory (skip if --input is already rectified)",
    )
    parser.add_argument("--match", choices=MATCH_MODES, default=EXACT, help="patch matching (see anomaly_patch.py)")
    parser.add_argument(
        "--rationales",
        type=Path,
        nargs="*",
        default=[],
        help="rationale files in R-Log layout (instruction, input, label, reasoning)",
    )
    parser.add_argument("--output_dir", "--output-dir", type=Path, required=True, help="folder for the outputs")
    parser.add_argument(
        "--keep_conflicts",
        "--keep-conflicts",
        action="store_true",
        help="keep rationales that argue for the other label, answer rewritten to the rectified "
        "label (flagged in the report); by default they are excluded",
    )
    distil = parser.add_argument_group("distillation (only with --base_url and --model)")
    distil.add_argument(
        "--base_url",
        "--base-url",
        type=non_empty,
        default=None,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vllm serve)",
    )
    distil.add_argument("--model", type=non_empty, default=None, help="model name the endpoint serves")
    distil.add_argument("--cache", type=Path, default=None, help=f"JSONL cache (default OUTPUT_DIR/{CACHE_NAME})")
    distil.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight")
    distil.add_argument("--retries", type=non_negative_int, default=5, help="retries per request on 429/5xx/timeouts")
    distil.add_argument(
        "--invalid_retries",
        "--invalid-retries",
        type=non_negative_int,
        default=3,
        help="extra requests when an answer fails the rationale checks",
    )
    distil.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    distil.add_argument("--max_tokens", "--max-tokens", type=positive_int, default=1024, help="most tokens per reply")
    distil.add_argument("--timeout", type=positive_float, default=120.0, help="seconds per request")
    distil.add_argument("--seed", type=int, default=0, help="sampling seed sent to the endpoint")
    args = parser.parse_args(argv)
    if (args.base_url is None) != (args.model is None):
        parser.error("distillation needs both --base_url and --model")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    """Join (and distil), write the outputs and print the summary; exit 1 when a distillation failed."""
    out = args.output_dir
    distilling = args.base_url is not None
    cache = args.cache or out / CACHE_NAME
    outputs = [out / name for name in OUTPUT_NAMES] + ([out / DISTILLED_NAME, cache] if distilling else [])
    check_outputs(outputs, [*args.input, args.patch, *args.rationales])
    templates = [sample for path in args.input for sample in read_templates(path)]
    if args.patch is not None:
        templates = rectify_templates(templates, args.patch, args.match)
    rationales = [rationale for path in args.rationales for rationale in read_rationales(path)]
    result = join_rationales(templates, rationales, args.keep_conflicts)
    distilled = None
    if distilling and result.missing:
        config = DistillConfig(
            args.base_url,
            args.model,
            os.environ.get(API_KEY_ENV) or None,
            args.temperature,
            args.max_tokens,
            args.timeout,
            args.concurrency,
            args.retries,
            args.invalid_retries,
            seed=args.seed,
        )
        try:
            distilled = distill(result.missing, config, cache)
        except DistillError as error:
            raise DistillError(
                f"{error}; finished templates are kept in {cache}: fix the cause and rerun for the rest"
            ) from error
        result = join_rationales(templates, [*rationales, *distilled.rationales], args.keep_conflicts)
    report = result.report()
    report["inputs"] = [str(p) for p in args.input]
    report["patch"] = None if args.patch is None else {"file": str(args.patch), "match": args.match}
    report["rationale_files"] = [str(p) for p in args.rationales]
    if distilled is not None:
        report["distillation"] = {
            "base_url": args.base_url,
            "model": args.model,
            "seed": args.seed,
            "requested": distilled.requested,
            "cached": distilled.cached,
            "distilled": len(distilled.rationales),
            "failed": len(distilled.failures),
            "failures": failures_summary(distilled.failures),
        }
    with output_set():
        if distilled is not None:
            write_rationales(out / DISTILLED_NAME, distilled.rationales)
        write_samples(out / "train_cot.json", result.samples)
        write_samples(out / "missing.json", result.missing)
        write_json_atomic(out / "rationale_issues.json", issues_as_records(result.issues))
        write_json_atomic(out / "cot_report.json", report)
    print(
        f"{report['templates']} templates, {report['rationales']} rationales "
        f"({report['templates_with_rationale']} templates have one)"
    )
    print(
        f"  joined  {report['joined']:5d} training samples ({report['joined_abnormal']} abnormal) -> "
        f"{out / 'train_cot.json'}"
    )
    print(f"  issues  {report['issues']:5d} {report['by_reason']} -> {out / 'rationale_issues.json'}")
    kept = f", {report['kept_conflicts']} kept with --keep-conflicts" if args.keep_conflicts else ", excluded"
    print(
        f"  conflicts with the rectified label: {report['conflicts']} ({report['conflicts_normal_to_abnormal']} "
        f"rectified abnormal, {report['conflicts_abnormal_to_normal']} rectified normal{kept})"
    )
    print(f"  missing {report['missing']:5d} templates without a usable rationale -> {out / 'missing.json'}")
    if distilled is not None:
        d = report["distillation"]
        print(
            f"  distilled {d['distilled']} ({d['requested']} requested, {d['cached']} from cache), "
            f"failed {d['failed']} {d['failures']}"
        )
        if d["failed"]:
            raise IncompleteRun(
                f"{d['failed']} of {d['failed'] + d['distilled']} templates could not be distilled "
                f"({', '.join(f'{k}: {v}' for k, v in d['failures'].items())}); they are listed in "
                f"{out / 'missing.json'} and the cache: rerun the same command to ask again"
            )
    if not result.samples:
        raise IncompleteRun(
            f"no training sample was joined ({report['templates']} templates, "
            f"{report['rationales']} rationales); pass --rationales that cover the templates or "
            "distil them with --base_url and --model"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
