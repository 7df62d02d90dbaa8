"""Score sample rollouts through stock verl's own reward manager, configured the way model_train.sh does it.

    python -m rationanomaly.reward.verl_run --parquet datasets/bgl_train.parquet \
        --model models/llama-2-7b-chat-hf --ppl_model models/distilgpt2 --out runs/reward_check

For each RL parquet row it builds a few typical rollouts (the reference CoT itself, the same reasoning
with the label flipped, a shortened think, a response without tags), tokenises them with the actor's
tokenizer, and lets verl's reward manager decode and score them with our adapter. The numbers verl
returns are compared with calling the package directly, so a mismatch in the hook (kwargs lost, tags
stripped by the tokenizer) shows up before a GPU hour is spent.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from rationanomaly.io import write_json_atomic, write_text_atomic
from rationanomaly.labels import ABNORMAL, DATA_SOURCE, NORMAL, cot_label
from rationanomaly.paths import REPO_ROOT
from rationanomaly.response import extract_answer, extract_think

ADAPTER = REPO_ROOT / "verl/utils/reward_score/RationAnomaly/__init__.py"
PROMPT_TEXT = "Classify the given log entries."
# A broken hook (kwargs lost, tags stripped) moves a part by >= 0.1, i.e. >= 0.015 scaled (parts stay within
# +-6.67 unless the perplexity term is large); verl scores one text per forward pass and the direct call
# batches, which moves the perplexity by ~1e-6 relative in fp32 and ~2e-4 in bf16 (dtype=auto on a bf16 CPU).
MAX_DIFFERENCE = 1e-3


def compose_reward_config(model_dir: str | Path, reward_kwargs: Mapping[str, object], extra: Sequence[str] = ()):
    """verl's ppo_trainer config with our reward hook and kwargs, composed with verl's own Hydra files."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import verl

    config_dir = str(Path(verl.__file__).parent / "trainer/config")
    kwargs = [f"+reward.custom_reward_function.reward_kwargs.{key}={value}" for key, value in reward_kwargs.items()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(
            config_name="ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={model_dir}",
                f"reward.custom_reward_function.path={ADAPTER}",
                "reward.custom_reward_function.name=compute_score",
                *kwargs,
                *extra,
            ],
        )


