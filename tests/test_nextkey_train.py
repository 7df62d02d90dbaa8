"""Training: LogGPT's loss, the sampled contexts, one PPO step on a tiny GPT-Neo, seeded reproducibility, resume,
two-process DDP on the CPU (gloo), and the comparison on a slice of DeepLog's real HDFS sessions."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rationanomaly.nextkey.__main__ import main
from rationanomaly.nextkey.compare import compare
from rationanomaly.nextkey.detect import mask_logits, next_logits
from rationanomaly.nextkey.keys import BOS_ID, EOS_ID, PAD_ID, read_sequences, write_sequences
from rationanomaly.nextkey.models import GPT_NEO, ModelShape, SequenceTooLongError, set_matmul_precision
from rationanomaly.nextkey.reward import plackett_luce_log_prob
from rationanomaly.nextkey.sequences import split_normal
from rationanomaly.nextkey.synthetic import write_synthetic
from rationanomaly.nextkey.train import (
    TrainConfig,
    Trainer,
    batch_std,
    check_batch_sizes,
    loggpt_cut,
    sample_contexts,
    sequence_return_loss,
    split_validation,
    train,
)

TINY = ModelShape(n_layer=2, n_head=2, n_embd=16, dropout=0.0, n_positions=64)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    left, right = _weights(a), _weights(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.allclose(left[name], right[name], rtol=0, atol=atol), name


def test_sequence_return_loss_is_return_times_log_likelihood():
    log_probs = torch.tensor([[-0.5, -1.0, -2.0], [-0.1, -0.2, -9.0]])
    rewards = torch.tensor([[1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # sequence 1: -(-3.5 * 1); sequence 2: -(-0.3 * -2), its third position unscored
    assert sequence_return_loss(log_probs, rewards, mask).item() == pytest.approx(3.5 - 0.6)


def test_a_negative_return_pushes_the_real_keys_down():
    # LogGPT's sign quirk, on one free logit vector: more misses than hits, and gradient descent lowers log p(real)
    logits = torch.zeros(1, 1, 3, requires_grad=True)
    log_probs = torch.log_softmax(logits, -1)[..., 0]
    sequence_return_loss(log_probs, torch.tensor([[-1.0]]), torch.tensor([[True]])).backward()
    assert logits.grad[0, 0, 0] > 0  # a descent step lowers the real key's logit


@pytest.mark.parametrize(
    ("length", "framing", "expected"),
    [
        (22, "session", 4),  # floor(0.2 * 22)
        (5, "session", 2),  # at least <bos> and one key
        (3, "session", 2),  # <bos> key <eos>: the clamp bottoms out at 2, nothing is left to sample
        (50, "window", 10),
        (3, "window", 1),
    ],
)
def test_loggpt_cut_clamps_like_loggpt(length, framing, expected):
    assert loggpt_cut(length, 0.2, framing) == expected


def test_sampled_contexts_keep_the_prefix_and_draw_only_keys():
    torch.manual_seed(0)
    from rationanomaly.nextkey.keys import build_vocabulary
    from rationanomaly.nextkey.models import build_model

    vocab = build_vocabulary([(1, 2, 3, 4, 5)])
    model = build_model("gpt2", vocab, TINY).eval()
    rows = [vocab.encode((1, 2, 3, 4, 5, 1, 2)), vocab.encode((3, 4, 5))]
    input_ids = torch.full((2, 9), PAD_ID)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
    lengths, cuts = torch.tensor([9, 5]), torch.tensor([3, 2])
    keys = torch.zeros(vocab.size, dtype=torch.bool)
    keys[4:] = True
    contexts = sample_contexts(model, input_ids, lengths, cuts, keys, torch.Generator().manual_seed(0))
    assert contexts[0, :3].tolist() == rows[0][:3] and contexts[1, :2].tolist() == rows[1][:2]
    assert all(4 <= t < vocab.size for t in contexts[0, 3:8].tolist() + contexts[1, 2:4].tolist())
    assert contexts[0, 8].item() == EOS_ID and contexts[1, 4:].tolist() == [EOS_ID] + [PAD_ID] * 4
    assert contexts[:, 0].tolist() == [BOS_ID, BOS_ID]


@pytest.fixture
def synthetic_files(tmp_path):
    return write_synthetic(tmp_path / "data", normal=100, abnormal=20, seed=0)


def test_one_ppo_step_on_a_tiny_gpt_neo_is_finite_and_favours_rewarded_lists(synthetic_files, tmp_path):
    config = TrainConfig(
        method="logneo", arch=GPT_NEO, shape=TINY, pretrain_epochs=0, top_k=2, rl_lr=1e-2, ce_coef=0.0, samples=4
    )
    trainer = Trainer(config, synthetic_files["normal"], tmp_path / "out", progress=False)
    trainer.prepare_rl()
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    rollout = trainer.collect(list(range(32)), torch.Generator().manual_seed(0))
    assert rollout.lists.shape[1:] == (4, 2) and torch.all(rollout.advantages.sum(-1).abs() < 1e-5)  # leave-one-out
    stats = trainer.ppo_update(rollout)
    assert all(math.isfinite(value) for value in stats.values())
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    with torch.no_grad():
        logits = mask_logits(next_logits(trainer.model, rollout.input_ids), trainer.candidates)[rollout.mask]
        gained = plackett_luce_log_prob(logits, rollout.lists) - rollout.old_log_probs
    # the surrogate started at 0 (ratios 1, advantages summing to 0 per position); the update raised it
    assert (gained.exp() * rollout.advantages).mean().item() > 0


@pytest.mark.parametrize("where", ["train", "validation"])
def test_training_refuses_a_sequence_longer_than_the_model_before_any_forward_pass(tmp_path, monkeypatch, where):
    files = {"train": [(1, 2, 3)] * 8, "validation": [(1, 2, 3)] * 2}
    files[where] = [*files[where], tuple([1, 2, 3] * 21)]  # 63 keys: 65 tokens framed, the model has 64
    for name, rows in files.items():
        write_sequences(tmp_path / name, rows)

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr("rationanomaly.nextkey.train.next_logits", no_forward)
    config = TrainConfig(shape=TINY, pretrain_epochs=1, top_k=2)
    message = rf"{tmp_path / where}: sequence {len(files[where])} holds 63 keys.*n_positions=64, so at most 62"
    with pytest.raises(SequenceTooLongError, match=message):
        train(tmp_path / "train", tmp_path / "out", config, validation_path=tmp_path / "validation", progress=False)


def _metrics_without_timing(folder: Path) -> list[dict]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    kept = [{k: v for k, v in r["data"].items() if not k.startswith("timing_s/")} for r in records]
    return [{"step": r["step"], **data} for r, data in zip(records, kept, strict=True)]


def test_seeded_runs_repeat_exactly_and_metrics_are_watchable(synthetic_files, tmp_path):
    config = TrainConfig(method="logneo", shape=TINY, pretrain_epochs=2, rl_episodes=2, top_k=2, batch_size=32)
    for name in ("a", "b"):
        train(synthetic_files["normal"], tmp_path / name, config, progress=False)
    _assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert _metrics_without_timing(tmp_path / "a") == _metrics_without_timing(tmp_path / "b")
    from rationanomaly.watch import watch

    summary = watch([tmp_path / "a"], tmp_path / "watch")
    assert summary["steps"] == 4 and summary["reward_key"] == "critic/score/mean"  # 2 epochs + 2 episodes
    assert set(summary["validation_last"]) == {"ce", "reward"}
    meta = json.loads((tmp_path / "a" / "nextkey.json").read_text())
    assert (meta["pretrain"]["epochs_run"], meta["rl"]["episodes_run"], meta["seed"]) == (2, 2, 0)


def test_an_interrupted_run_resumes_to_the_same_model(synthetic_files, tmp_path, monkeypatch):
    config = TrainConfig(method="loggpt", shape=TINY, pretrain_epochs=2, rl_episodes=2, top_k=2, batch_size=32)
    train(synthetic_files["normal"], tmp_path / "whole", config, progress=False)
    original = Trainer._log_metrics
    calls = []

    def crash_on_the_first_episode(self, data):
        calls.append(data)
        if len(calls) == 3:  # after both pre-training epochs, before RL episode 1 is saved
            raise RuntimeError("simulated crash")
        original(self, data)

    monkeypatch.setattr(Trainer, "_log_metrics", crash_on_the_first_episode)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(synthetic_files["normal"], tmp_path / "resumed", config, progress=False)
    assert (tmp_path / "resumed" / "resume.pt").is_file()
    monkeypatch.setattr(Trainer, "_log_metrics", original)
    train(synthetic_files["normal"], tmp_path / "resumed", config, progress=False)
    _assert_same_weights(tmp_path / "whole", tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "resume.pt").exists()
    assert _metrics_without_timing(tmp_path / "whole") == _metrics_without_timing(tmp_path / "resumed")
    with pytest.raises(ValueError, match="already holds a trained model"):
        train(synthetic_files["normal"], tmp_path / "resumed", config, progress=False)


def test_resume_saves_snapshots_without_copies_and_loads_them_onto_the_cpu(synthetic_files, tmp_path, monkeypatch):
    config = TrainConfig(method="pretrain", shape=TINY, pretrain_epochs=1, top_k=2)
    trainer = Trainer(config, synthetic_files["normal"], tmp_path / "out", progress=False)
    (tmp_path / "out").mkdir()
    trainer.state.best_state = trainer._snapshot()
    saved, loads, real_save, real_load = {}, [], torch.save, torch.load

    def spy_save(obj, path, *args, **kwargs):
        saved.update(obj)
        real_save(obj, path, *args, **kwargs)

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "save", spy_save)
    monkeypatch.setattr(torch, "load", spy_load)
    trainer._save_resume()
    assert saved["state"]["best_state"] is trainer.state.best_state  # no deep copy of every tensor per save
    again = Trainer(config, synthetic_files["normal"], tmp_path / "out", progress=False)
    assert again._load_resume() and loads == ["cpu"]  # CPU snapshots are not moved to the GPU on a resume
    assert all(t.device.type == "cpu" for t in again.state.best_state.values())
    assert all(torch.equal(again.state.best_state[n], t) for n, t in trainer.state.best_state.items())


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_process(tmp_path):
    # 100 sequences: 90 train (batches 16 x 5 + 10, every batch splits over 2 ranks), 10 validate
    files = write_synthetic(tmp_path / "data", normal=100, abnormal=0, seed=2)
    knobs = [
        "--n_layer",
        "1",
        "--n_head",
        "2",
        "--n_embd",
        "16",
        "--dropout",
        "0",
        "--top_k",
        "2",
        "--seed",
        "0",
        "--pretrain_epochs",
        "2",
        "--rl_episodes",
        "1",
        "--rl_batch_size",
        "16",
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "rationanomaly.nextkey",
        "train",
        "--train",
        str(files["normal"]),
        "--method",
        "logneo",
        "--output_dir",
        str(tmp_path / "ddp"),
        "--quiet",
        *knobs,
    ]
    run = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("logneo (gpt2)") == 1  # only rank 0 prints
    single = TrainConfig(
        method="logneo",
        shape=ModelShape(n_layer=1, n_head=2, n_embd=16, dropout=0.0),
        pretrain_epochs=2,
        rl_episodes=1,
        rl_batch_size=16,
        top_k=2,
    )
    train(files["normal"], tmp_path / "single", single, progress=False)
    ddp, one = _metrics_without_timing(tmp_path / "ddp"), _metrics_without_timing(tmp_path / "single")
    # pre-training: gradients averaged over the ranks equal the whole batch's (up to float summation order), so
    # the validation loss after each epoch agrees; RL draws its lists per rank, so only its sanity is compared
    for epoch in (0, 1):
        assert ddp[epoch]["val-core/nextkey/ce/mean@1"] == pytest.approx(
            one[epoch]["val-core/nextkey/ce/mean@1"], abs=1e-5
        )
    assert math.isfinite(ddp[2]["actor/pg_loss"]) and math.isfinite(ddp[2]["actor/ce_loss"])
    assert json.loads((tmp_path / "ddp" / "nextkey.json").read_text())["world_size"] == 2


@pytest.mark.slow
@pytest.mark.realdata
def test_comparison_on_a_slice_of_deeplog_hdfs(public_data, tmp_path):
    normal = read_sequences(public_data / "deeplog" / "hdfs_train")[:300]
    abnormal = read_sequences(public_data / "deeplog" / "hdfs_test_abnormal_part1")[:300]
    write_sequences(tmp_path / "normal", normal)
    write_sequences(tmp_path / "abnormal", abnormal)
    config = TrainConfig(
        shape=ModelShape(n_layer=1, n_head=2, n_embd=16), pretrain_epochs=2, rl_episodes=1, batch_size=32, lr=3e-3
    )

    def run_comparison() -> dict:
        return compare(tmp_path / "normal", tmp_path / "abnormal", tmp_path / "out", config, progress=False)

    record = run_comparison()
    train_keys = {key for row in read_sequences(tmp_path / "out" / "data" / "train") for key in row}
    unseen = sum(any(key not in train_keys for key in row) for row in abnormal)
    assert unseen > 0
    for row in record["rows"]:
        assert (row["tp"] + row["fn"], row["fp"] + row["tn"], row["top_k"]) == (300, 60, 7)  # 20% of 300 test normal
        assert row["tp"] >= unseen  # a session holding a key training never saw is flagged by every detector
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert table.count("\n") == 6 and "LogNEO mode" in table and "LogGPT mode" in table
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 10_000
    assert run_comparison()["rows"] == record["rows"]  # a second call finds every stage done and only re-reads it


def test_loggpts_stop_rule_and_pretraining_patience_end_runs_early(synthetic_files, tmp_path):
    # lr 0 never improves the validation loss: patience 1 stops pre-training after its 2nd epoch; a 1e9 threshold
    # counts every RL episode, so stop_after 2 ends RL after 2 of 5; a tie moves the best on (LogGPT's <=)
    config = TrainConfig(
        method="logneo",
        shape=TINY,
        pretrain_epochs=6,
        patience=1,
        lr=0.0,
        rl_episodes=5,
        stop_after=2,
        min_improvement=1e9,
        rl_lr=0.0,
        top_k=2,
        batch_size=32,
    )
    meta = train(synthetic_files["normal"], tmp_path / "out", config, progress=False)
    assert (meta["pretrain"]["epochs_run"], meta["pretrain"]["stopped_early"], meta["pretrain"]["best_epoch"]) == (
        2,
        True,
        1,
    )
    assert (meta["rl"]["episodes_run"], meta["rl"]["stopped_early"], meta["rl"]["best_episode"]) == (2, True, 2)


def test_a_plain_gpt_neo_folder_gets_its_embeddings_resized_to_the_keys(synthetic_files, tmp_path):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    text_model = GPTNeoForCausalLM(
        GPTNeoConfig(
            vocab_size=500,
            hidden_size=16,
            num_layers=2,
            num_heads=2,
            attention_types=[[["global", "local"], 1]],
            max_position_embeddings=64,
        )
    )
    text_model.save_pretrained(tmp_path / "gpt-neo-text")  # a downloaded GPT-Neo looks like this, only larger
    meta = train(
        synthetic_files["normal"],
        tmp_path / "out",
        TrainConfig(pretrain_epochs=1, top_k=2),
        init=tmp_path / "gpt-neo-text",
        progress=False,
    )
    weights = _weights(tmp_path / "out")
    assert meta["arch"] == "gpt-neo" and meta["init"] == str(tmp_path / "gpt-neo-text")
    assert weights["transformer.wte.weight"].shape == (4 + 7, 16)  # 4 specials + the 7 synthetic keys


@pytest.mark.parametrize(("device", "expected"), [("cuda", "high"), ("cuda:1", "high"), ("cpu", "highest")])
def test_fp32_matmuls_may_use_tf32_on_a_gpu_only(device, expected):
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        set_matmul_precision(device)
        assert torch.get_float32_matmul_precision() == expected
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize(
    "values",
    [
        torch.tensor([[0.5, -0.5], [1.5, -1.5], [0.0, 0.0]]),  # leave-one-out advantages: zero mean per row
        torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0]),  # any mean
        torch.tensor([2.0]),  # one value: 0 instead of torch.std's NaN (the floor then applies)
    ],
)
def test_batch_std_on_one_process_is_torch_std(values):
    expected = 0.0 if values.numel() == 1 else values.std().item()
    assert batch_std(values).item() == pytest.approx(expected, rel=1e-6, abs=1e-12)


BATCH_STD_RANK = """
import os, sys, torch
from rationanomaly.nextkey.train import batch_std
torch.distributed.init_process_group("gloo")
rank = int(os.environ["RANK"])
values = torch.tensor([[0.5, -0.5], [1.5, -1.5], [0.25, -0.25]]) if rank == 0 else torch.tensor([[4.0, -4.0]])
print(repr(batch_std(values, 2).item()))
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow  # two processes starting torch: ~25 s on 2 shared cores
def test_two_gloo_ranks_scale_advantages_by_the_whole_batchs_std():
    # rank 0 alone has std 0.87, rank 1 alone 5.66: each must divide by the std of all 8 values, 2.78
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    env.update({"WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"})
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", BATCH_STD_RANK], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True
        )
        for r in range(2)
    ]
    outputs = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks)
    whole = torch.tensor([0.5, -0.5, 1.5, -1.5, 0.25, -0.25, 4.0, -4.0]).std().item()
    assert [float(out) for out in outputs] == pytest.approx([whole, whole], rel=1e-6)


