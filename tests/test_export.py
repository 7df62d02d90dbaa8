"""Export: checkpoints in verl's FSDP layout, merged by verl's own merger, then by our LoRA merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rationanomaly.paths import REPO_ROOT
from rationanomaly.train.export import (
    ADAPTER_DIR,
    EXPORT_MARKER,
    MERGED_ADAPTER_DIR,
    ExportError,
    check_target,
    checkpoint_dir,
    latest_step,
    main,
    merge_lora_adapter,
)

STEP = 5
LORA_RANK, LORA_ALPHA = 4, 8

# Runs under `torchrun --nproc_per_node=2` (gloo, CPU): writes checkpoints in the layout of verl's FSDP2
# checkpoint manager (which itself needs CUDA): per rank a state dict of DTensors sharded Shard(0) over an
# ("fsdp",) mesh, plus fsdp_config.json, huggingface/ and the step tracker. World size 1 is saved as
# plain full tensors (the merger's non-DTensor path), so a single launch writes every checkpoint.
SHARD_WRITER = r"""
import json, sys
from pathlib import Path
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, root = Path(sys.argv[1]), Path(sys.argv[2])
lora_rank, lora_alpha, step = (int(value) for value in sys.argv[3:6])
dist.init_process_group("gloo")
torch.manual_seed(0)  # peft draws LoRA A from the global generator: the same adapter on every rank and run
rank = dist.get_rank()
mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("fsdp",))


def write(name, world, lora):
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = model.config
    if lora:
        from peft import LoraConfig, get_peft_model
        adapter = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=["q_proj", "v_proj"])
        model = get_peft_model(model, adapter)
        generator = torch.Generator().manual_seed(1)
        for key, param in model.named_parameters():
            if "lora_B" in key:  # LoRA B starts at zero; give it values so the adapter changes the weights
                param.data = torch.randn(param.shape, generator=generator) * 0.5
    state = {k: v.detach().clone() if world == 1 else distribute_tensor(v.detach().clone(), mesh, [Shard(0)])
             for k, v in model.state_dict().items()}
    out = root / name / f"global_step_{step}" / "actor"
    if rank >= world:
        return
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"model_world_size_{world}_rank_{rank}.pt")
    if rank == 0:
        (out / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": world}))
        config.save_pretrained(out / "huggingface")
        AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(out / "huggingface")
        (root / name / "latest_checkpointed_iteration.txt").write_text(str(step))
        if lora:
            meta = {"r": lora_rank, "lora_alpha": lora_alpha, "task_type": "CAUSAL_LM"}
            (out / "lora_train_meta.json").write_text(json.dumps(meta))
            model.save_pretrained(root / name / "reference_adapter")


write("full1", 1, False)
write("full2", 2, False)
write("lora2", 2, True)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def checkpoints(tiny_llama_dir, tmp_path_factory) -> Path:
    """full1, full2 (world size 1 and 2) and lora2 checkpoints of the tiny Llama, each under its own root."""
    root = tmp_path_factory.mktemp("checkpoints")
    script = root / "write_shards.py"
    script.write_text(SHARD_WRITER)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tiny_llama_dir),
        str(root),
        str(LORA_RANK),
        str(LORA_ALPHA),
        str(STEP),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def run_export_script(checkpoints: Path, target: Path, **knobs: str) -> subprocess.CompletedProcess:
    """model_export.sh as a user runs it, with this interpreter."""
    env = {**os.environ, "PYTHON": sys.executable, "CHECKPOINTS": str(checkpoints), "TARGET_DIR": str(target), **knobs}
    return subprocess.run(["bash", str(REPO_ROOT / "model_export.sh")], env=env, capture_output=True, text=True)


def logits(model_dir_or_model, input_ids):
    """Float32 logits of a saved folder (or a loaded model) on `input_ids`."""
    import torch
    from transformers import AutoModelForCausalLM

    model = model_dir_or_model
    if isinstance(model, str | Path):
        model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(input_ids).logits


@pytest.fixture(scope="module")
def input_ids():
    import torch

    return torch.tensor([[1, 17, 42, 99, 7, 3, 250]])


