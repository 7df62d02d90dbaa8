"""Tiny, randomly initialised models and tokenizers built locally (tests, demo, benchmarks).

No model can be downloaded in CI, so every model-shaped code path runs on these. The tokenizer is a
byte-level BPE trained in well under a second on a few log lines, so any text round-trips exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from rationanomaly.labels import TAGS

logger = logging.getLogger(__name__)

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"

# A Llama-2-chat style template (system folded into the first [INST] block), written for this project. The same
# file is what SFT trains with (model_train.sh: SFT_CHAT_TEMPLATE), so the tiny tokenizer renders prompts like it.
LLAMA2_CHAT_TEMPLATE_FILE = Path(__file__).parent / "train" / "llama2_chat_template.jinja"
LLAMA2_CHAT_TEMPLATE = LLAMA2_CHAT_TEMPLATE_FILE.read_text(encoding="utf-8").strip()

DEFAULT_CORPUS = (
    "Classify the given log entries into normal and abnormal categories.",
    "instruction cache parity error corrected",
    "ciod: failed to read message prefix on control stream",
    "generating core.<*> kernel panic machine check interrupt",
    "<think>The log reports a routine event.</think><answer>normal</answer>",
    "<think>The log reports a hardware failure.</think><answer>abnormal</answer>",
    "[INST] <<SYS>> <</SYS>> [/INST] You are a log analyst. Reason step by step.",
)


def build_tiny_tokenizer(path: str | Path, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 384):
    """Train a byte-level BPE on `corpus`, wrap it as a Llama-2-chat tokenizer and save it to `path`.

    The four reasoning tags are added tokens but *not* special: verl decodes responses with
    skip_special_tokens=True, which would strip special tags before the reward sees them.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, UNK, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer=trainer)
    backend.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD
    )
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(path))
    return tokenizer


def build_tiny_llama(
    path: str | Path, tokenizer=None, seed: int = 0, hidden_size: int = 16, layers: int = 2, heads: int = 2
):
    """A randomly initialised 2-layer Llama saved beside its tokenizer in `path` (seeded, deterministic)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer(path)
    config = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return model


def build_tiny_gpt2(
    path: str | Path,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    vocab_size: int | None = None,
    tokenizer=None,
):
    """A randomly initialised GPT-2 (DistilGPT-2 when called with 6 layers, width 768, 12 heads, 50,257 tokens).

    Saved with a byte-level BPE tokenizer so the reward's perplexity path loads it like the real
    DistilGPT-2 folder (`AutoTokenizer` + `AutoModelForCausalLM`).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer(path)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        vocab_size=vocab_size or len(tokenizer),
        n_positions=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return model


# The base-model stand-in that CPU training uses (DEVICE=cpu): vLLM's CPU attention needs a head size it supports
# (64 here; 16/2 = 8 is refused), and a vocabulary learnt from the sample's own text keeps a rationale near 100
# tokens instead of ~180 with the 384-token test vocabulary, so a response fits a short generation budget.
CPU_LLAMA = {"hidden_size": 128, "layers": 2, "heads": 4}
CPU_VOCAB_SIZE = 2048
# A random model never writes the four tags in order, so every GRPO reward would be the same -7.667 and every
# advantage 0: nothing would train. A real base model (Llama-2-chat) knows English; the stand-in is taught the
# sample's own language first with plain next-token prediction, so that a few LoRA-SFT steps suffice to reach
# well-formed answers. Measured on 2 cores: ~20 s.
PRETRAIN_STEPS = 100
PRETRAIN_LR = 3e-3
PRETRAIN_BLOCK = 128
PRETRAIN_BATCH = 8


def sample_corpus() -> list[str]:
    """The embedded sample's text (templates, rationales, prompt sentences): what the stand-in tokenizer learns."""
    from rationanomaly.paths import SAMPLE_DATA_DIR
    from rationanomaly.prompts import COT_SYSTEM_PROMPT
    from rationanomaly.samples import read_records

    texts = [*DEFAULT_CORPUS, COT_SYSTEM_PROMPT]
    for record in read_records(SAMPLE_DATA_DIR / "rationales.json", ("input",)):
        texts += [str(record["input"]), str(record.get("reasoning") or "")]
    return texts


def token_blocks(token_ids: list[int], block: int) -> list[list[int]]:
    """Consecutive windows of `block` tokens over the concatenated corpus (the last, short one dropped)."""
    return [token_ids[start : start + block] for start in range(0, len(token_ids) - block + 1, block)]


def pretrain_causal_lm(
    model,
    tokenizer,
    texts: Iterable[str],
    steps: int = PRETRAIN_STEPS,
    lr: float = PRETRAIN_LR,
    block: int = PRETRAIN_BLOCK,
    batch: int = PRETRAIN_BATCH,
    seed: int = 0,
) -> list[float]:
    """Plain next-token training on `texts` (each wrapped in BOS/EOS, concatenated, cut in blocks); the losses.

    Seeded: the same corpus and seed give the same weights.
    """
    import torch

    token_ids: list[int] = []
    for text in texts:
        token_ids += [
            tokenizer.bos_token_id,
            *tokenizer(text, add_special_tokens=False).input_ids,
            tokenizer.eos_token_id,
        ]
    blocks = torch.tensor(token_blocks(token_ids, block))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        rows = blocks[torch.randint(len(blocks), (min(batch, len(blocks)),), generator=generator)]
        loss = model(input_ids=rows, labels=rows).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def build_cpu_llama(path: str | Path, seed: int = 0, pretrain_steps: int = PRETRAIN_STEPS):
    """The tiny Llama that real CPU training (SFT + GRPO) starts from: sample-trained tokenizer, pre-trained on
    the sample's text (see PRETRAIN_STEPS for why), saved to `path`."""
    corpus = sample_corpus()
    tokenizer = build_tiny_tokenizer(path, corpus=corpus, vocab_size=CPU_VOCAB_SIZE)
    model = build_tiny_llama(path, tokenizer=tokenizer, seed=seed, **CPU_LLAMA)
    if pretrain_steps:
        losses = pretrain_causal_lm(model, tokenizer, corpus, steps=pretrain_steps, seed=seed)
        model.save_pretrained(str(path))
        logger.info("pre-trained %s for %d steps: loss %.2f -> %.2f", path, pretrain_steps, losses[0], losses[-1])
    return model


def main(argv: list[str] | None = None) -> int:
    """Build tiny stand-ins for the base model and the perplexity model (demo and dry runs on a CPU)."""
    import argparse

    parser = argparse.ArgumentParser(description="python -m rationanomaly.tiny --llama DIR --gpt2 DIR")
    parser.add_argument(
        "--llama", type=Path, help="folder for a tiny random Llama (base model stand-in; DEVICE=cpu can train it)"
    )
    parser.add_argument("--gpt2", type=Path, help="folder for a tiny random GPT-2 (DistilGPT-2 stand-in)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.llama is None and args.gpt2 is None:
        parser.error("give --llama DIR and/or --gpt2 DIR")
    if args.llama is not None:
        build_cpu_llama(args.llama, seed=args.seed)
        print(f"tiny Llama -> {args.llama}")  # noqa: T201
    if args.gpt2 is not None:
        build_tiny_gpt2(args.gpt2, seed=args.seed)
        print(f"tiny GPT-2 -> {args.gpt2}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
