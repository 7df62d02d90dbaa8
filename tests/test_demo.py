"""The demo: the whole pipeline on the embedded sample, through the same commands a user types."""

from __future__ import annotations

import json
import re

import pytest

from rationanomaly import demo
from rationanomaly.paths import REPO_ROOT


def test_every_demo_step_runs_a_script_or_module_that_exists(tmp_path):
    for step in demo.demo_steps(tmp_path):
        target = step.command[1]
        if step.command[1] == "-m":
            module = step.command[2].replace(".", "/")
            assert (REPO_ROOT / f"{module}.py").exists() or (REPO_ROOT / module / "__main__.py").exists(), step.name
        else:
            assert (REPO_ROOT / target).is_file(), f"{step.name}: {target} is missing"


def test_failing_step_stops_the_run_and_shows_the_log_tail(tmp_path):
    steps = [
        demo.Step("fails", [demo.PYTHON, "-c", "print('about to fail'); raise SystemExit(3)"]),
        demo.Step("never_runs", [demo.PYTHON, "-c", "print('unreachable')"]),
    ]
    with pytest.raises(demo.StepFailed, match=r"(?s)step 1 'fails' exited with 3.*about to fail"):
        demo.run_steps(steps, tmp_path / "logs")
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["01_fails.log"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_summarises_the_sample(demo_run):
    out = demo_run
    summary = (out / "summary.txt").read_text(encoding="utf-8")
    # numbers of the embedded sample (rationanomaly/sample_data), fixed by seed 0
    assert "9/9 entries matched, 12 labels changed (+10 abnormal, -2); anomalies 29 -> 37" in summary
    assert "15 windows of 100 lines (10 abnormal); train 5, test 3 (2 abnormal)" in summary
    assert "58 joined, 2 rejected" in summary
    assert "GRPO and SFT rows: train 58, validation 0" in summary  # every sample trains (no validation run)
    assert "CoT-SFT     verl sft_trainer, LoRA: 14 steps" in summary
    assert re.search(r"GRPO        verl main_ppo, vLLM CPU rollout, .*: 4 steps", summary)
    rules = json.loads((out / "evaluation" / "BGL_by_rules.json").read_text())["template"]
    assert (rules["tp"], rules["fp"], rules["fn"], rules["tn"]) == (4, 0, 0, 6)
    sessions = json.loads((out / "evaluation" / "BGL_sessions_by_rules.json").read_text())["session"]
    assert sessions["total"] == 3 and sessions["dropped"] == 0
    assert sorted(p.name for p in (out / "watch").glob("*.png")) == [
        "length_kl_entropy.png",
        "reward.png",
        "reward_components.png",
        "timing.png",
    ]
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert [s["name"] for s in steps] == [s.name for s in demo.demo_steps(out)]
    assert summary.startswith(f"RationAnomaly demo: {len(steps)} steps in ") and ", all ok." in summary