@pytest.mark.slow
@pytest.mark.parametrize("name, world_size", [("full1", 1), ("full2", 2)])
def test_verl_merger_turns_fsdp_shards_into_a_model_with_the_original_logits(
    checkpoints, tiny_llama_dir, tmp_path, monkeypatch, input_ids, name, world_size
):
    import torch
    from transformers import AutoModelForCausalLM
    from verl.model_merger.__main__ import main as verl_merger

    local_dir = checkpoint_dir(checkpoints / name)
    assert len(list(local_dir.glob(f"model_world_size_{world_size}_rank_*.pt"))) == world_size
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "verl.model_merger",
            "merge",
            "--backend",
            "fsdp",
            "--local_dir",
            str(local_dir),
            "--target_dir",
            str(tmp_path / "exported"),
        ],
    )
    verl_merger()
    assert merge_lora_adapter(tmp_path / "exported") is False
    original = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    original.to(torch.bfloat16).to(torch.float32)  # verl's merger always writes bf16
    torch.testing.assert_close(logits(tmp_path / "exported", input_ids), logits(original, input_ids), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def lora_export(checkpoints):
    """The 2-rank LoRA checkpoint exported by model_export.sh (verl merger, then our PEFT merge)."""
    result = run_export_script(checkpoints / "lora2", checkpoints / "exported")
    assert result.returncode == 0, result.stderr[-2000:]
    return checkpoints, result


@pytest.mark.slow
def test_lora_export_reports_the_merge_and_keeps_the_adapter_under_a_new_name(lora_export):
    root, result = lora_export
    assert "LoRA adapter merged into the weights" in result.stdout
    assert not (root / "exported" / ADAPTER_DIR).exists()
    marker = json.loads((root / "exported" / EXPORT_MARKER).read_text())  # so OVERWRITE=1 may replace it later
    assert marker["checkpoint"] == str(root / "lora2" / f"global_step_{STEP}" / "actor")
    assert (root / "exported" / MERGED_ADAPTER_DIR / "adapter_config.json").is_file()


@pytest.mark.slow
def test_lora_export_weights_differ_from_the_base(lora_export, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    root, _ = lora_export
    merged = AutoModelForCausalLM.from_pretrained(str(root / "exported"), dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).state_dict()
    changed = {key for key in base if not torch.allclose(merged[key], base[key], atol=1e-2)}
    assert changed == {
        f"model.layers.{layer}.self_attn.{proj}.weight" for layer in range(2) for proj in ("q_proj", "v_proj")
    }


@pytest.mark.slow
def test_lora_export_matches_the_adapter_applied_model(lora_export, tiny_llama_dir, input_ids):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, _ = lora_export
    # verl's merger stores base and adapter in bf16; apply the same rounding to the reference so the only
    # difference left is the final rounding of the merged weights to bf16: half a step, 2^-8 of the value
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(root / "lora2" / "reference_adapter"))
    with torch.no_grad():
        for param in adapted.parameters():
            param.copy_(param.to(torch.bfloat16).to(torch.float32))
    expected = adapted.merge_and_unload().state_dict()
    exported = AutoModelForCausalLM.from_pretrained(str(root / "exported"), dtype=torch.float32).state_dict()
    assert exported.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(
            exported[key], expected[key], rtol=2**-8, atol=1e-6, msg=lambda message, key=key: f"{key}: {message}"
        )
    assert logits(root / "exported", input_ids).isfinite().all()


@pytest.mark.slow
def test_merge_lora_twice_is_a_no_op_the_second_time(lora_export):
    root, _ = lora_export
    assert merge_lora_adapter(root / "exported") is False


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"latest_checkpointed_iteration.txt": "30", "global_step_40/x": ""}, 30),  # the tracker wins
        ({"global_step_10/x": "", "global_step_20/x": "", "global_step_x/x": ""}, 20),  # no tracker: highest step
    ],
)
def test_latest_step_reads_the_tracker_or_the_highest_step_folder(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert latest_step(tmp_path) == expected


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("global_step_3/actor/fsdp_config.json", "global_step_3/actor"),  # GRPO layout
        ("global_step_3/fsdp_config.json", "global_step_3"),  # SFT layout: no actor/
    ],
)
def test_checkpoint_dir_finds_the_grpo_and_the_sft_layout(tmp_path, layout, expected):
    (tmp_path / layout).parent.mkdir(parents=True)
    (tmp_path / layout).write_text("{}")
    assert checkpoint_dir(tmp_path, 3) == tmp_path / expected


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no checkpoint under"),  # empty folder
        (lambda p: (p / "latest_checkpointed_iteration.txt").write_text("abc"), "not a step number"),
        (lambda p: (p / "global_step_2").mkdir(), "holds no FSDP checkpoint"),
    ],
)
def test_checkpoint_dir_fails_with_a_fix_when_there_is_nothing_to_export(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ExportError, match=message):
        checkpoint_dir(tmp_path)


