"""Parquet for verl: row schema, the seeded split, build-time checks, and loading through verl's own datasets."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from rationanomaly.labels import ABILITY, ABNORMAL, DATA_SOURCE, NORMAL, cot_label
from rationanomaly.parquet import (
    SFT_SYSTEM_LLAMA2,
    SFT_SYSTEM_NONE,
    SFT_SYSTEM_TURN,
    ParquetDataError,
    build_parquet,
    check_ground_truth,
    llama2_system_block,
    rl_row,
    sft_messages,
    split_samples,
)
from rationanomaly.paths import REPO_ROOT
from rationanomaly.prompts import COT_SYSTEM_PROMPT, user_message
from rationanomaly.samples import Sample, write_samples

SYSTEM = "You are a log analyst. Think in <think></think>, answer in <answer></answer>."


def make_samples(normal: int, abnormal: int) -> list[Sample]:
    """Distinct templates with CoT labels: `normal` normal ones first, then `abnormal` abnormal ones."""
    samples = [
        Sample(f"service {i} started on node <*>", cot_label(f"Routine start {i}.", NORMAL)) for i in range(normal)
    ]
    samples += [
        Sample(f"machine check {i} on core <*>", cot_label(f"Hardware fault {i}.", ABNORMAL)) for i in range(abnormal)
    ]
    return samples


def build_all(tmp_path, samples, keys=("rl_train", "rl_validation", "sft_train", "sft_validation"), **kwargs):
    """Build the files named by `keys` into tmp_path and return (paths, metadata)."""
    paths = {key: tmp_path / f"{key}.parquet" for key in keys}
    return paths, build_parquet(samples, paths, SYSTEM, **kwargs)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("abnormal", "is not a CoT target"),  # bare label: the reference builder's bug
        ("<think>x</think>", "is not a CoT target"),  # no answer
        ("<think></think><answer>normal</answer>", "non-empty think"),  # empty think
        ("<answer>normal</answer><think>x</think>", "is not a CoT target"),  # tags out of order
        ("<think>x</think><answer>anomalous</answer>", "is not a label"),  # answer not a label
    ],
)
def test_check_ground_truth_malformed_target_raises_naming_the_sample(label, message):
    with pytest.raises(ParquetDataError, match=message) as error:
        check_ground_truth(Sample("ciod: failed <*>", label), "train.json item 7")
    assert "train.json item 7" in str(error.value) and "ciod: failed <*>" in str(error.value)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (cot_label("ok", NORMAL), NORMAL),
        ("<think>bad</think><answer> Abnormal </answer>", ABNORMAL),  # case and spaces as the reward reads them
    ],
)
def test_check_ground_truth_well_formed_target_returns_its_label(label, expected):
    assert check_ground_truth(Sample("t", label), "here") == expected


def test_rl_row_has_verl_schema_and_cot_ground_truth():
    sample = Sample("ciod: failed <*>", cot_label("It failed.", ABNORMAL))
    row = rl_row(3, "train", sample, SYSTEM)
    assert row == {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_message(sample.input)}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": sample.label},
        "extra_info": {
            "index": 3,
            "split": "train",
            "template": sample.input,
            "label": ABNORMAL,
            "instruction": sample.instruction,
        },
    }


@pytest.mark.parametrize(
    ("mode", "roles", "user_prefix"),
    [
        (SFT_SYSTEM_LLAMA2, ["user", "assistant"], llama2_system_block(SYSTEM)),  # folded <<SYS>> block
        (SFT_SYSTEM_TURN, ["system", "user", "assistant"], ""),  # separate system turn
        (SFT_SYSTEM_NONE, ["user", "assistant"], ""),  # no system prompt at all
    ],
)
def test_sft_messages_carry_system_prompt_per_mode(mode, roles, user_prefix):
    sample = Sample("ciod: failed <*>", cot_label("It failed.", ABNORMAL))
    messages = sft_messages(sample, SYSTEM, mode)
    assert [m["role"] for m in messages] == roles
    user = next(m for m in messages if m["role"] == "user")
    assert user["content"] == user_prefix + user_message(sample.input)
    assert messages[-1]["content"] == sample.label


@pytest.mark.parametrize(
    ("normal", "abnormal", "ratio", "expected_validation"),
    [
        (90, 10, 0.1, (9, 1)),  # stratified: 10% of each label
        (18, 2, 0.1, (2, 1)),  # 1.8 rounds to 2; 0.2 rounds to 0 but one abnormal is always held out
        (5, 1, 0.5, (2, 0)),  # a single abnormal stays in training
        (10, 3, 0.0, (0, 0)),  # no validation
    ],
)
def test_split_samples_holds_out_each_label_by_ratio(normal, abnormal, ratio, expected_validation):
    split = split_samples(make_samples(normal, abnormal), ratio, seed=1)
    held = [check_ground_truth(s, "") for _, s in split.validation]
    assert (held.count(NORMAL), held.count(ABNORMAL)) == expected_validation
    assert len(split.train) + len(split.validation) == normal + abnormal
    assert [i for i, _ in split.train] == sorted(i for i, _ in split.train)


def test_split_samples_same_seed_same_split_other_seed_other_split():
    samples = make_samples(50, 10)
    first, again, other = (split_samples(samples, 0.2, seed) for seed in (3, 3, 4))
    assert [i for i, _ in first.validation] == [i for i, _ in again.validation]
    assert [i for i, _ in first.validation] != [i for i, _ in other.validation]


def test_build_parquet_bad_sample_writes_nothing(tmp_path):
    samples = [*make_samples(3, 1), Sample("broken <*>", "normal")]
    with pytest.raises(ParquetDataError, match="sample 4"):
        build_all(tmp_path, samples)
    assert list(tmp_path.iterdir()) == []


def test_build_parquet_empty_validation_file_is_an_error(tmp_path):
    # a positive ratio that holds out nothing (one sample per label) is a mistake, not "validation off"
    with pytest.raises(ParquetDataError, match="no rows to write"):
        build_all(tmp_path, make_samples(1, 1), validation_ratio=0.1)


def test_build_parquet_default_trains_on_every_sample_and_writes_no_validation_file(tmp_path):
    paths, meta = build_all(tmp_path, make_samples(18, 2))  # the default ratio: 0
    assert (meta["train"], meta["validation"], meta["validation_ratio"]) == (20, 0, 0.0)
    assert sorted(meta["outputs"]) == ["rl_train", "sft_train"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl_train.parquet", "sft_train.parquet"]
    assert len(pd.read_parquet(paths["rl_train"])) == len(pd.read_parquet(paths["sft_train"])) == 20


def test_build_parquet_rl_and_sft_share_the_split(tmp_path):
    paths, meta = build_all(tmp_path, make_samples(18, 2), validation_ratio=0.1, seed=5)
    assert (meta["train"], meta["validation"], meta["train_abnormal"], meta["validation_abnormal"]) == (17, 3, 1, 1)
    rl_val = pd.read_parquet(paths["rl_validation"])
    sft_val = pd.read_parquet(paths["sft_validation"])
    assert list(rl_val["extra_info"].map(lambda e: e["template"])) == list(
        sft_val["extra_info"].map(lambda e: e["template"])
    )
    assert set(rl_val["extra_info"].map(lambda e: e["split"])) == {"validation"}
    assert len(pd.read_parquet(paths["rl_train"])) == len(pd.read_parquet(paths["sft_train"])) == 17


def test_rl_parquet_loads_with_verl_rlhf_dataset(tmp_path, tiny_tokenizer_dir):
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.dataset.rl_dataset import collate_fn

    samples = make_samples(6, 2)
    paths, meta = build_all(tmp_path, samples, validation_ratio=0.25, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 1024,
            "filter_overlong_prompts": True,
            "truncation": "left",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    dataset = create_rl_dataset([str(paths["rl_train"])], config, tokenizer, None)
    assert len(dataset) == meta["train"] == 5  # 2 of 6 normal + 1 of 2 abnormal held out
    row = dataset[0]
    assert row["data_source"] == DATA_SOURCE and row["ability"] == ABILITY
    assert row["reward_model"]["ground_truth"] == samples[row["index"]].label
    assert [m["role"] for m in row["raw_prompt"]] == ["system", "user"]
    rendered = tokenizer.apply_chat_template(row["raw_prompt"], tokenize=False, add_generation_prompt=True)
    assert llama2_system_block(SYSTEM) in rendered and samples[row["index"]].input in rendered
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_fn)))
    assert list(batch["reward_model"][0]) == ["style", "ground_truth"] and len(batch["index"]) == 3


def _load_sft(path, tokenizer, **config):
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    base = {"messages_key": "messages", "pad_mode": "no_padding", "max_length": 1024, "truncation": "error"}
    return MultiTurnSFTDataset(str(path), tokenizer, OmegaConf.create({**base, **config}))


def test_sft_parquet_llama2_fold_passes_verl_check_and_masks_only_the_answer(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    samples = make_samples(3, 1)
    paths, _ = build_all(tmp_path, samples, ["sft_train"], validation_ratio=0.0, sft_system=SFT_SYSTEM_LLAMA2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    dataset = _load_sft(paths["sft_train"], tokenizer)
    for index, sample in enumerate(samples):
        item = dataset[index]
        ids, mask = item["input_ids"], item["loss_mask"].bool()
        assert tokenizer.decode(ids[mask]) == f" {sample.label} {tokenizer.eos_token}"
        user = llama2_system_block(SYSTEM) + user_message(sample.input)
        assert tokenizer.decode(ids[~mask]) == f"{tokenizer.bos_token}[INST] {user} [/INST]"
        # SFT trains on exactly the prompt tokens GRPO will render from the RL row's system + user turns
        rl_prompt = rl_row(index, "train", sample, SYSTEM)["prompt"]
        assert ids[~mask].tolist() == tokenizer.apply_chat_template(
            rl_prompt, add_generation_prompt=True, tokenize=True, return_dict=False
        )


def test_sft_parquet_system_turn_with_llama2_template_fails_verl_check(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    paths, _ = build_all(tmp_path, make_samples(2, 1), ["sft_train"], validation_ratio=0.0, sft_system=SFT_SYSTEM_TURN)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    with pytest.raises(AssertionError, match="ignore_input_ids_mismatch"):
        _load_sft(paths["sft_train"], tokenizer)[0]
    # the documented escape hatch loads, but the Llama-2 template renders a lone system turn as nothing
    item = _load_sft(paths["sft_train"], tokenizer, ignore_input_ids_mismatch=True)[0]
    assert SYSTEM not in tokenizer.decode(item["input_ids"])


def test_parquet_builder_cli_with_a_validation_ratio_writes_four_files_and_metadata(tmp_path):
    samples_path = tmp_path / "train_cot.json"
    write_samples(samples_path, make_samples(8, 2))
    prompt_file = tmp_path / "system.txt"
    prompt_file.write_text(f"  {SYSTEM}\n", encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "datasets" / "parquet_builder.py"),
            "--input",
            str(samples_path),
            "--output_dir",
            str(out),
            "--system-prompt",
            str(prompt_file),
            "--validation_ratio",
            "0.2",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert re.search(r"train +7 rows \(1 abnormal\)", result.stdout)  # 2 of 8 normal + 1 of 2 abnormal held out
    assert sorted(p.name for p in out.iterdir()) == [
        "bgl_train.parquet",
        "bgl_validation.parquet",
        "parquet_meta.json",
        "sft_train.parquet",
        "sft_val.parquet",
    ]
    meta = json.loads((out / "parquet_meta.json").read_text())
    assert (meta["seed"], meta["validation"], meta["system_prompt"]) == (7, 3, SYSTEM)
    assert pd.read_parquet(out / "bgl_train.parquet")["prompt"][0][0]["content"] == SYSTEM


def test_parquet_builder_default_prompt_is_the_package_cot_prompt(tmp_path):
    samples_path = tmp_path / "train_cot.json"
    write_samples(samples_path, make_samples(4, 1))
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("parquet_builder_cli", REPO_ROOT / "datasets" / "parquet_builder.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--input", str(samples_path), "--output_dir", str(tmp_path / "o")]) == 0
    assert pd.read_parquet(tmp_path / "o" / "bgl_train.parquet")["prompt"][0][0]["content"] == COT_SYSTEM_PROMPT


def test_parquet_builder_cli_default_trains_on_every_sample_and_names_a_stale_validation_file(tmp_path, capsys):
    samples_path = tmp_path / "train_cot.json"
    write_samples(samples_path, make_samples(8, 2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "bgl_validation.parquet").write_bytes(b"left from an earlier build")
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("parquet_builder_cli", REPO_ROOT / "datasets" / "parquet_builder.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--input", str(samples_path), "--output_dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert re.search(r"train +10 rows \(2 abnormal\)", stdout) and re.search(r"validation +0 rows", stdout)
    assert f"note: {out / 'bgl_validation.parquet'} is left from an earlier build" in stdout
    assert (out / "bgl_validation.parquet").read_bytes() == b"left from an earlier build"  # not deleted
    assert not (out / "sft_val.parquet").exists()
    assert len(pd.read_parquet(out / "bgl_train.parquet")) == 10


def run_script(name: str, *args) -> str:
    """Run a datasets/ script as a user would and return its stdout."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "datasets" / name), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_embedded_sample_chain_patch_join_parquet(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    sample = REPO_ROOT / "rationanomaly" / "sample_data"
    for name in ("bgl", "spirit"):
        run_script(
            "anomaly_patch.py",
            "--input",
            sample / f"{name}_templates.csv",
            "--patch",
            sample / "anomaly_patch.json",
            "--output",
            tmp_path / f"{name}_rectified.csv",
            "--report",
            tmp_path / f"{name}_patch_report.json",
        )
    run_script(
        "cot_distill.py",
        "--input",
        tmp_path / "bgl_rectified.csv",
        tmp_path / "spirit_rectified.csv",
        "--rationales",
        sample / "rationales.json",
        "--output_dir",
        tmp_path / "cot",
    )
    run_script("parquet_builder.py", "--input", tmp_path / "cot" / "train_cot.json", "--output_dir", tmp_path / "pq")
    meta = json.loads((tmp_path / "pq" / "parquet_meta.json").read_text())
    assert (meta["samples"], meta["train"], meta["validation"]) == (80, 80, 0)  # every sample trains
    dataset = _load_sft(tmp_path / "pq" / "sft_train.parquet", AutoTokenizer.from_pretrained(tiny_tokenizer_dir))
    assert len(dataset) == 80 and int(dataset[0]["loss_mask"].sum()) > 0


