"""Answer every item of a test set with a model (vLLM, transformers, an OpenAI-compatible endpoint) or the rules.

    python validation/model_predict.py --help

Reference form (numbers from validation/model_testset_list.json; writes datasets/results/original_vllm_output/):
    python validation/model_predict.py -m 2 -t 0 -c cot
Explicit form:
    python validation/model_predict.py --model models/RationAnomaly --testset datasets/testsets/BGL_test.json \
        --mode cot --output predictions.json --backend vllm
Keyword baseline (no model):
    python validation/model_predict.py --backend rules --testset datasets/testsets/BGL_test.json --output rules.json
A rerun with the same --output continues after the items already saved.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rationanomaly.cli import fraction, make_parser, non_empty, positive_int, run_command
from rationanomaly.predict import BACKENDS, SamplingConfig, predict_file
from rationanomaly.predict.backends import MAX_MODEL_LEN, MAX_NEW_TOKENS, TEMPERATURE, TOP_P
from rationanomaly.predict.catalog import (
    DEFAULT_CATALOG,
    default_output,
    load_catalog,
    reference_ids,
    results_dir,
    select,
)
from rationanomaly.prompts import SYSTEM_PROMPTS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Reference flags (-m, -t, -c) and explicit ones on top."""
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "-m",
        "--model",
        type=non_empty,
        help="model folder (an endpoint's model name for openai), or a catalogue number with -t NUMBER",
    )
    parser.add_argument(
        "-t", "--testset", required=True, help="test set JSON (instruction, input, label) or a catalogue number"
    )
    parser.add_argument(
        "-c",
        "--conversation",
        "--mode",
        dest="mode",
        default="cot",
        choices=sorted(SYSTEM_PROMPTS),
        help="prompt mode: cot (think/answer), log (rules only), default (no system prompt)",
    )
    parser.add_argument(
        "--prompt_file", "--prompt-file", type=Path, help="system prompt file replacing the mode's prompt"
    )
    parser.add_argument("--output", type=Path, help="predictions JSON (default: the reference's results path)")
    parser.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="auto = vllm where vLLM and a GPU exist, else transformers"
    )
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="numbered models and test sets")
    parser.add_argument(
        "--batch_size",
        "--batch-size",
        type=positive_int,
        help="items per generate call (default per backend: vllm 256, transformers 8, openai 8, rules 256)",
    )
    parser.add_argument(
        "--save_every", "--save-every", type=positive_int, default=100, help="save after at least this many new items"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (item i uses seed + i)")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE, help="sampling temperature (reference)")
    parser.add_argument("--top_p", "--top-p", type=fraction(low_open=True), default=TOP_P, help="nucleus (reference)")
    parser.add_argument(
        "--max_new_tokens", "--max-new-tokens", type=positive_int, default=MAX_NEW_TOKENS, help="tokens per answer"
    )
    parser.add_argument(
        "--max_model_len", "--max-model-len", type=positive_int, default=MAX_MODEL_LEN, help="prompt + answer tokens"
    )
    parser.add_argument(
        "--tensor_parallel_size", "--tensor-parallel-size", type=positive_int, default=1, help="vllm: GPUs per model"
    )
    parser.add_argument(
        "--gpu_memory_utilization",
        "--gpu-memory-utilization",
        type=fraction(low_open=True),
        help="vllm: fraction of GPU memory (default 0.9)",
    )
    parser.add_argument(
        "--trust_remote_code", "--trust-remote-code", action="store_true", help="vllm: run the model folder's own code"
    )
    parser.add_argument(
        "--enforce_eager",
        "--enforce-eager",
        action="store_true",
        help="vllm: no torch.compile, no CUDA graphs (starts sooner, generates slower: for small test sets)",
    )
    parser.add_argument(
        "--dtype", choices=("auto", "bfloat16", "float16", "float32"), help="model weights' dtype (default auto)"
    )
    parser.add_argument("--device", help="transformers: cpu or cuda (default: cuda when available)")
    parser.add_argument("--base_url", "--base-url", help="openai: endpoint, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--concurrency", type=positive_int, help="openai: requests in flight (default 8)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Resolve the model and test set, predict (resuming), print a one-screen summary."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return run_command(lambda: predict(args), args.debug)


def predict(args: argparse.Namespace) -> int:
    """The command's body: errors propagate to run_command, which prints one line."""
    sampling = SamplingConfig(args.temperature, args.top_p, args.max_new_tokens, args.max_model_len, args.seed)
    catalog = load_catalog(args.catalog)
    ids = reference_ids(args.model, args.testset)
    if ids is not None:
        chosen = select(catalog, *ids)
        if not chosen.testset_path.is_file():
            raise FileNotFoundError(
                f"test set {chosen.testset} ({chosen.testset_path}) not found: copy the one template_split.py "
                f"wrote there (e.g. runs/data/split/{chosen.testset}_test.json) or edit testset_paths in "
                f"{args.catalog}"
            )
        model, testset, output = chosen.model_path, chosen.testset_path, args.output or chosen.predictions_path
        print(f"Running inference by {chosen.model} on {chosen.testset} ...")
    else:
        model, testset = args.model, Path(args.testset)
        output = args.output or default_output(results_dir(catalog), testset, model)
    run = predict_file(
        testset,
        output,
        model=model,
        backend=args.backend,
        mode=args.mode,
        prompt_file=args.prompt_file,
        sampling=sampling,
        batch_size=args.batch_size,
        save_every=args.save_every,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        trust_remote_code=args.trust_remote_code,
        enforce_eager=args.enforce_eager,
        dtype=args.dtype,
        device=args.device,
        base_url=args.base_url,
        concurrency=args.concurrency,
    )
    print(f"predictions: {run.output}")
    print(
        f"items: {run.total} ({run.resumed} resumed, {run.generated} generated) in {run.seconds:.1f} s "
        f"= {run.items_per_second:.2f} items/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
