"""Next-key models: transformers' GPT-2 and GPT-Neo over a key vocabulary, saved as ordinary HF folders.

A model folder holds what `save_pretrained` writes plus `nextkey.json` (vocabulary, framing, K, how it was
trained). Sizes: LogGPT's GPT-2 is 6 layers, 6 heads, width 60 (nokia/LogGPT args/*_config.py), the default
here for both architectures; GPT-Neo-1.3B comes from a local folder (`--init`) with its embeddings cut to the
key vocabulary and re-initialised (its text-token rows mean nothing for log keys).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from rationanomaly.io import write_json_atomic
from rationanomaly.nextkey.keys import BOS_ID, EOS_ID, MAX_POSITIONS, PAD_ID, KeyVocabulary, max_keys

logger = logging.getLogger(__name__)

GPT2, GPT_NEO = "gpt2", "gpt-neo"
ARCHS = (GPT2, GPT_NEO)
META_FILE = "nextkey.json"
TRANSFORMER, NGRAM = "transformer", "ngram"

CPU_THREADS = 1  # measured on 2 shared cores: a 0.3 M-parameter step took 27 ms on 1 thread, 3 s on 2 (OpenMP
# threads spin-waiting for cores other jobs hold); small models gain nothing from more. --threads overrides.


def set_cpu_threads(threads: int | None, device: torch.device | str) -> None:
    """Use `threads` intra-op threads (default CPU_THREADS) when computing on the CPU; a GPU run is left alone."""
    if torch.device(device).type == "cpu":
        torch.set_num_threads(threads or CPU_THREADS)


def set_matmul_precision(device: torch.device | str) -> None:
    """Let fp32 matrix products use TF32 on a GPU; a CPU run is left alone.

    The models are trained and scored in fp32 (no mixed precision), and PyTorch keeps TF32 off for matmuls by
    default, so without this an Ampere-or-later GPU runs them at a fraction of its tensor-core speed. TF32 keeps
    fp32's range and a 10-bit mantissa, ample for next-key logits whose ranks, not last digits, decide detection.
    """
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


class ModelFolderError(ValueError):
    """A model folder that is missing, not a next-key model, or made for another key vocabulary."""


class SequenceTooLongError(ValueError):
    """A key sequence that, framed, needs more positions than the model has (its position embedding would fail)."""


def model_positions(model) -> int | None:
    """How many token positions the model has (n_positions for GPT-2, max_position_embeddings for GPT-Neo); None
    for a model without a config naming one (no limit to check)."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return None if positions is None else int(positions)


def check_lengths(sequences, vocab: KeyVocabulary, n_positions: int | None, source: str | Path) -> None:
    """Refuse, before any forward pass, the first sequence whose framed tokens exceed the model's positions.

    Past them GPT-2/GPT-Neo index their position embedding out of range: an IndexError on a CPU, a device-side
    assert that kills the process on a GPU. `n_positions` None: no limit.
    """
    if n_positions is None:
        return
    limit = max_keys(n_positions, vocab.framing)
    for index, sequence in enumerate(sequences):
        if len(sequence) > limit:
            raise SequenceTooLongError(
                f"{source}: sequence {index + 1} holds {len(sequence)} keys, {len(sequence) + n_positions - limit} "
                f"tokens framed as a {vocab.framing}; the model has n_positions={n_positions}, so at most {limit} "
                "keys fit: cut or drop the longer sequences (`nextkey sequences --max_len` cuts time windows) or "
                "use a model with more positions"
            )


@dataclass(frozen=True)
class ModelShape:
    """Size of a model built from scratch (LogGPT's GPT-2 by default)."""

    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 60
    dropout: float = 0.1  # GPT-2's default, which LogGPT keeps
    n_positions: int = MAX_POSITIONS


def quiet_transformers() -> None:
    """No per-shard progress bars from transformers: our commands show their own progress and print one summary."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def model_config(arch: str, vocab: KeyVocabulary, shape: ModelShape = ModelShape()):
    """A transformers config for `arch` over the key vocabulary."""
    ids = {"vocab_size": vocab.size, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    if arch == GPT2:
        from transformers import GPT2Config

        return GPT2Config(
            n_layer=shape.n_layer,
            n_head=shape.n_head,
            n_embd=shape.n_embd,
            n_positions=shape.n_positions,
            resid_pdrop=shape.dropout,
            embd_pdrop=shape.dropout,
            attn_pdrop=shape.dropout,
            **ids,
        )
    if arch == GPT_NEO:
        from transformers import GPTNeoConfig

        # GPT-Neo alternates global and local attention layers (its released models do); an odd layer count ends
        # with a global one.
        pattern = [[["global", "local"], shape.n_layer // 2]] + ([[["global"], 1]] if shape.n_layer % 2 else [])
        return GPTNeoConfig(
            num_layers=shape.n_layer,
            num_heads=shape.n_head,
            hidden_size=shape.n_embd,
            max_position_embeddings=shape.n_positions,
            attention_types=pattern,
            window_size=min(256, shape.n_positions),
            resid_dropout=shape.dropout,
            embed_dropout=shape.dropout,
            attention_dropout=shape.dropout,
            **ids,
        )
    raise ValueError(f"arch={arch!r}; use one of {ARCHS}")


def build_model(arch: str, vocab: KeyVocabulary, shape: ModelShape = ModelShape(), seed: int = 0):
    """A randomly initialised causal LM over the key vocabulary (seeded, so runs repeat)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config(arch, vocab, shape), attn_implementation="eager")


