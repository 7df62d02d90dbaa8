"""Reward components per GRPO training step: mean, max and min of every part the reward returns.

    VERL_USE_EXTERNAL_MODULES=rationanomaly.train.step_metrics ... trainer.v1.trainer_mode=rationanomaly_sync

(model_train.sh sets both; `REWARD_COMPONENT_METRICS=false` leaves verl's stock trainer in place.)

verl 0.9.1 copies every key of our reward's dict (score, format, answer, think, semantic, length, perplexity)
into each rollout's `reward_extra_info` and carries it through the TransferQueue, but its V1 trainer logs those
keys only at validation steps, and the reference run never validates. This module registers, through verl's own
`register_trainer`, a subclass of verl's synchronous trainer whose metrics also hold
`reward_components/<part>/{mean,max,min}` for each training step, over the same rollouts as `critic/score/mean`
(so `reward_components/score/mean` equals it, and the means obey total = format + answer + 0.5 x think).
Everything else is verl's `sync` mode unchanged: the subclass presents itself to verl as `sync`.

Checked against verl 0.9.1 (V1 trainer, sync mode): `PPOTrainer._compute_metrics(batch, metrics, ...)`, the
TransferQueue field `extra_fields` holding `reward_extra_info`, and `batch.tags[i]["is_padding"]`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from numbers import Real

from rationanomaly.train.hooks import after_import

logger = logging.getLogger(__name__)

TRAINER_MODE = "rationanomaly_sync"  # trainer.v1.trainer_mode that selects the subclass
STOCK_TRAINER_MODE = "sync"  # what the subclass is to verl once selected
METRIC_PREFIX = "reward_components"
TRAINER_MODULE = "verl.trainer.ppo.v1.trainer_sync"


def _numeric(value: object) -> float | None:
    """A finite number as float; None for strings, booleans, missing and non-finite values (not averaged)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def reward_component_metrics(extra_infos: Iterable[Mapping | None]) -> dict[str, float]:
    """`reward_components/<key>/{mean,max,min}` over the rows' reward extra info, numeric keys only.

    Rows are the step's rollouts (padding rows already removed). A key is averaged over the rows that carry
    a finite number for it, so one odd row never turns a whole step's mean into NaN.
    """
    values: dict[str, list[float]] = {}
    for info in extra_infos:
        for key, value in (info or {}).items():
            number = _numeric(value)
            if number is not None:
                values.setdefault(str(key), []).append(number)
    metrics = {}
    for key, numbers in values.items():
        metrics[f"{METRIC_PREFIX}/{key}/mean"] = sum(numbers) / len(numbers)
        metrics[f"{METRIC_PREFIX}/{key}/max"] = max(numbers)
        metrics[f"{METRIC_PREFIX}/{key}/min"] = min(numbers)
    return metrics


def reward_extra_infos(extra_fields: Iterable[object], tags: Iterable[Mapping]) -> list[Mapping]:
    """The `reward_extra_info` dict of every non-padding row (verl pads a batch to a multiple of the DP size)."""
    infos = []
    for extra_field, tag in zip(extra_fields, tags, strict=True):
        if tag.get("is_padding", False):
            continue
        info = extra_field.get("reward_extra_info") if isinstance(extra_field, Mapping) else None
        infos.append(info if isinstance(info, Mapping) else {})
    return infos


def as_rows(field: object) -> list:
    """A TransferQueue field as a list of rows: verl hands back numpy arrays, tensordict stacks or plain lists
    (a non-tensor field came back as tensordict's `LinkedList`, a list subclass without `tolist`)."""
    tolist = getattr(field, "tolist", None)
    return list(tolist()) if callable(tolist) else list(field)


def _register_trainer(trainer_sync) -> None:
    """Define and register the subclass once verl's sync trainer module exists (it imports Ray, TransferQueue)."""
    from omegaconf import open_dict
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer

    if TRAINER_MODE in TRAINER_REGISTRY:
        return

    class RewardComponentsSyncTrainer(trainer_sync.PPOTrainerSync):
        """verl's sync trainer, plus per-step reward component metrics."""

        def __init__(self, config, *args, **kwargs):
            # verl compares trainer_mode with "sync" in several places (replay buffer, refill, weight sync);
            # selected under our name, the trainer then runs exactly as the stock sync mode.
            with open_dict(config):
                config.trainer.v1.trainer_mode = STOCK_TRAINER_MODE
            super().__init__(config, *args, **kwargs)

        def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
            super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
            try:
                import transfer_queue as tq

                data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
                metrics.update(reward_component_metrics(reward_extra_infos(as_rows(data["extra_fields"]), batch.tags)))
            except Exception as error:  # a metric must never stop a training run
                if not getattr(self, "_reward_component_warning", False):
                    logger.warning("reward component metrics unavailable (training goes on): %r", error)
                    self._reward_component_warning = True

    register_trainer(TRAINER_MODE)(RewardComponentsSyncTrainer)


after_import(TRAINER_MODULE, _register_trainer)