@pytest.mark.realdata
def test_public_rationales_build_parquet_that_verl_loads(public_data, tmp_path, tiny_tokenizer_dir):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset

    from rationanomaly.rationales import join_rationales, read_rationales, read_templates, rectify_templates

    templates = [
        s
        for name in ("bgl", "spirit")
        for s in rectify_templates(
            read_templates(public_data / "logprompt" / f"templates_{name}.xlsx"),
            public_data / "rationanomaly" / "anomaly_patch.json",
        )
    ]
    joined = join_rationales(templates, read_rationales(public_data / "rlog" / "AnomalyDetection_with_reason.json"))
    paths, meta = build_all(tmp_path, joined.samples, validation_ratio=0.1, seed=0)
    # 296 joined (37 abnormal): round(0.1 * 259) = 26 normal and round(0.1 * 37) = 4 abnormal held out
    assert (meta["train"], meta["validation"], meta["validation_abnormal"]) == (266, 30, 4)
    config = OmegaConf.create(
        {"max_prompt_length": 2048, "filter_overlong_prompts": True, "cache_dir": str(tmp_path / "cache")}
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert len(create_rl_dataset([str(paths["rl_validation"])], config, tokenizer, None)) == 30
    sft = _load_sft(paths["sft_validation"], tokenizer, max_length=4096)
    assert all(
        tokenizer.decode(sft[i]["input_ids"][sft[i]["loss_mask"].bool()]).strip().endswith("</answer> </s>")
        for i in range(len(sft))
    )


def test_parquet_builder_rejects_bare_labels_with_a_message(tmp_path, capsys):
    samples_path = tmp_path / "train.json"
    write_samples(samples_path, [Sample("disk failure on <*>", ABNORMAL), Sample("fan ok <*>", NORMAL)])
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("parquet_builder_cli", REPO_ROOT / "datasets" / "parquet_builder.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--input", str(samples_path), "--output_dir", str(tmp_path / "o")]) == 2
    assert "not a CoT target" in capsys.readouterr().err and not (tmp_path / "o").exists()
