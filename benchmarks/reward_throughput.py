"""Reward throughput: the reference way (reload DistilGPT-2 per call, one at a time, fp32) vs ours.

    RATIONANOMALY_PUBLIC_DATA=../shared/data python benchmarks/reward_throughput.py --n 512

Scores N responses (default 512 = 32 prompts x 16 rollouts, one GRPO step of the reference run) on a
DistilGPT-2-shaped model with random weights (6 layers, width 768, 12 heads, vocabulary 50,257), built
locally. Think lengths come from the real R-Log rationales when $RATIONANOMALY_PUBLIC_DATA is set, else
from synthetic text of the same length distribution. Every answer is correct, so every response needs
the perplexity model (the worst case). Methods run interleaved, chunk by chunk, so a busy machine slows
all of them alike. Prints responses/s, the ratios, and the perplexity term's deviation from the reference.
The last row is what verl's reward worker does with the default options: concurrent one-sample calls and
dtype=auto (bf16 on a CPU with native bf16 when calibration agrees with fp32, else fp32; printed).
`--no_prefix_cache_rows` adds our batch API with the fixed prefix's key/value cache turned off, side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rationanomaly.paths import public_data_dir
from rationanomaly.response import extract_answer, extract_think
from rationanomaly.reward import compute_reward, parse_reward_kwargs, score_response, score_responses
from rationanomaly.reward.perplexity import load_perplexity_model

PROMPTS, ROLLOUTS = 32, 16
WORDS = (
    "the log entry reports a kernel node error interrupt routine event memory parity check step "
    "indicates normal abnormal hardware failure because value counter register dump so therefore"
).split()


def real_rationales(seed: int) -> list[str] | None:
    """Ground truths from the public R-Log rationales, or None when the data folder is not configured."""
    folder = public_data_dir()
    if folder is None:
        return None
    rows = json.loads((folder / "rlog/AnomalyDetection_with_reason.json").read_text())
    tagged = [row["reasoning"] for row in rows if "<think>" in row["reasoning"] and "</answer>" in row["reasoning"]]
    return random.Random(seed).sample(tagged, PROMPTS)


def synthetic_rationales(seed: int) -> list[str]:
    """Stand-ins with the real think lengths' shape (log-normal, median ~700 characters)."""
    rng = random.Random(seed)
    truths = []
    for _ in range(PROMPTS):
        length = int(min(3700, max(40, rng.lognormvariate(math.log(700), 0.45))))
        words = []
        while sum(len(word) + 1 for word in words) < length:
            words.append(rng.choice(WORDS))
        label = rng.choice(["normal", "abnormal"])
        truths.append(f"<think>{' '.join(words).capitalize()}.</think><answer>{label}</answer>")
    return truths


def rollouts(truths: list[str], seed: int) -> list[tuple[str, str]]:
    """16 responses per prompt: the reference think cut or extended by up to +-50%, answer kept correct."""
    rng = random.Random(seed)
    pairs = []
    for truth in truths:
        think, label = extract_think(truth), extract_answer(truth)
        for _ in range(ROLLOUTS):
            cut = max(1, int(len(think) * rng.uniform(0.5, 1.5)))
            text = (think * 2)[:cut]
            pairs.append((f"<think>{text}</think><answer>{label}</answer>", truth))
    return pairs


def build_model(folder: Path, corpus: list[str], seed: int) -> Path:
    """DistilGPT-2's shape with random weights and a BPE trained on the corpus (about GPT-2's token density)."""
    from rationanomaly.tiny import build_tiny_gpt2, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(folder, corpus=corpus, vocab_size=4096)
    build_tiny_gpt2(folder, seed=seed, n_layer=6, n_embd=768, n_head=12, vocab_size=50257, tokenizer=tokenizer)
    return folder


