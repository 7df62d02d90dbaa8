"""python datasets/parquet_builder.py --input runs/cot/train_cot.json --output_dir runs/parquet

Build verl 0.9.1 parquet from reference-layout training samples whose labels are CoT targets
(`<think>..</think><answer>..</answer>`, as written by datasets/cot_distill.py):
- RL (GRPO): `bgl_train.parquet` (the reference launch command's name);
- SFT: `sft_train.parquet` with a `messages` column;
- with --validation_ratio > 0 also `bgl_validation.parquet` and `sft_val.parquet`, held out of training;
- `parquet_meta.json`: seed, validation ratio, counts and inputs.
By default every sample trains (the reference run never validates); hold out a share only for a run with
validation on (TEST_FREQ > 0). Without --output_dir the files land in datasets/ (where model_train.sh looks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rationanomaly.cli import make_parser, run_command
from rationanomaly.io import check_outputs, output_set, write_json_atomic
from rationanomaly.parquet import SFT_SYSTEM_LLAMA2, SFT_SYSTEM_MODES, build_parquet
from rationanomaly.paths import REPO_ROOT
from rationanomaly.prompts import load_system_prompt
from rationanomaly.samples import read_samples

OUTPUT_NAMES = {
    "rl_train": "bgl_train.parquet",
    "rl_validation": "bgl_validation.parquet",
    "sft_train": "sft_train.parquet",
    "sft_validation": "sft_val.parquet",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; multi-word flags accept both snake_case and kebab-case."""
    parser = make_parser(__doc__.split("\n\n")[1])
    parser.add_argument(
        "--input",
        type=Path,
        default=REPO_ROOT / "datasets" / "trainsets" / "train_cot.json",
        help="training samples (reference layout, labels = CoT targets)",
    )
    parser.add_argument(
        "--output_dir",
        "--output-dir",
        type=Path,
        default=REPO_ROOT / "datasets",
        help="folder for the parquet files and parquet_meta.json",
    )
    parser.add_argument(
        "--system_prompt",
        "--system-prompt",
        type=Path,
        default=None,
        help="file holding the system prompt (default: the package's CoT prompt)",
    )
    parser.add_argument(
        "--validation_ratio",
        "--validation-ratio",
        type=float,
        default=0.0,
        help="share of each label held out of training for validation (seeded, stratified); "
        "0 (default): every sample trains and no validation file is written",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: 0)")
    parser.add_argument(
        "--sft_system",
        "--sft-system",
        choices=SFT_SYSTEM_MODES,
        default=SFT_SYSTEM_LLAMA2,
        help="how SFT rows carry the system prompt: llama2 = folded into the user turn as Llama-2's "
        "<<SYS>> block (works with verl's per-turn check), turn = a system message (ChatML-style "
        "templates), none = no system prompt",
    )
    args = parser.parse_args(argv)
    if not args.input.is_file():
        parser.error(
            f"--input {args.input} does not exist; build it with `python datasets/cot_distill.py ... "
            f"--output_dir {args.input.parent}` (it writes train_cot.json), or pass --input"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    """Build the four parquet files and their metadata as one set (all of this run or none), print counts."""
    outputs = {key: args.output_dir / name for key, name in OUTPUT_NAMES.items()}
    meta_path = args.output_dir / "parquet_meta.json"
    check_outputs([*outputs.values(), meta_path], [args.input, args.system_prompt])
    with output_set():
        meta = build_parquet(
            read_samples(args.input),
            outputs,
            load_system_prompt("cot", args.system_prompt),
            args.validation_ratio,
            args.seed,
            args.sft_system,
        )
        meta["input"] = str(args.input)
        meta["system_prompt_file"] = None if args.system_prompt is None else str(args.system_prompt)
        write_json_atomic(meta_path, meta)
    print(f"{meta['samples']} samples from {args.input} (seed {args.seed}, validation ratio {args.validation_ratio})")
    print(f"  train      {meta['train']:5d} rows ({meta['train_abnormal']} abnormal)")
    print(f"  validation {meta['validation']:5d} rows ({meta['validation_abnormal']} abnormal)")
    for key, path in meta["outputs"].items():
        print(f"  {key:15s} -> {path}")
    stale = [path for key, path in outputs.items() if key not in meta["outputs"] and path.exists()]
    for path in stale:  # the pre-flight refuses it if validation is turned on with it
        print(f"  note: {path} is left from an earlier build; no validation split was made this time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
