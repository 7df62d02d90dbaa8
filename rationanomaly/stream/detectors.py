"""Detector plug-ins: what decides a template's verdict (per template) or a window's (per window of lines).

Template detectors answer a micro-batch of templates with one label each (normal / abnormal / unknown):
- `rules`: the keyword baseline (rationanomaly.baselines), no model;
- `openai`: any OpenAI-compatible endpoint, e.g. `vllm serve models/RationAnomaly`, with the training prompt
  (rationanomaly.prompts) and the evaluation's binariser (rationanomaly.evaluate.binarize);
- `transformers`: a local model through the same prompt and binariser;
- `fake`: the keyword verdict after a fixed sleep per call, to measure the first-seen path without a model.

Window detectors (the next-key detectors of rationanomaly.nextkey, when they exist) score the template keys of a
finished window; they register with `register_window_detector` and are looked up by name like the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rationanomaly.baselines import keyword_label
from rationanomaly.predict.backends import Backend, Request, SamplingConfig, make_backend
from rationanomaly.prompts import chat_messages, load_system_prompt

logger = logging.getLogger(__name__)

FAKE_LATENCY_MS = 20.0  # the stand-in for one model call on the first-seen path
# ours: seconds per request to an OpenAI-compatible endpoint while streaming (offline prediction keeps the backend's
# 600 s). The backend tries a request 3 times with 1 s + 2 s back-off (openai_backend.RETRIES, BACKOFF_SECONDS):
# 3 x 8 + 3 = 27 s, under the 30 s after which another worker claims the held lines (redis_transport.CLAIM_IDLE_MS)
STREAM_REQUEST_TIMEOUT_S = 8.0


class TemplateDetector(Protocol):
    """Labels a batch of templates, one label per template, in order."""

    name: str

    def classify(self, templates: Sequence[str]) -> list[str]: ...


class WindowDetector(Protocol):
    """Labels finished windows from their lines' template keys (e.g. a next-key model), one label per window."""

    name: str

    def score_windows(self, windows: Sequence[Sequence[str]]) -> list[str]: ...


TEMPLATE_DETECTORS: dict[str, Callable[..., TemplateDetector]] = {}
WINDOW_DETECTORS: dict[str, Callable[..., WindowDetector]] = {}


def register_template_detector(name: str) -> Callable:
    """Class decorator: make a template detector available as `serve --detector NAME`."""

    def register(factory: Callable[..., TemplateDetector]) -> Callable[..., TemplateDetector]:
        TEMPLATE_DETECTORS[name] = factory
        return factory

    return register


def register_window_detector(name: str) -> Callable:
    """Class decorator: make a window detector available by name (the next-key detectors register here)."""

    def register(factory: Callable[..., WindowDetector]) -> Callable[..., WindowDetector]:
        WINDOW_DETECTORS[name] = factory
        return factory

    return register


@register_template_detector("rules")
class RulesDetector:
    """The keyword rule on the template text: deterministic, microseconds per template."""

    name = "rules"

    def __init__(self, **_: Any):
        self.calls = 0

    def classify(self, templates: Sequence[str]) -> list[str]:
        """One keyword label per template."""
        self.calls += 1
        return [keyword_label(t)[0] for t in templates]


@register_template_detector("fake")
class FakeModelDetector:
    """The keyword rule behind a fixed delay per call: a model's cost on the first-seen path, without a model.

    Thread-safe counters let tests check single-flight (calls, templates asked) from outside the worker.
    """

    name = "fake"

    def __init__(self, latency_ms: float = FAKE_LATENCY_MS, **_: Any):
        self.latency_s = latency_ms / 1000.0
        self.calls = 0
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def classify(self, templates: Sequence[str]) -> list[str]:
        """Sleep the model's latency once for the whole micro-batch, then the keyword labels."""
        time.sleep(self.latency_s)
        with self._lock:
            self.calls += 1
            self.asked.extend(templates)
        return [keyword_label(t)[0] for t in templates]


class BackendDetector:
    """A prediction backend (rationanomaly.predict) asked with the training prompt; answers binarised.

    `retries_inside`: the backend already retries transient failures itself, so the engine's model thread must make
    one attempt per micro-batch (nested retries multiply: 3 x 3 attempts of 600 s each before a line got a verdict).
    """

    def __init__(self, backend: Backend, system_prompt: str | None, seed: int = 0, retries_inside: bool = False):
        self.backend = backend
        self.name = backend.name
        self.system_prompt = system_prompt
        self.seed = seed
        self.retries_inside = retries_inside
        self.calls = 0

    def classify(self, templates: Sequence[str]) -> list[str]:
        """Generate one response per template and read its label as the evaluation does."""
        from rationanomaly.evaluate import binarize  # pandas-free but heavy regexes: only when a model is used

        self.calls += 1
        requests = [Request(t, tuple(chat_messages(t, self.system_prompt)), self.seed) for t in templates]
        texts = self.backend.generate(requests)
        if len(texts) != len(templates):
            raise RuntimeError(f"detector {self.name} returned {len(texts)} answers for {len(templates)} templates")
        return [binarize(text) for text in texts]


@register_template_detector("openai")
def openai_detector(
    model: str = "",
    base_url: str | None = None,
    mode: str = "cot",
    seed: int = 0,
    max_new_tokens: int | None = None,
    timeout: float = STREAM_REQUEST_TIMEOUT_S,
    **_: Any,
) -> BackendDetector:
    """An OpenAI-compatible endpoint (`vllm serve models/RationAnomaly`) behind the training prompt.

    Requests time out after `timeout` seconds; the backend's own retries are the only retry layer.
    """
    if not model:
        raise ValueError("detector openai needs --model (the served model's name, e.g. models/RationAnomaly)")
    backend = make_backend("openai", model, _sampling(seed, max_new_tokens), base_url=base_url, timeout=timeout)
    return BackendDetector(backend, load_system_prompt(mode), seed, retries_inside=True)


@register_template_detector("transformers")
def transformers_detector(
    model: str = "", mode: str = "cot", seed: int = 0, max_new_tokens: int | None = None, **_: Any
) -> BackendDetector:
    """A local Hugging Face model folder behind the training prompt."""
    if not model:
        raise ValueError("detector transformers needs --model PATH (an exported model folder)")
    backend = make_backend("transformers", model, _sampling(seed, max_new_tokens))
    return BackendDetector(backend, load_system_prompt(mode), seed)


def _sampling(seed: int, max_new_tokens: int | None) -> SamplingConfig:
    """The reference's sampling, with an optional shorter answer budget (streaming wants short answers)."""
    base = SamplingConfig(seed=seed)
    return (
        base
        if max_new_tokens is None
        else SamplingConfig(base.temperature, base.top_p, max_new_tokens, base.max_model_len, seed)
    )


def make_template_detector(name: str, **options: Any) -> TemplateDetector:
    """Build a registered template detector; options it does not use are ignored."""
    if name not in TEMPLATE_DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(sorted(TEMPLATE_DETECTORS))}")
    return TEMPLATE_DETECTORS[name](**options)


def make_window_detector(name: str, **options: Any) -> WindowDetector:
    """Build a registered window detector (none ships yet: the next-key detectors will register here)."""
    if name not in WINDOW_DETECTORS:
        known = ", ".join(sorted(WINDOW_DETECTORS)) or "none registered yet"
        raise ValueError(
            f"unknown window detector {name!r} ({known}); a next-key detector registers itself with "
            "rationanomaly.stream.detectors.register_window_detector"
        )
    return WINDOW_DETECTORS[name](**options)