def rollouts_as_data_proto(tokenizer, responses: Sequence[str], ground_truths: Sequence[str]):
    """A DataProto shaped like verl's agent-loop output: right-padded response ids plus the parquet columns."""
    import numpy as np
    import torch

    from verl import DataProto

    prompt = tokenizer(PROMPT_TEXT, return_tensors="pt")["input_ids"][0]
    # Llama-2's tokenizer has no pad token; the value never matters, the attention mask hides it
    pad_id = next((token for token in (tokenizer.pad_token_id, tokenizer.eos_token_id) if token is not None), 0)
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in responses]
    width = max(1, *(len(ids) for ids in encoded))
    responses_ids, masks = [], []
    for ids in encoded:
        padded = torch.full((width,), pad_id, dtype=torch.long)
        padded[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask = torch.zeros(len(prompt) + width, dtype=torch.long)
        mask[: len(prompt) + len(ids)] = 1
        responses_ids.append(padded)
        masks.append(mask)
    responses_tensor = torch.stack(responses_ids)
    prompts = prompt.repeat(len(responses), 1)
    input_ids = torch.cat([prompts, responses_tensor], dim=1)
    batch = {
        "prompts": prompts,
        "responses": responses_tensor,
        "input_ids": input_ids,
        "attention_mask": torch.stack(masks),
        "position_ids": torch.arange(input_ids.shape[1]).repeat(len(responses), 1),
    }
    non_tensors = {
        "data_source": np.array([DATA_SOURCE] * len(responses), dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": gt} for gt in ground_truths], dtype=object),
        "extra_info": np.array([{"index": i} for i in range(len(responses))], dtype=object),
    }
    return DataProto.from_dict(tensors=batch, non_tensors=non_tensors)


def sample_rollouts(ground_truth: str) -> dict[str, str]:
    """Typical GRPO rollouts for one ground truth: copy, flipped label, half-length think, and no tags."""
    think, label = extract_think(ground_truth) or "", extract_answer(ground_truth) or NORMAL
    flipped = ABNORMAL if label.lower() == NORMAL else NORMAL
    return {
        "reference_copy": ground_truth,
        "flipped_label": cot_label(think, flipped),
        "half_think": cot_label(think[: len(think) // 2], label),
        "no_tags": f"{think} The answer is {label}.",
    }


def score_through_verl(config, tokenizer, responses: Sequence[str], ground_truths: Sequence[str]) -> list[dict]:
    """Each response scored by verl's reward manager (`run_single`, one trajectory at a time as in training)."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(config, tokenizer)
    data = rollouts_as_data_proto(tokenizer, responses, ground_truths)
    outputs = []
    for row in range(len(responses)):
        out = manager.loop.run_until_complete(manager.run_single(data[row : row + 1]))
        outputs.append({"score": out["reward_score"], **out["reward_extra_info"]})
    return outputs


def mean_by_kind(kinds: Sequence[str], scores: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean of every reward key per rollout kind (what a GRPO group's spread looks like)."""
    grouped: dict[str, list[Mapping[str, float]]] = {}
    for kind, score in zip(kinds, scores, strict=True):
        grouped.setdefault(kind, []).append(score)
    return {kind: {key: sum(s[key] for s in rows) / len(rows) for key in rows[0]} for kind, rows in grouped.items()}


def largest_difference(left: Sequence[Mapping[str, float]], right: Sequence[Mapping[str, float]]) -> float:
    """Largest difference over every key of paired score dicts (verl's path vs the direct call), scaled by
    max(1, |direct|): absolute for the bounded parts, relative for a perplexity term in the hundreds (an
    untrained LM), whose batching noise grows with it."""
    return max(
        (abs(a[key] - b[key]) / max(1.0, abs(b[key])) for a, b in zip(left, right, strict=True) for key in a),
        default=0.0,
    )


def summary_lines(means: Mapping[str, Mapping[str, float]], count: int, difference: float) -> list[str]:
    """A small table of mean rewards per rollout kind, plus the verl-vs-direct check."""
    lines = [
        f"reward      {count} sample rollouts scored by verl's reward manager with our adapter "
        f"(max scaled |verl - direct| = {difference:.1e})",
        "            kind            score  format  answer   think  semantic  length  perplexity",
    ]
    for kind, m in means.items():
        lines.append(
            f"            {kind:<15} {m['score']:6.3f} {m['format']:7.2f} {m['answer']:7.3f} "
            f"{m['think']:7.3f} {m['semantic']:9.3f} {m['length']:7.3f} {m['perplexity']:11.3f}"
        )
    return lines


def run_reward_check(parquet: Path, model: Path, reward_kwargs: Mapping[str, object], out: Path, rows: int = 4) -> dict:
    """Score sample rollouts of the first `rows` parquet rows through verl and directly; write both to `out`."""
    import pandas as pd
    from transformers import AutoTokenizer

    from rationanomaly.reward import score_responses

    frame = pd.read_parquet(parquet).head(rows)
    truths = [row["ground_truth"] for row in frame["reward_model"]]
    kinds, responses, ground_truths = [], [], []
    for truth in truths:
        for kind, response in sample_rollouts(truth).items():
            kinds.append(kind)
            responses.append(response)
            ground_truths.append(truth)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    config = compose_reward_config(model, reward_kwargs)
    through_verl = score_through_verl(config, tokenizer, responses, ground_truths)
    direct = score_responses(responses, ground_truths, **reward_kwargs)
    difference = largest_difference(through_verl, direct)
    means = mean_by_kind(kinds, through_verl)
    result = {
        "parquet": str(parquet),
        "model": str(model),
        "reward_kwargs": dict(reward_kwargs),
        "rollouts": [
            {"kind": k, "response": r, "verl": v, "direct": d}
            for k, r, v, d in zip(kinds, responses, through_verl, direct, strict=True)
        ],
        "mean_by_kind": means,
        "max_difference": difference,
    }
    write_json_atomic(out / "rewards.json", result)
    write_text_atomic(out / "summary.txt", "\n".join(summary_lines(means, len(responses), difference)) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI: score sample rollouts through verl and fail when verl's numbers differ from the package's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parquet", type=Path, default=REPO_ROOT / "datasets" / "bgl_train.parquet")
    parser.add_argument("--model", type=Path, required=True, help="actor model folder (its tokenizer is used)")
    parser.add_argument("--ppl_model", "--ppl-model", default="models/distilgpt2", help="perplexity model or none")
    parser.add_argument("--rows", type=int, default=4, help="parquet rows to build rollouts from")
    parser.add_argument("--device", default="auto", help="reward option device (default auto)")
    parser.add_argument("--dtype", default="auto", help="reward option dtype (default auto)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "reward_check")
    args = parser.parse_args(argv)
    reward_kwargs = {"ppl_model": args.ppl_model, "device": args.device, "dtype": args.dtype}
    result = run_reward_check(args.parquet, args.model, reward_kwargs, args.out, args.rows)
    print((args.out / "summary.txt").read_text(encoding="utf-8"), end="")  # noqa: T201
    if not math.isfinite(result["max_difference"]) or result["max_difference"] > MAX_DIFFERENCE:
        print(f"error: verl's scores differ from the direct call by {result['max_difference']:.3g}")  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
