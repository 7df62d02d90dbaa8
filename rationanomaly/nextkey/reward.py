"""The position-aware, partial-credit reward (LogNEO mode), LogGPT's +-1 as its special case, and the Plackett-Luce
pieces the PPO step needs.

LogNEO (arXiv 2606.08153) describes its reward only in words: partial credit, exponentially decaying, position
aware (early correct predictions earn more, late misses cost more); it publishes no formula and no code. The
formula below is ours, started from the proposal in shared notes (logneo-and-streaming.md §2) with two changes:

    r(rho, u) = w_hit(u) * credit(rho)     if rho <= K   (the real key is among the K predicted)
              = -w_miss(u)                 otherwise

    w_hit(u)    = 1 + alpha * exp(-lambda * u)                                early hits earn up to 1 + alpha
    w_miss(u)   = 1 + beta * (1 - exp(-lambda * u)) / (1 - exp(-lambda))      late misses cost up to 1 + beta
                  (the ramp is u itself when lambda = 0)
    credit(rho) = exp(-kappa * (rho - 1) / (K - 1))                           rank 1 earns 1, rank K exp(-kappa)
                  (1 when K = 1)

rho is the real key's rank (1 = most likely), u in [0, 1] its relative place among the scored positions of its
sequence (0 = first scored, 1 = last). With alpha = beta = kappa = 0 every hit is +1 and every miss -1: LogGPT's
Top-K reward exactly. Changes from the notes, and why: the miss ramp is divided by 1 - exp(-lambda), so beta is
what a miss at the end costs on top of 1 (the notes' form stopped at 1 + beta * (1 - e^-lambda)) and the bounds
below are attained; rank credit decays over (rho - 1) / (K - 1) rather than / K, so rank K earns exactly
exp(-kappa) as the notes intended. Bounds: every hit earns at least exp(-kappa) > 0 and at most 1 + alpha, every
miss costs between 1 and 1 + beta, so r lies in [-(1 + beta), 1 + alpha] and a hit always beats a miss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class RewardParams:
    """The reward's knobs; the defaults are the notes' proposal (alpha = beta = 1, lambda = 3, kappa = 1)."""

    alpha: float = 1.0  # extra credit of a hit at the first scored position
    beta: float = 1.0  # extra cost of a miss at the last scored position
    decay: float = 3.0  # lambda: exp(-3) = 0.05, so the bonus has faded by the sequence's end
    kappa: float = 1.0  # rank credit: a hit at rank K earns exp(-kappa) = 0.37 of a rank-1 hit

    def __post_init__(self) -> None:
        if min(self.alpha, self.beta, self.decay, self.kappa) < 0:
            raise ValueError(f"reward parameters must be >= 0, got {asdict(self)}")

    @property
    def bounds(self) -> tuple[float, float]:
        """The lowest and highest reward one position can get: (-(1 + beta), 1 + alpha)."""
        return -(1.0 + self.beta), 1.0 + self.alpha


LOGGPT_REWARD = RewardParams(alpha=0.0, beta=0.0, decay=0.0, kappa=0.0)  # every hit +1, every miss -1
DRAWN_FLOOR = -1e30  # logit standing in for an item already drawn (plackett_luce_log_prob)


def _as_float64(value: float | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def hit_weights(u: torch.Tensor, params: RewardParams) -> torch.Tensor:
    """w_hit(u) = 1 + alpha * exp(-lambda * u), element-wise: a correct prediction early in the sequence earns more."""
    return 1.0 + params.alpha * torch.exp(-params.decay * u)


def miss_ramps(u: torch.Tensor, decay: float) -> torch.Tensor:
    """(1 - exp(-lambda * u)) / (1 - exp(-lambda)), element-wise: 0 at u = 0 up to 1 at u = 1 (u for lambda = 0)."""
    if decay == 0:
        return u
    return torch.expm1(-decay * u) / math.expm1(-decay)


def rank_credits(ranks: torch.Tensor, top_k: int, kappa: float) -> torch.Tensor:
    """credit(rho) = exp(-kappa * (rho - 1) / (K - 1)), element-wise: decays from rank 1 to rank K (1 when K = 1)."""
    ranks = ranks.to(torch.float64)
    if top_k <= 1:
        return torch.ones_like(ranks)
    return torch.exp(-kappa * (ranks - 1.0) / (top_k - 1))


def reward_values(ranks: torch.Tensor, u: torch.Tensor, top_k: int, params: RewardParams) -> torch.Tensor:
    """The reward (module docstring) in float64, element-wise over ranks (> K or 0 = miss) and positions u: the one
    place the formula is written; `step_reward` and `step_rewards` both read it."""
    u = _as_float64(u)
    hit = (ranks >= 1) & (ranks <= top_k)
    miss_cost = 1.0 + params.beta * miss_ramps(u, params.decay)
    return torch.where(hit, hit_weights(u, params) * rank_credits(ranks, top_k, params.kappa), -miss_cost)


def hit_weight(u: float, params: RewardParams) -> float:
    """`hit_weights` of one position."""
    return float(hit_weights(_as_float64(u), params))


def miss_ramp(u: float, decay: float) -> float:
    """`miss_ramps` of one position."""
    return float(miss_ramps(_as_float64(u), decay))


def rank_credit(rank: int, top_k: int, kappa: float) -> float:
    """`rank_credits` of one rank."""
    return float(rank_credits(torch.tensor(rank), top_k, kappa))


def step_reward(rank: int | None, u: float, top_k: int, params: RewardParams = RewardParams()) -> float:
    """The reward of one scored position (`reward_values` of one cell): `rank` None or > K is a miss.

    `u` is the position's relative place in [0, 1]; `rank` counts from 1.
    """
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"u={u}; the relative position lies in [0, 1]")
    if rank is not None and rank < 1:
        raise ValueError(f"rank={rank}; ranks count from 1")
    return float(reward_values(torch.tensor(0 if rank is None else rank), _as_float64(u), top_k, params))


def relative_positions(count: int) -> list[float]:
    """u of each of `count` scored positions: evenly spaced from 0 (first) to 1 (last); [0.0] for one."""
    if count < 1:
        return []
    return [index / max(count - 1, 1) for index in range(count)]


def step_rewards(ranks: torch.Tensor, u: torch.Tensor, top_k: int, params: RewardParams) -> torch.Tensor:
    """`reward_values` as float32, the dtype training uses (ranks: ints, > K or 0 = miss)."""
    return reward_values(ranks, u, top_k, params).to(torch.float32)


def gumbel_top_k(logits: torch.Tensor, k: int, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`samples` ranked K-lists per row, drawn from the Plackett-Luce law of softmax(logits) by Gumbel-top-K.

    Adding Gumbel noise and taking the K largest is an exact draw of K items without replacement in the order
    PL would draw them (Yellott 1977; Kool et al. 2019). Shape: logits [..., V] -> lists [..., samples, K].
    Masked entries (-inf) are never drawn while K does not exceed the unmasked count.
    """
    expanded = logits.detach().unsqueeze(-2).expand(*logits.shape[:-1], samples, logits.shape[-1])
    uniform = torch.rand(expanded.shape, generator=generator, dtype=torch.float32, device=logits.device)
    exponential = -torch.log(uniform.clamp_min(1e-20))  # Exp(1) draws
    gumbel = -torch.log(exponential.clamp_min(1e-20))
    return torch.topk(expanded.float() + gumbel, k, dim=-1).indices