def reference_perplexity(folder: Path):
    """The reference's calculate_perplexity: load tokenizer and model from disk on every call, fp32, one text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def perplexity_of(text: str) -> float:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder)).to("cpu")
        inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=1024)
        with torch.no_grad():
            return torch.exp(model(**inputs, labels=inputs["input_ids"]).loss).item()

    return perplexity_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=PROMPTS * ROLLOUTS, help="responses to score (default 512)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every method (default 2)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=64, help="responses per interleaved round")
    parser.add_argument("--workers", type=int, default=8, help="threads calling compute_score concurrently")
    parser.add_argument("--model", type=Path, help="an existing perplexity model folder (default: build one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no_prefix_cache_rows", action="store_true", help="also time the batch API with the prefix cache off"
    )
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    truths = real_rationales(args.seed)
    source = "real R-Log rationales" if truths else "synthetic text (RATIONANOMALY_PUBLIC_DATA unset)"
    truths = truths or synthetic_rationales(args.seed)
    pairs = (rollouts(truths, args.seed) * math.ceil(args.n / (PROMPTS * ROLLOUTS)))[: args.n]
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.model or build_model(Path(scratch) / "distilgpt2-random", truths, args.seed)
        started = time.perf_counter()
        results = run(pairs, folder, args)
        wall = time.perf_counter() - started
        report(results, pairs, folder, source, wall, args)
    return 0


def run(pairs, folder: Path, args) -> dict[str, dict]:
    """Score every chunk with every method in turn; collect seconds and the perplexity terms."""
    methods = {
        "reference (reload per call, fp32)": lambda chunk: reference_way(chunk, folder),
        "ours fp32, batch API": lambda chunk: ours_batch(chunk, folder, "float32", args.batch_size),
        "ours bf16, batch API": lambda chunk: ours_batch(chunk, folder, "bfloat16", args.batch_size),
        **(
            {
                "ours fp32, batch, no prefix cache": lambda chunk: ours_batch(
                    chunk, folder, "float32", args.batch_size, prefix_cache=False
                ),
                "ours bf16, batch, no prefix cache": lambda chunk: ours_batch(
                    chunk, folder, "bfloat16", args.batch_size, prefix_cache=False
                ),
            }
            if args.no_prefix_cache_rows
            else {}
        ),
        f"ours default (auto), {args.workers} callers": lambda chunk: ours_concurrent(
            chunk, folder, "auto", args.batch_size, args.workers
        ),
    }
    results = {name: {"seconds": 0.0, "perplexity": []} for name in methods}
    for start in range(0, len(pairs), args.chunk):
        chunk = pairs[start : start + args.chunk]
        for name, method in methods.items():
            began = time.perf_counter()
            parts = method(chunk)
            results[name]["seconds"] += time.perf_counter() - began
            results[name]["perplexity"] += [part["perplexity"] for part in parts]
    return results


def reference_way(chunk, folder: Path) -> list[dict]:
    config, perplexity_of = parse_reward_kwargs({"ppl_model": str(folder)}), reference_perplexity(folder)
    return [score_response(response, truth, config, perplexity_of) for response, truth in chunk]


def ours_batch(chunk, folder: Path, dtype: str, batch_size: int, prefix_cache: bool = True) -> list[dict]:
    """`prefix_cache=False` unsets the process-wide model's prefix state for this call (every text: full pass)."""
    kwargs = {"ppl_model": str(folder), "device": "cpu", "dtype": dtype, "batch_size": batch_size}
    model = load_perplexity_model(folder, "cpu", dtype)
    saved, model.prefix = model.prefix, model.prefix if prefix_cache else None
    try:
        return score_responses([response for response, _ in chunk], [truth for _, truth in chunk], **kwargs)
    finally:
        model.prefix = saved


def ours_concurrent(chunk, folder: Path, dtype: str, batch_size: int, workers: int) -> list[dict]:
    """verl's reward worker calls compute_score one sample at a time from a thread pool."""
    kwargs = {"ppl_model": str(folder), "device": "cpu", "dtype": dtype, "batch_size": batch_size}
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda pair: compute_reward(pair[0], pair[1], **kwargs), chunk))


def report(results: dict, pairs, folder: Path, source: str, wall: float, args) -> None:
    from transformers import AutoTokenizer

    from rationanomaly.reward.components import PPL_PREFIX, perplexity_text

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    thinks = [extract_think(response) for response, _ in pairs]
    tokens = [len(tokenizer(perplexity_text(think))["input_ids"]) for think in thinks]
    print(
        f"{len(pairs)} responses from {source}; think {sum(map(len, thinks)) / len(thinks):.0f} chars, "
        f"{sum(tokens) / len(tokens):.0f} tokens on average (max {max(tokens)}, of which the fixed prefix "
        f"{len(tokenizer(PPL_PREFIX)['input_ids'])}); torch threads {args.threads}, "
        f"batch_size {args.batch_size}; whole run {wall:.0f} s"
    )
    auto = load_perplexity_model(folder, "cpu", "auto")
    measured = auto.calibrated_deviation
    note = "" if measured is None else f" ({measured:.2g} from fp32 on the calibration texts)"
    print(f"dtype=auto on this CPU: {auto.dtype}{note}")
    reference = results["reference (reload per call, fp32)"]
    base_rate = len(pairs) / reference["seconds"]
    print(f"{'method':<36} {'resp/s':>8} {'x ref':>6} {'max |dterm|':>12} {'max rel dterm':>14}")
    for name, result in results.items():
        rate = len(pairs) / result["seconds"]
        pairs_terms = list(zip(result["perplexity"], reference["perplexity"], strict=True))
        absolute = max(abs(ours - ref) for ours, ref in pairs_terms)
        relative = max(abs(ours - ref) / max(abs(ref), 1e-12) for ours, ref in pairs_terms)
        print(f"{name:<36} {rate:8.2f} {rate / base_rate:6.2f} {absolute:12.3g} {relative:14.3g}")


if __name__ == "__main__":
    raise SystemExit(main())