def read_meta(model_dir: str | Path) -> dict:
    """`nextkey.json` of a model folder, with a clear error when the folder is not a next-key model."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(
            f"{model_dir}: no such model folder; train one with "
            "`python -m rationanomaly.nextkey train ... --output_dir DIR`"
        )
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise ModelFolderError(
            f"{model_dir}: no {META_FILE}, so not a next-key model folder; pass a folder written "
            "by `python -m rationanomaly.nextkey train`"
        )
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelFolderError(f"{meta_path}: not valid JSON ({error}); retrain into a fresh folder") from error


def vocabulary_of(meta: dict, model_dir: str | Path) -> KeyVocabulary:
    """The key vocabulary stored in a model folder's metadata."""
    try:
        return KeyVocabulary.from_dict(meta["vocabulary"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFolderError(
            f"{model_dir}/{META_FILE}: unreadable vocabulary ({error}); retrain the model"
        ) from error


def check_same_vocabulary(model_dir: str | Path, model_vocab: KeyVocabulary, vocab: KeyVocabulary) -> None:
    """Refuse a next-key model whose key vocabulary differs from the one the new data needs."""
    if model_vocab.keys != vocab.keys or model_vocab.framing != vocab.framing:
        missing = sorted(set(vocab.keys) - set(model_vocab.keys))[:5]
        raise ModelFolderError(
            f"{model_dir}: made for another key vocabulary ({len(model_vocab.keys)} keys, framing "
            f"{model_vocab.framing}; this data has {len(vocab.keys)} keys, framing {vocab.framing}"
            f"{', e.g. keys ' + str(missing) + ' are new' if missing else ''}); train from scratch on this data or "
            "pass --init a model trained on the same keys"
        )


def load_model(model_dir: str | Path):
    """(model in eval mode, metadata, vocabulary) of a saved transformer next-key model."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    meta = read_meta(model_dir)
    if meta.get("kind") != TRANSFORMER:
        raise ModelFolderError(f"{model_dir}: a {meta.get('kind')!r} model, not a transformer one")
    vocab = vocabulary_of(meta, model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    if model.get_input_embeddings().num_embeddings != vocab.size:
        raise ModelFolderError(
            f"{model_dir}: the model has {model.get_input_embeddings().num_embeddings} token "
            f"embeddings but its vocabulary {vocab.size} tokens; retrain into a fresh folder"
        )
    return model.eval(), meta, vocab


def init_from_folder(init_dir: str | Path, vocab: KeyVocabulary, seed: int = 0):
    """Start from a folder: a next-key model of the same vocabulary as is, or any HF causal LM (e.g. GPT-Neo-1.3B)
    with its token embeddings cut to the key vocabulary and re-initialised.

    Returns (model, arch, whether the folder was a next-key model).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    init_dir = Path(init_dir)
    if (init_dir / META_FILE).is_file():
        model, meta, model_vocab = load_model(init_dir)
        check_same_vocabulary(init_dir, model_vocab, vocab)
        return model, meta.get("arch", GPT2), True
    if not (init_dir / "config.json").is_file():
        raise ModelFolderError(
            f"{init_dir}: neither a next-key model ({META_FILE}) nor a transformers model "
            "(config.json); download the model into a local folder first"
        )
    quiet_transformers()
    model_type = AutoConfig.from_pretrained(init_dir).model_type
    arch = {"gpt2": GPT2, "gpt_neo": GPT_NEO}.get(model_type)
    if arch is None:
        raise ModelFolderError(f"{init_dir}: model type {model_type!r}; next-key training supports gpt2 and gpt_neo")
    model = AutoModelForCausalLM.from_pretrained(init_dir, attn_implementation="eager")
    model.resize_token_embeddings(vocab.size)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        std = getattr(model.config, "initializer_range", 0.02)
        embeddings.copy_(torch.randn(embeddings.shape, generator=generator) * std)
    model.config.update({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID})
    logger.info("%s: %s with embeddings resized to %d key tokens", init_dir, model_type, vocab.size)
    return model, arch, False


def save_model(model, meta: dict, output_dir: str | Path) -> Path:
    """Write the weights first and `nextkey.json` last, each by rename: a folder holding nextkey.json is complete."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=output_dir))
    quiet_transformers()
    try:
        model.save_pretrained(staging)
        for path in staging.iterdir():
            path.replace(output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(output_dir / META_FILE, meta)
    return output_dir
