"""The position-aware reward (hand-computed cases, reduction to LogGPT's +-1, monotonicity, bounds, fuzz) and the
Plackett-Luce pieces the PPO step relies on."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rationanomaly.nextkey.reward import (
    LOGGPT_REWARD,
    RewardParams,
    gumbel_top_k,
    list_ranks,
    miss_ramp,
    plackett_luce_log_prob,
    rank_credit,
    relative_positions,
    reward_values,
    step_reward,
    step_rewards,
)

PROPOSED = RewardParams()  # alpha = beta = 1, lambda = 3, kappa = 1

params_strategy = st.builds(
    RewardParams, alpha=st.floats(0, 5), beta=st.floats(0, 5), decay=st.floats(0, 10), kappa=st.floats(0, 5)
)
u_strategy = st.floats(0, 1)
k_strategy = st.integers(1, 700)


@pytest.mark.parametrize(
    ("rank", "u", "top_k", "expected"),
    [
        (1, 0.0, 7, 2.0),  # rank 1 at the first position: (1 + alpha) * 1
        (7, 0.0, 7, 2.0 * math.exp(-1.0)),  # rank K earns exp(-kappa) of it
        (4, 0.0, 7, 2.0 * math.exp(-0.5)),  # half-way in rank: exp(-kappa * 3 / 6)
        (1, 1.0, 7, 1.0 + math.exp(-3.0)),  # last position: the bonus has decayed to alpha * e^-3
        (8, 0.0, 7, -1.0),  # a miss at the first position costs 1
        (None, 0.0, 7, -1.0),  # a key absent from the list is a miss
        (8, 1.0, 7, -2.0),  # a miss at the end costs 1 + beta (the ramp reaches 1)
        (100, 0.5, 7, -(1.0 + (1 - math.exp(-1.5)) / (1 - math.exp(-3.0)))),  # ramp at u = 0.5
        (1, 0.3, 1, 1.0 + math.exp(-0.9)),  # K = 1: rank credit is 1
    ],
)
def test_step_reward_matches_hand_computed_values(rank, u, top_k, expected):
    assert step_reward(rank, u, top_k, PROPOSED) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(rank=st.integers(1, 1000), u=u_strategy, top_k=k_strategy, decay=st.floats(0, 10))
def test_parameters_at_zero_reduce_to_loggpts_plus_minus_one(rank, u, top_k, decay):
    # alpha = beta = kappa = 0 leaves only hit or miss, whatever lambda is
    params = RewardParams(alpha=0.0, beta=0.0, decay=decay, kappa=0.0)
    expected = 1.0 if rank <= top_k else -1.0
    assert step_reward(rank, u, top_k, params) == expected
    assert step_reward(rank, u, top_k, LOGGPT_REWARD) == expected


@settings(max_examples=200, deadline=None)
@given(params=params_strategy, u=u_strategy, top_k=k_strategy, data=st.data())
def test_reward_never_rises_with_rank(params, u, top_k, data):
    better = data.draw(st.integers(1, top_k + 5))
    worse = data.draw(st.integers(better, top_k + 10))
    assert step_reward(worse, u, top_k, params) <= step_reward(better, u, top_k, params)
    if worse > top_k >= better:  # a hit always beats a miss
        assert step_reward(better, u, top_k, params) > 0 > step_reward(worse, u, top_k, params)


@settings(max_examples=200, deadline=None)
@given(params=params_strategy, top_k=k_strategy, data=st.data())
def test_early_hits_earn_more_and_late_misses_cost_more(params, top_k, data):
    early = data.draw(u_strategy)
    late = data.draw(st.floats(early, 1))
    rank = data.draw(st.integers(1, top_k))
    assert step_reward(rank, early, top_k, params) >= step_reward(rank, late, top_k, params)
    assert step_reward(top_k + 1, early, top_k, params) >= step_reward(top_k + 1, late, top_k, params)


def test_position_and_rank_decay_strictly_with_the_proposed_parameters():
    hits = [step_reward(1, u, 7, PROPOSED) for u in relative_positions(5)]
    misses = [step_reward(8, u, 7, PROPOSED) for u in relative_positions(5)]
    ranked = [step_reward(rank, 0.5, 7, PROPOSED) for rank in range(1, 8)]
    assert all(a > b for a, b in itertools.pairwise(hits))
    assert all(a > b for a, b in itertools.pairwise(misses))
    assert all(a > b for a, b in itertools.pairwise(ranked))


@settings(max_examples=300, deadline=None)
@given(params=params_strategy, rank=st.one_of(st.none(), st.integers(1, 2000)), u=u_strategy, top_k=k_strategy)
def test_reward_is_finite_and_within_its_documented_bounds(params, rank, u, top_k):
    value = step_reward(rank, u, top_k, params)
    low, high = params.bounds
    assert math.isfinite(value)
    assert low - 1e-9 <= value <= high + 1e-9
    if rank is not None and rank <= top_k:
        assert value >= math.exp(-params.kappa) - 1e-12  # the least a hit earns
    else:
        assert value <= -1.0  # the least a miss costs


def test_bounds_are_attained_at_the_first_hit_and_the_last_miss():
    assert step_reward(1, 0.0, 7, PROPOSED) == PROPOSED.bounds[1]
    assert step_reward(8, 1.0, 7, PROPOSED) == pytest.approx(PROPOSED.bounds[0], rel=1e-12)


def test_miss_ramp_is_linear_without_decay_and_continuous_in_lambda():
    assert miss_ramp(0.25, 0.0) == 0.25
    assert miss_ramp(0.25, 1e-9) == pytest.approx(0.25, rel=1e-6)
    assert (miss_ramp(0.0, 3.0), miss_ramp(1.0, 3.0)) == (0.0, pytest.approx(1.0))


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, []),  # nothing scored
        (1, [0.0]),  # a lone position counts as early
        (3, [0.0, 0.5, 1.0]),
    ],
)
def test_relative_positions_spread_from_zero_to_one(count, expected):
    assert relative_positions(count) == expected


def test_negative_parameters_and_bad_positions_are_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        RewardParams(alpha=-1.0)
    with pytest.raises(ValueError, match="relative position"):
        step_reward(1, 1.5, 7)
    with pytest.raises(ValueError, match="count from 1"):
        step_reward(0, 0.5, 7)


@settings(max_examples=60, deadline=None)
@given(
    params=params_strategy,
    top_k=st.integers(1, 30),
    cells=st.lists(st.tuples(st.integers(0, 40), u_strategy), min_size=1, max_size=40),
)
def test_tensor_rewards_equal_the_scalar_function(params, top_k, cells):
    ranks = torch.tensor([rank for rank, _ in cells])
    u = torch.tensor([position for _, position in cells], dtype=torch.float64)
    expected = [step_reward(rank or None, position, top_k, params) for rank, position in cells]  # 0 = absent
    assert step_rewards(ranks, u, top_k, params).tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def _all_lists(items: int, k: int):
    return list(itertools.permutations(range(items), k))


def test_plackett_luce_probabilities_of_all_k_lists_sum_to_one():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0, 3.0]], dtype=torch.float64)
    lists = torch.tensor([_all_lists(5, 3)])  # [1, 60, 3]
    total = plackett_luce_log_prob(logits, lists).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-12)


def test_plackett_luce_matches_the_sequential_draw_formula():
    logits = torch.tensor([1.0, 0.0, -2.0, 0.5], dtype=torch.float64)
    p = torch.softmax(logits, 0).tolist()
    # draw 3, then 0: p3 * p0 / (1 - p3)
    expected = math.log(p[3] * p[0] / (1 - p[3]))
    assert plackett_luce_log_prob(logits, torch.tensor([[3, 0]])).item() == pytest.approx(expected, rel=1e-12)


def test_plackett_luce_stays_finite_when_the_list_takes_every_candidate_and_some_are_masked():
    logits = torch.tensor([float("-inf"), 0.3, -0.2, 1.0], requires_grad=True)
    lists = torch.tensor([[3, 1, 2]])
    value = plackett_luce_log_prob(logits, lists)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(logits.grad).all()
    assert logits.grad[0] == 0  # the masked token gets no gradient


def test_gumbel_top_k_draws_lists_with_plackett_luce_frequencies():
    # 40,000 draws of ordered 2-lists out of 3 items; standard error of each frequency < 0.0025, tolerance 0.01
    logits = torch.tensor([1.0, 0.0, -1.0])
    draws = gumbel_top_k(logits, 2, 40_000, torch.Generator().manual_seed(0))
    counts = {pair: 0 for pair in _all_lists(3, 2)}
    for pair in map(tuple, draws.tolist()):
        counts[pair] += 1
    for pair, count in counts.items():
        expected = plackett_luce_log_prob(logits.double(), torch.tensor([pair])).exp().item()
        assert count / 40_000 == pytest.approx(expected, abs=0.01), pair


def test_gumbel_top_k_never_draws_masked_tokens():
    logits = torch.tensor([[float("-inf"), 0.0, 5.0, float("-inf"), -3.0]])
    draws = gumbel_top_k(logits, 3, 500, torch.Generator().manual_seed(1))
    assert set(draws.flatten().tolist()) == {1, 2, 4}


def test_list_ranks_give_the_place_of_the_target_or_zero():
    lists = torch.tensor([[[4, 2, 7], [7, 4, 2], [1, 3, 5]]])  # one position, three lists
    assert list_ranks(lists, torch.tensor([7])).tolist() == [[3, 1, 0]]


def test_rank_credit_of_k_is_exp_minus_kappa():
    assert rank_credit(7, 7, 2.0) == pytest.approx(math.exp(-2.0))
    assert rank_credit(1, 7, 2.0) == 1.0


@settings(max_examples=100, deadline=None)
@given(params=params_strategy, rank=st.one_of(st.none(), st.integers(1, 2000)), u=u_strategy, top_k=k_strategy)
def test_the_scalar_and_training_rewards_read_one_formula(params, rank, u, top_k):
    cell = reward_values(torch.tensor([rank or 0]), torch.tensor([u], dtype=torch.float64), top_k, params)
    assert step_reward(rank, u, top_k, params) == cell.item()  # exactly: the same computation
    training = step_rewards(torch.tensor([rank or 0]), torch.tensor([u], dtype=torch.float64), top_k, params)
    assert training.dtype == torch.float32 and training.item() == cell.float().item()
