"""Shared fixtures: offline mode, the public data folder, and tiny models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from rationanomaly.paths import PUBLIC_DATA_ENV, public_data_dir  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Keep Ray and HF datasets from writing into the home folder during tests."""
    cache = tmp_path_factory.mktemp("hf_cache")
    os.environ.setdefault("HF_DATASETS_CACHE", str(cache / "datasets"))
    os.environ.setdefault("HF_HOME", str(cache / "home"))
    yield


@pytest.fixture(scope="session")
def public_data() -> Path:
    """The public BGL/Spirit data folder; skips the test with the reason when it is not configured."""
    folder = public_data_dir()
    if folder is None:
        pytest.skip(f"{PUBLIC_DATA_ENV} is unset: point it at the public data folder (CI uses ../shared/data)")
    if not folder.is_dir():
        pytest.skip(f"{PUBLIC_DATA_ENV}={folder} is not a folder")
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A saved byte-level BPE tokenizer with a Llama-2-chat template and the four reasoning tags."""
    from rationanomaly.tiny import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A saved, randomly initialised 2-layer Llama (seed 0) with its tokenizer."""
    from rationanomaly.tiny import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny_llama")
    build_tiny_llama(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A saved, randomly initialised 2-layer GPT-2 (the perplexity model's shape, scaled down)."""
    from rationanomaly.tiny import build_tiny_gpt2

    path = tmp_path_factory.mktemp("tiny_gpt2")
    build_tiny_gpt2(path)
    return path


@pytest.fixture(scope="module")
def one_cpu_thread():
    """One intra-op torch thread for a module (what rationanomaly.nextkey uses on a CPU), restored afterwards.

    Tiny models on shared cores run far faster that way: OpenMP threads spin-wait for cores other jobs hold.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