def test_locate_cli_prints_one_error_line_and_exits_2_without_checkpoints(tmp_path, capsys):
    assert main(["locate", "--checkpoints", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_export_script_fails_clearly_without_a_checkpoint(tmp_path):
    (tmp_path / "ckpt").mkdir()
    result = run_export_script(tmp_path / "ckpt", tmp_path / "exported")
    assert result.returncode != 0
    assert "no checkpoint under" in result.stderr
    assert not (tmp_path / "exported").exists()


def test_failed_merge_keeps_the_model_that_overwrite_would_replace(tmp_path):
    actor = tmp_path / "ckpt" / "global_step_1" / "actor"
    actor.mkdir(parents=True)
    (actor / "fsdp_config.json").write_text('{"world_size": 1}')  # no shards, no huggingface/: the merger fails
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("1")
    target = tmp_path / "model"
    target.mkdir()
    (target / EXPORT_MARKER).write_text("previous export")  # an earlier export, which OVERWRITE=1 may replace
    result = run_export_script(tmp_path / "ckpt", target, OVERWRITE="1")
    assert result.returncode != 0 and "exporting" in result.stdout  # it got as far as the merge
    assert (target / EXPORT_MARKER).read_text() == "previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "model"]  # no staging folder left behind


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its content: what "nothing changed" compares."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def export_layout(root: Path) -> Path:
    """A checkpoint folder with one (unmergeable) step, a foreign folder, an earlier export and a stray file."""
    actor = root / "targets" / "run" / "global_step_1" / "actor"
    actor.mkdir(parents=True)
    (actor / "fsdp_config.json").write_text('{"world_size": 1}')
    (root / "targets" / "run" / "latest_checkpointed_iteration.txt").write_text("1")
    (root / "models" / "notes").mkdir(parents=True)
    (root / "models" / "notes" / "paper.txt").write_text("mine")
    (root / "models" / "previous").mkdir()
    (root / "models" / "previous" / EXPORT_MARKER).write_text("{}")
    (root / "models" / "empty").mkdir()
    (root / "models" / "file.txt").write_text("a file")
    return root / "targets" / "run"


@pytest.mark.parametrize(
    "target, overwrite, expected",
    [
        ("models/new", False, "new"),
        ("models/empty", False, "empty"),
        ("models/previous", True, "replace"),  # an earlier export, replaced on request
    ],
)
def test_check_target_allows_new_empty_and_earlier_exports(tmp_path, target, overwrite, expected):
    checkpoints = export_layout(tmp_path)
    assert check_target(checkpoints, tmp_path / target, overwrite) == expected


@pytest.mark.parametrize(
    "target, overwrite, message",
    [
        ("targets/run", True, "is inside the checkpoint folder"),  # the checkpoint folder itself
        ("targets/run/global_step_1", True, "is inside the checkpoint folder"),
        ("targets", True, "contains the checkpoint folder"),
        (".", True, "contains the checkpoint folder"),
        ("models/notes", True, "holds files that model_export.sh did not write"),  # OVERWRITE=1 never deletes it
        ("models/previous", False, "already holds an export; set OVERWRITE=1"),
        ("models/file.txt", True, "exists and is not a folder"),
    ],
)
def test_check_target_refuses_what_the_export_would_damage(tmp_path, target, overwrite, message):
    checkpoints = export_layout(tmp_path)
    with pytest.raises(ExportError, match=message):
        check_target(checkpoints, tmp_path / target, overwrite)


def test_check_target_sees_through_a_symlink_into_the_checkpoints(tmp_path):
    checkpoints = export_layout(tmp_path)
    (tmp_path / "models" / "link").symlink_to(checkpoints)
    with pytest.raises(ExportError, match="is inside the checkpoint folder"):
        check_target(checkpoints, tmp_path / "models" / "link", True)


@pytest.mark.parametrize(
    "target, knobs, message",
    [
        ("targets/run", {"OVERWRITE": "1"}, "is inside the checkpoint folder"),
        ("targets/run/global_step_1/actor/out", {"OVERWRITE": "1"}, "is inside the checkpoint folder"),
        ("targets", {"OVERWRITE": "1"}, "contains the checkpoint folder"),
        ("models/notes", {"OVERWRITE": "yes"}, "did not write"),
        ("models/previous", {}, "already holds an export"),
        ("models/file.txt", {"OVERWRITE": "1"}, "is not a folder"),
        ("models/new", {"OVERWRITE": "perhaps"}, "OVERWRITE=perhaps is not a yes/no value"),
        ("models/new", {"STEP": "$(touch x)"}, "is not a step number"),
    ],
)
def test_export_script_refuses_with_one_line_and_changes_nothing(tmp_path, target, knobs, message):
    checkpoints = export_layout(tmp_path)
    before = tree(tmp_path)
    result = run_export_script(checkpoints, tmp_path / target, **knobs)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("export error:") and message in result.stderr
    assert result.stdout == ""  # refused before the merger started
    assert tree(tmp_path) == before and not (tmp_path / "models" / "new").exists()