@pytest.mark.parametrize(
    ("config", "pretrain_epochs", "refused"),
    [
        (TrainConfig(batch_size=1), 2, "--batch_size 1 is smaller than the 2 processes"),  # pre-training: no update
        (TrainConfig(method="logneo", rl_batch_size=1), 0, "--rl_batch_size 1 is smaller"),  # RL: no update
        (TrainConfig(method="logneo", batch_size=1, rl_batch_size=2), 0, None),  # no pre-training epochs run
        (TrainConfig(rl_batch_size=1), 2, None),  # pre-training only: the RL batch is unused
    ],
)
def test_a_batch_smaller_than_the_process_count_is_refused(config, pretrain_epochs, refused):
    if refused is None:
        check_batch_sizes(config, pretrain_epochs, world=2)
    else:
        with pytest.raises(ValueError, match=refused):
            check_batch_sizes(config, pretrain_epochs, world=2)


@pytest.mark.parametrize("knob", ["top_k", "batch_size", "rl_batch_size"])
def test_a_config_with_a_zero_k_or_batch_is_refused(knob):
    with pytest.raises(ValueError, match=f"{knob}=0"):
        TrainConfig(**{knob: 0})


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--top_k", "0"), ("--batch_size", "0"), ("--rl_batch_size", "-1"), ("--validation_ratio", "1")],
)
def test_train_cli_refuses_a_zero_k_or_batch_in_one_line(tmp_path, capsys, flag, value):
    argv = ["train", "--train", "x", "--method", "logneo", "--output_dir", str(tmp_path), flag, value]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {flag}: {value}" in error.splitlines()[-1]


@pytest.mark.parametrize(
    ("count", "ratio", "train_size"),
    [
        (10, 0.1, 9),  # LogGPT's 10%
        (3, 0.5, 2),  # round(1.5) = 2
        (2, 0.9, 1),  # at least one sequence trains
        (5, 0.01, 4),  # at least one validates
    ],
)
def test_split_validation_is_split_normal_at_the_ratios_train_size(count, ratio, train_size):
    sequences = [(i,) for i in range(count)]
    train_rows, validation = split_validation(sequences, ratio, seed=3)
    assert (train_rows, validation) == split_normal(sequences, train_size, seed=3)
    shuffled = list(sequences)
    random.Random(3).shuffle(shuffled)  # the shuffle both have always used
    assert train_rows + validation == shuffled and len(train_rows) == train_size
    assert split_validation(sequences, 0.0, seed=3) == (sequences, [])
