"""Loss aggregation: verl 0.9.1's `seq-mean-token-mean` weighs responses as the reference fork's `token-mean` did.

The reference run (a verl ~0.5 fork) took micro-batches of one response: `token-mean` averaged that
response's token losses, and the fork divided each micro-batch loss by the number of micro-batches
(gradient accumulation) before data-parallel averaging, so every response of a mini-batch carried the
same weight. verl 0.9.1's `token-mean` divides by the tokens of the whole mini-batch instead, so a
response weighs by its length. These tests run verl's own `ppo_loss` (workers/utils/losses.py) with the
global numbers verl's FSDP engine hands it (workers/engine/fsdp/transformer_impl.py
`forward_backward_batch`: batch_num_tokens summed over data-parallel ranks, dp_size;
workers/engine_workers.py / trainer/ppo/v1/trainer_base.py: global_batch_size = ppo_mini_batch_size x n),
accumulate the micro-batch gradients as `loss.backward()` does, average over ranks as FSDP does, and read
the weight of each response token off the gradient. With old log-probs equal to the current ones the PPO
ratio is 1, so d(policy loss)/d(log-prob of a token) = -advantage x (that token's weight).
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.workers.config import FSDPActorConfig
from verl.workers.utils.losses import ppo_loss

from verl.utils import tensordict_utils as tu

PROMPT_TOKENS = 1
REFERENCE_MODE = "seq-mean-token-mean"  # what model_train.sh passes (LOSS_AGG_MODE)


def actor_config(mode: str, kl: bool) -> FSDPActorConfig:
    """An actor config with only the loss terms under test switched on."""
    return FSDPActorConfig(
        strategy="fsdp",
        ppo_mini_batch_size=1,
        ppo_micro_batch_size_per_gpu=1,
        rollout_n=1,
        loss_agg_mode=mode,
        use_kl_loss=kl,
        kl_loss_coef=1.0,
        kl_loss_type="kl",
    )


def micro_batch(lengths: list[int], width: int, advantage: float) -> tuple[TensorDict, torch.Tensor]:
    """Padded rollout tensors for responses of `lengths` tokens, and the flat log-probs the model would output."""
    n = len(lengths)
    response_mask = torch.zeros(n, width)
    for row, length in enumerate(lengths):
        response_mask[row, :length] = 1
    data = TensorDict(
        {
            "prompts": torch.ones(n, PROMPT_TOKENS, dtype=torch.long),
            "responses": torch.ones(n, width, dtype=torch.long),
            "attention_mask": torch.cat([torch.ones(n, PROMPT_TOKENS), response_mask], dim=1).long(),
            "response_mask": response_mask,
            "old_log_probs": torch.zeros(n, width),
            "advantages": torch.full((n, width), advantage),
            "ref_log_prob": torch.zeros(n, width),
        },
        batch_size=n,
    )
    log_probs = torch.zeros(sum(PROMPT_TOKENS + length for length in lengths), requires_grad=True)
    return data, log_probs


def response_token_grads(log_probs: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """The gradient on each response's tokens (the flat output holds prompt and response per sequence;
    the log-prob of response token t sits one position left of it, as verl's no_padding_2_padding reads it)."""
    grads, offset = [], 0
    for length in lengths:
        end = offset + PROMPT_TOKENS + length
        grads.append(log_probs.grad[end - length - 1 : end - 1].clone())
        offset = end
    return grads


def verl_weights(mode: str, ranks: list[list[list[int]]], kl: bool = False) -> list[torch.Tensor]:
    """Per-token weights verl 0.9.1 gives each response of one mini-batch.

    `ranks[r]` lists rank r's micro-batches, each a list of response lengths. Every micro-batch loss gets the
    mini-batch's global token count, response count and dp size, as verl's FSDP engine passes them; the
    micro-batch gradients add up (gradient accumulation) and FSDP averages them over the ranks.
    """
    lengths = [length for rank in ranks for micro in rank for length in micro]
    dp_size, width = len(ranks), max(lengths)
    config = actor_config(mode, kl)
    weights = []
    for rank in ranks:
        for micro in rank:
            data, log_probs = micro_batch(micro, width, advantage=0.0 if kl else 1.0)
            tu.assign_non_tensor(data, dp_size=dp_size, batch_num_tokens=sum(lengths), global_batch_size=len(lengths))
            loss, _ = ppo_loss(config, {"log_probs": log_probs}, data)
            loss.backward()
            sign = 1.0 if kl else -1.0  # d(kl)/d(log-prob) = +weight; d(policy loss) = -advantage x weight
            weights += [sign * grad / dp_size for grad in response_token_grads(log_probs, micro)]
    return weights


def reference_weights(lengths: list[int], dp_size: int) -> list[torch.Tensor]:
    """Per-token weights of the reference fork: token-mean over a one-response micro-batch (verl's own agg_loss
    with no global numbers = the micro-batch's own tokens), divided by the micro-batches per rank, averaged over
    ranks."""
    accumulation = len(lengths) // dp_size
    weights = []
    for length in lengths:
        token_losses = torch.zeros(1, length, requires_grad=True)
        loss = agg_loss(token_losses, torch.ones(1, length), "token-mean") / accumulation
        loss.backward()
        weights.append(token_losses.grad[0] / dp_size)
    return weights


def per_response(weights: list[torch.Tensor]) -> list[float]:
    return [round(float(w.sum()), 6) for w in weights]


# two responses of 2 and 6 tokens, one per micro-batch on one GPU: the case
TWO = [[[2], [6]]]


def test_verl_token_mean_weighs_responses_by_their_length():
    assert per_response(verl_weights("token-mean", TWO)) == [0.25, 0.75]  # 2/8 and 6/8 of the mini-batch


def test_verl_seq_mean_token_mean_weighs_each_response_the_same():
    assert per_response(verl_weights(REFERENCE_MODE, TWO)) == [0.5, 0.5]


def test_reference_fork_token_mean_weighs_each_response_the_same():
    assert per_response(reference_weights([2, 6], dp_size=1)) == [0.5, 0.5]


@pytest.mark.parametrize(
    "ranks",
    [
        [[[2], [6]]],  # 1 GPU, micro-batch 1
        [[[2]], [[6]]],  # 2 GPUs, one response each
        [[[2], [6]], [[3], [9]]],  # 2 GPUs, 2 micro-batches each (gradient accumulation)
        [[[2, 6]], [[3, 9]]],  # 2 GPUs, micro-batch 2: the split does not change the weights
        [[[2], [6], [3], [9]]],  # 1 GPU, 4 micro-batches
    ],
    ids=["1gpu", "2gpu", "2gpu-accumulate", "2gpu-micro2", "1gpu-accumulate4"],
)
@pytest.mark.parametrize("kl", [False, True], ids=["policy", "kl"])
def test_seq_mean_token_mean_gives_the_reference_token_weights_over_ranks_and_accumulation(ranks, kl):
    lengths = [length for rank in ranks for micro in rank for length in micro]
    ours = verl_weights(REFERENCE_MODE, ranks, kl)
    reference = reference_weights(lengths, dp_size=len(ranks))
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # float32 rounding only
    assert sum(per_response(ours)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kl", [False, True], ids=["policy", "kl"])
def test_token_mean_differs_from_the_reference_when_lengths_differ(kl):
    ours = per_response(verl_weights("token-mean", [[[2], [6]], [[3], [9]]], kl))
    assert ours == pytest.approx([2 / 20, 6 / 20, 3 / 20, 9 / 20], abs=1e-6)  # length / all tokens
    assert ours != per_response(reference_weights([2, 6, 3, 9], dp_size=2))