def plackett_luce_log_prob(logits: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
    """log P(list) under Plackett-Luce(softmax(logits)): sum_j [l(s_j) - log sum over items not yet drawn].

    Shapes: logits [..., V], lists [..., G, K] -> [..., G]. The normaliser of step j is computed as
    logsumexp(chosen[j:] + never-chosen items), all positive terms, so it stays exact when the first picks hold
    nearly all the mass (1 - cumsum(p) would cancel to 0 there).
    """
    expanded = logits.unsqueeze(-2).expand(*lists.shape[:-1], logits.shape[-1])
    chosen = expanded.gather(-1, lists)
    # Drawn items are set to a finite floor, not -inf: when the list exhausts every candidate, a logsumexp over
    # -inf alone has a NaN gradient, whereas the floor's exp underflows to exactly 0 in every other case.
    rest = torch.logsumexp(expanded.scatter(-1, lists, DRAWN_FLOOR), dim=-1, keepdim=True)
    suffix = torch.logcumsumexp(chosen.flip(-1), dim=-1).flip(-1)
    return (chosen - torch.logaddexp(suffix, rest)).sum(-1)


def list_ranks(lists: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Place (1..K) of each target in its sampled lists, 0 where the list leaves it out. lists [..., G, K]."""
    match = lists == targets.unsqueeze(-1).unsqueeze(-1)
    return torch.where(
        match.any(-1), match.to(torch.int64).argmax(-1) + 1, torch.zeros_like(match[..., 0], dtype=torch.int64)
    )
