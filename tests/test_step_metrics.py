"""Per-step reward components in the GRPO training metrics (rationanomaly/train/step_metrics.py)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

from rationanomaly.reward import REWARD_KEYS
from rationanomaly.train.step_metrics import as_rows, reward_component_metrics, reward_extra_infos


def test_metrics_are_mean_max_min_of_each_numeric_key():
    infos = [
        {"score": -7.5, "format": -1.0, "pred": "normal"},
        {"score": 1.5, "format": 0.1, "flag": True},
        {"score": 0.0, "format": 0.1},
    ]
    metrics = reward_component_metrics(infos)
    assert metrics == {
        "reward_components/score/mean": pytest.approx(-2.0),
        "reward_components/score/max": 1.5,
        "reward_components/score/min": -7.5,
        "reward_components/format/mean": pytest.approx(-0.8 / 3),
        "reward_components/format/max": 0.1,
        "reward_components/format/min": -1.0,
    }  # strings and booleans are not components


def test_non_finite_values_and_missing_rows_do_not_spoil_a_step():
    metrics = reward_component_metrics([{"think": math.nan}, {"think": 0.5}, None, {"think": math.inf}])
    assert metrics["reward_components/think/mean"] == 0.5


def test_means_keep_the_reward_identity_total_is_format_plus_answer_plus_half_think():
    from rationanomaly.reward import score_responses

    truth = "<think>The daemon accepted a routine connection.</think><answer>normal</answer>"
    responses = [
        "<think>A routine connection was accepted.</think><answer>normal</answer>",
        "<think>It failed.</think><answer>abnormal</answer>",
        "no tags at all",
        "<think></think><answer>normal</answer>",
    ]
    parts = score_responses(responses, [truth] * len(responses), ppl_model="none")
    assert set(parts[0]) == set(REWARD_KEYS)
    m = reward_component_metrics(parts)
    mean = {key: m[f"reward_components/{key}/mean"] for key in REWARD_KEYS}
    assert mean["score"] == pytest.approx(mean["format"] + mean["answer"] + 0.5 * mean["think"], abs=1e-9)


def test_padding_rows_are_left_out_and_rows_without_info_count_as_empty():
    fields = [{"reward_extra_info": {"score": 1.0}}, {"reward_extra_info": {"score": 9.0}}, "odd", {}]
    tags = [{}, {"is_padding": True}, {}, {"is_padding": False}]
    assert reward_extra_infos(fields, tags) == [{"score": 1.0}, {}, {}]


def test_transfer_queue_fields_become_lists_whatever_their_container():
    import numpy as np

    class ListWithoutTolist(list):  # like tensordict's LinkedList
        pass

    assert as_rows(np.array([{"a": 1}, {"a": 2}], dtype=object)) == [{"a": 1}, {"a": 2}]
    assert as_rows(ListWithoutTolist([{"a": 1}])) == [{"a": 1}]


def test_the_trainer_is_registered_through_verl_and_runs_as_the_stock_sync_mode():
    """In a fresh interpreter, as verl loads it: `import verl` with the plugin variable, then verl's trainer."""
    code = textwrap.dedent("""
        import verl
        from omegaconf import OmegaConf
        from verl.trainer.ppo.v1 import PPOTrainer, get_trainer_cls
        from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

        cls = get_trainer_cls("rationanomaly_sync")
        seen = {}
        PPOTrainer.__init__ = lambda self, config: seen.setdefault("mode", config.trainer.v1.trainer_mode)
        cls(OmegaConf.create({"trainer": {"v1": {"trainer_mode": "rationanomaly_sync"}}}))
        print(issubclass(cls, PPOTrainerSync), cls._compute_metrics is not PPOTrainerSync._compute_metrics,
              seen["mode"])
    """)
    import os

    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "rationanomaly.train.step_metrics"}
    env.pop("VERL_PLATFORM", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True True sync"


def test_launcher_selects_the_trainer_and_hands_the_plugin_list_to_a_ray_cluster(tmp_path):
    """GRPO gets trainer_mode=rationanomaly_sync; several nodes get the plugin list as one (quoted) string."""
    from rationanomaly.train.preflight import compose_config
    from rationanomaly.train.tiny_run import as_dict, module_of, overrides_of, recorded_calls

    knobs = {"NNODES": "2", "ATTN_IMPL": "sdpa", "VERL_USE_EXTERNAL_MODULES": "my_plugin"}
    result, calls = recorded_calls(knobs, tmp_path)
    assert result.returncode == 0, result.stderr
    grpo = next(argv for argv, _ in calls if module_of(argv) == "verl.trainer.main_ppo")
    overrides = overrides_of(grpo)
    assert as_dict(overrides)["trainer.v1.trainer_mode"] == "rationanomaly_sync"
    key = "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"
    handed = [o for o in overrides if o.startswith(key + "=")]
    assert handed == [f"{key}='my_plugin,rationanomaly.train.step_metrics'"]
    config = compose_config("grpo", handed)
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == (
        "my_plugin,rationanomaly.train.step_metrics"
    )


def test_metrics_plugin_can_be_turned_off(tmp_path):
    from rationanomaly.train.tiny_run import module_of, overrides_of, recorded_calls

    result, calls = recorded_calls({"ATTN_IMPL": "sdpa", "REWARD_COMPONENT_METRICS": "false"}, tmp_path)
    assert result.returncode == 0, result.stderr
    grpo = next(argv for argv, _ in calls if module_of(argv) == "verl.trainer.main_ppo")
    assert not any(o.startswith("trainer.v1.trainer_mode") for o in overrides_of(grpo))
