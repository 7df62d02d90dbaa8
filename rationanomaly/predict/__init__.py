"""Prediction: answer every item of a test set with a model (vLLM, transformers, an endpoint) or the rules.

    from rationanomaly.predict import predict_file
    predict_file("test.json", "predictions.json", model="models/RationAnomaly", backend="vllm", mode="cot")

Prompts come from rationanomaly.prompts, the same messages the training data was built with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rationanomaly.io import check_input_file, check_outputs
from rationanomaly.predict.backends import (
    BACKENDS,
    DEFAULT_BATCH_SIZE,
    Backend,
    BackendUnavailable,
    Request,
    SamplingConfig,
    make_backend,
    resolve_backend,
)
from rationanomaly.predict.runner import PredictionRun, predict_samples, prediction_meta_path
from rationanomaly.prompts import load_system_prompt
from rationanomaly.samples import read_samples

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "PredictionRun",
    "Request",
    "SamplingConfig",
    "check_local_model",
    "make_backend",
    "predict_file",
    "predict_samples",
]


def predict_file(
    testset: str | Path,
    output: str | Path,
    model: str | Path | None = None,
    backend: str = "auto",
    mode: str = "cot",
    prompt_file: str | Path | None = None,
    sampling: SamplingConfig | None = None,
    batch_size: int | None = None,
    save_every: int = 100,
    **backend_options: Any,
) -> PredictionRun:
    """Predict a reference-layout test set into `output` (resuming a partial file) and return the run's counts."""
    name = resolve_backend(backend)
    if name != "rules" and model is None:
        raise ValueError(f"backend {name} needs a model: pass --model PATH (or a model name for --backend openai)")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use 1 or more (leave it out for the backend's default)")
    check_input_file(
        testset, "build one with datasets/template_split.py (it writes NAME_test.json) or pass --testset FILE"
    )
    check_outputs([output, prediction_meta_path(Path(output))], [testset, prompt_file])
    if name in ("transformers", "vllm"):
        check_local_model(model)
    sampling = sampling or SamplingConfig()
    samples = read_samples(testset)
    system_prompt = load_system_prompt(mode, prompt_file)
    batch_size = batch_size or DEFAULT_BATCH_SIZE[name]
    try:
        engine = make_backend(name, model or "", sampling, batch_size=batch_size, **backend_options)
    except OSError as error:  # transformers / vLLM: no such folder and no such Hugging Face model
        raise FileNotFoundError(
            f"cannot load model {model}: {error}; pass an exported model folder (bash "
            "model_export.sh writes models/RationAnomaly) or a Hugging Face model id"
        ) from error
    metadata = {
        "model": _model_id(model),
        "testset": str(testset),
        "mode": mode,
        "prompt_file": str(prompt_file) if prompt_file else None,
        "seed": sampling.seed,
        "dtype": backend_options.get("dtype"),
    }
    return predict_samples(samples, engine, output, system_prompt, sampling, batch_size, save_every, metadata)


def check_local_model(model: str | Path | None) -> None:
    """A model that names a local folder must be one; only a bare `org/name` may be a Hugging Face id.

    transformers reads a missing folder as a hub id and retries the network for most of a minute before a
    long traceback. A path that is absolute, starts with `.` or `~`, has more than one `/`, or whose first
    part is an existing folder (`models/RationAnomaly` with `models/` present) is a local path here; a single
    name (`gpt2`) or `org/name` may still be a hub id.
    """
    if model is None or Path(model).exists():
        return
    text = str(model)
    parts = Path(text).parts
    local = (
        Path(text).is_absolute()
        or text.startswith((".", "~"))
        or len(parts) > 2
        or text.endswith("/")
        or (len(parts) == 2 and Path(parts[0]).is_dir())
    )
    if local:
        raise FileNotFoundError(
            f"model folder {model} not found; pass an exported model folder (bash "
            "model_export.sh writes models/RationAnomaly) or a Hugging Face id (org/name)"
        )


def _model_id(model: str | Path | None) -> str | None:
    """A local model folder as its absolute path (so a resume from another folder compares equal), else the name."""
    if model is None:
        return None
    return str(Path(model).resolve()) if Path(model).exists() else str(model)
