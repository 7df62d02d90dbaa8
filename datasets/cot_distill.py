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

from rationanomaly.distill import API_KEY_ENV, DistillConfig, DistillError, distill, failures_summary
from rationanomaly.io import write_json_atomic
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; multi-word flags accept both snake_case and kebab-case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--input", type=Path, nargs="+", required=True,
                        help="rectified template sheets (.csv/.xlsx) or sample JSON with word labels")
    parser.add_argument("--patch", type=Path, default=None,
                        help="expert patch applied to the templates in memory (skip if --input is already rectified)")
    parser.add_argument("--match", choices=MATCH_MODES, default=EXACT, help="patch matching (see anomaly_patch.py)")
    parser.add_argument("--rationales", type=Path, nargs="*", default=[],
                        help="rationale files in R-Log layout (instruction, input, label, reasoning)")
    parser.add_argument("--output_dir", "--output-dir", type=Path, required=True)
    parser.add_argument("--keep_conflicts", "--keep-conflicts", action="store_true",
                        help="keep rationales that argue for the other label, answer rewritten to the rectified "
                             "label (flagged in the report); by default they are excluded")
    distil = parser.add_argument_group("distillation (only with --base_url and --model)")
    distil.add_argument("--base_url", "--base-url", default=None,
                        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vllm serve)")
    distil.add_argument("--model", default=None, help="model name the endpoint serves")
    distil.add_argument("--cache", type=Path, default=None, help="JSONL cache (default OUTPUT_DIR/distill_cache.jsonl)")
    distil.add_argument("--concurrency", type=int, default=8)
    distil.add_argument("--retries", type=int, default=5, help="retries per request on 429/5xx/timeouts")
    distil.add_argument("--invalid_retries", "--invalid-retries", type=int, default=3,
                        help="extra requests when an answer fails the rationale checks")
    distil.add_argument("--temperature", type=float, default=0.7)
    distil.add_argument("--max_tokens", "--max-tokens", type=int, default=1024)
    distil.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    distil.add_argument("--seed", type=int, default=0, help="sampling seed sent to the endpoint")
    args = parser.parse_args(argv)
    if (args.base_url is None) != (args.model is None):
        parser.error("distillation needs both --base_url and --model")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except DistillError as error:
        print(f"error: {error}\n  finished templates are kept in the cache; fix the cause and rerun for the rest")
        return 2
    except (FileNotFoundError, ValueError) as error:  # the data errors (format, label) are ValueErrors
        print(f"error: {error}")
        return 2


def run(args: argparse.Namespace) -> int:
    """Join (and distil), write the outputs and print the summary."""
    out = args.output_dir
    templates = [sample for path in args.input for sample in read_templates(path)]
    if args.patch is not None:
        templates = rectify_templates(templates, args.patch, args.match)
    rationales = [rationale for path in args.rationales for rationale in read_rationales(path)]
    result = join_rationales(templates, rationales, args.keep_conflicts)
    distilled = None
    if args.base_url is not None and result.missing:
        config = DistillConfig(args.base_url, args.model, os.environ.get(API_KEY_ENV) or None, args.temperature,
                               args.max_tokens, args.timeout, args.concurrency, args.retries, args.invalid_retries,
                               seed=args.seed)
        distilled = distill(result.missing, config, args.cache or out / "distill_cache.jsonl")
        write_rationales(out / "distilled.json", distilled.rationales)
        result = join_rationales(templates, [*rationales, *distilled.rationales], args.keep_conflicts)
    report = result.report()
    report["inputs"] = [str(p) for p in args.input]
    report["patch"] = None if args.patch is None else {"file": str(args.patch), "match": args.match}
    report["rationale_files"] = [str(p) for p in args.rationales]
    if distilled is not None:
        report["distillation"] = {"base_url": args.base_url, "model": args.model, "seed": args.seed,
                                  "requested": distilled.requested, "cached": distilled.cached,
                                  "distilled": len(distilled.rationales), "failed": len(distilled.failures),
                                  "failures": failures_summary(distilled.failures)}
    write_samples(out / "train_cot.json", result.samples)
    write_samples(out / "missing.json", result.missing)
    write_json_atomic(out / "rationale_issues.json", issues_as_records(result.issues))
    write_json_atomic(out / "cot_report.json", report)
    print(f"{report['templates']} templates, {report['rationales']} rationales "
          f"({report['templates_with_rationale']} templates have one)")
    print(f"  joined  {report['joined']:5d} training samples ({report['joined_abnormal']} abnormal) -> "
          f"{out / 'train_cot.json'}")
    print(f"  issues  {report['issues']:5d} {report['by_reason']} -> {out / 'rationale_issues.json'}")
    kept = f", {report['kept_conflicts']} kept with --keep-conflicts" if args.keep_conflicts else ", excluded"
    print(f"  conflicts with the rectified label: {report['conflicts']} ({report['conflicts_normal_to_abnormal']} "
          f"rectified abnormal, {report['conflicts_abnormal_to_normal']} rectified normal{kept})")
    print(f"  missing {report['missing']:5d} templates without a usable rationale -> {out / 'missing.json'}")
    if distilled is not None:
        d = report["distillation"]
        print(f"  distilled {d['distilled']} ({d['requested']} requested, {d['cached']} from cache), "
              f"failed {d['failed']} {d['failures']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
