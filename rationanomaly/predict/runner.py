"""The prediction loop: chat prompts in, reference-layout predictions out, saved as it goes, resumable.

Output file: a JSON list of `{"instruction", "input", "output"}` in test-set order (the reference
layout). It is rewritten atomically after every batch once `save_every` new items have accumulated,
so an interrupted run leaves a valid prefix; a rerun checks that prefix against the test set and
continues after it. Run settings go to `<output>.meta.json` beside it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from rationanomaly.io import check_output_path, read_text, write_json_atomic
from rationanomaly.predict.backends import Backend, Request, SamplingConfig
from rationanomaly.prompts import chat_messages
from rationanomaly.samples import Sample, SampleFormatError, read_records

logger = logging.getLogger(__name__)

PREDICTION_KEYS = ("instruction", "input", "output")
SAVE_EVERY = 100  # reference model_predict.py saves every 100 entries


@dataclass(frozen=True)
class PredictionRun:
    """What a prediction run did: items in the test set, resumed from, newly generated, and its speed."""

    output: Path
    total: int
    resumed: int
    generated: int
    seconds: float

    @property
    def items_per_second(self) -> float:
        """Throughput of this invocation (0 when nothing was generated)."""
        return self.generated / self.seconds if self.seconds > 0 else 0.0


def build_requests(samples: Sequence[Sample], system_prompt: str | None, seed: int, start: int = 0) -> list[Request]:
    """One request per sample, with the training prompt and the seed `seed + position in the test set`.

    Seeding by position makes an item's answer independent of where a run was interrupted.
    """
    return [
        Request(s.input, tuple(chat_messages(s.input, system_prompt, s.instruction)), seed + start + i)
        for i, s in enumerate(samples)
    ]


def prediction_record(sample: Sample, output: str) -> dict[str, str]:
    """A prediction in the reference layout."""
    return {"instruction": sample.instruction, "input": sample.input, "output": output}


def load_resumable(path: Path, samples: Sequence[Sample]) -> list[dict]:
    """Predictions already in `path` that match the start of the test set (empty when the file is absent).

    A file whose items differ from the test set belongs to another run: overwriting it would lose
    work, so this stops with a message instead.
    """
    if not path.exists():
        return []
    done = read_records(path, PREDICTION_KEYS, allow_empty=True)
    if len(done) > len(samples):
        raise SampleFormatError(
            f"{path} holds {len(done)} predictions but the test set has {len(samples)} items; "
            "it belongs to another test set: choose another --output or delete it"
        )
    for index, (record, sample) in enumerate(zip(done, samples, strict=False)):
        if (record["instruction"], record["input"]) != (sample.instruction, sample.input):
            raise SampleFormatError(
                f"{path}: item {index} is for input {record['input'][:80]!r} but the test set has "
                f"{sample.input[:80]!r} there; choose another --output or delete the file"
            )
    return done


# Settings that change the answers: a resumed file made with other values would mix two runs. The batch size
# is one of them for transformers only: that backend seeds each batch and pads it to its longest prompt, so 258 of
# 354 answers differed between --batch_size 8 and 16; vllm and openai seed every item by its position.
RESUME_KEYS = ("model", "backend", "system_prompt", "sampling", "batch_size", "dtype")
BATCH_DEPENDENT_BACKENDS = ("transformers",)


def _setting(meta: dict, key: str) -> object:
    """A run setting as compared on resume: no --dtype is --dtype auto (the model's own dtype)."""
    value = meta.get(key)
    return (value or "auto") if key == "dtype" else value


def check_resume_settings(meta_path: Path, meta: dict) -> None:
    """Stop when the saved predictions were made with another model, backend, prompt, sampling or dtype, or (for
    the transformers backend, whose answers depend on it) another batch size.

    The default output name holds only the test set and the model, so `-c cot` after `-c log` (or a
    new --seed, --temperature or --batch_size) would otherwise continue, or silently accept, the other run's
    file. A prediction file without its `.meta.json` is resumed as before.
    """
    if not meta_path.exists():
        return
    try:
        saved = json.loads(read_text(meta_path))
    except ValueError as error:
        raise SampleFormatError(
            f"{meta_path}: unreadable run settings ({error}); delete it and the prediction file "
            "to start over, or pass another --output"
        ) from error
    keys = [key for key in RESUME_KEYS if key != "batch_size" or meta.get("backend") in BATCH_DEPENDENT_BACKENDS]
    changed = [key for key in keys if key in saved and _setting(saved, key) != _setting(meta, key)]
    if changed:
        output = meta_path.name.removesuffix(".meta.json")
        raise ValueError(
            f"{meta_path.parent / output} was made with another {', '.join(changed)} "
            f"(see {meta_path}); pass another --output, or delete both files to start over"
        )


def predict_samples(
    samples: Sequence[Sample],
    backend: Backend,
    output: str | Path,
    system_prompt: str | None,
    sampling: SamplingConfig | None = None,
    batch_size: int = 8,
    save_every: int = SAVE_EVERY,
    metadata: dict | None = None,
) -> PredictionRun:
    """Predict every sample not yet in `output`, saving atomically; returns counts and throughput."""
    if batch_size < 1 or save_every < 1:
        raise ValueError(f"batch_size ({batch_size}) and save_every ({save_every}) must be at least 1")
    sampling = sampling or SamplingConfig()
    output = Path(output)
    check_output_path(output)
    check_output_path(prediction_meta_path(output))
    results = load_resumable(output, samples)
    resumed = len(results)
    meta = {
        **(metadata or {}),
        "backend": backend.name,
        "sampling": asdict(sampling),
        "system_prompt": system_prompt,
        "batch_size": batch_size,
        "items": len(samples),
    }
    if resumed:
        check_resume_settings(prediction_meta_path(output), meta)
        logger.info("resuming %s after %d of %d items", output, resumed, len(samples))
    write_json_atomic(prediction_meta_path(output), meta)
    started, unsaved = time.perf_counter(), 0
    with tqdm(
        total=len(samples), initial=resumed, desc=f"predict ({backend.name})", unit="item", dynamic_ncols=True
    ) as progress:
        for start in range(resumed, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            texts = backend.generate(build_requests(batch, system_prompt, sampling.seed, start))
            if len(texts) != len(batch):
                raise RuntimeError(f"backend {backend.name} returned {len(texts)} answers for {len(batch)} prompts")
            results.extend(prediction_record(s, t) for s, t in zip(batch, texts, strict=True))
            unsaved += len(batch)
            progress.update(len(batch))
            if unsaved >= save_every:
                write_json_atomic(output, results)
                unsaved = 0
    if unsaved or not output.exists():
        write_json_atomic(output, results)
    return PredictionRun(output, len(samples), resumed, len(samples) - resumed, time.perf_counter() - started)


def prediction_meta_path(output: Path) -> Path:
    """Where the run settings go: beside the predictions, same name plus `.meta.json`."""
    return output.with_name(output.name + ".meta.json")
