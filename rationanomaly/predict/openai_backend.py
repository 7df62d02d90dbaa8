"""An OpenAI-compatible chat endpoint as a backend (`vllm serve`, a hosted model, a local proxy).

Uses only the standard library so prompt baselines need no extra client. The server applies the
model's chat template to the messages, so prompts match the other backends for the same model.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rationanomaly.cli import UserError
from rationanomaly.predict.backends import Request, SamplingConfig

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # `vllm serve` default
API_KEY_ENV = "OPENAI_API_KEY"
RETRIES = 3
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # transient: overload, rate limit, gateway
BACKOFF_SECONDS = 1.0


class EndpointError(UserError):
    """The endpoint answered with an error or with a body that is not a chat completion."""


def _model_ids(body: bytes) -> set[str]:
    """The model ids of an OpenAI `/models` answer (`{"data": [{"id": ...}]}`); empty when it is not one."""
    try:
        data = json.loads(body).get("data", [])
        return {str(item["id"]) for item in data if isinstance(item, dict) and "id" in item}
    except (ValueError, AttributeError, TypeError):
        return set()


def probe_endpoint(completions_url: str, model: str, api_key: str | None = None, timeout: float = 30.0) -> None:
    """One request before the real work: fail at once when nothing answers, or the server lacks `model`.

    A GET of `{base}/models`, which OpenAI and vLLM serve. Any HTTP answer means something is listening (a
    404 there says nothing about chat completions), so only a connection failure or a timeout is fatal;
    without this probe an unreachable endpoint was retried several times for every single item.
    """
    url = completions_url.rstrip("/").removesuffix("/chat/completions") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise EndpointError(
            f"cannot reach {url} ({reason}); start the server (e.g. `vllm serve MODEL`) or fix --base_url"
        ) from error
    served = _model_ids(body)
    if served and model not in served:
        raise EndpointError(
            f"{url} serves {', '.join(sorted(served)[:10])}, not model {model!r}; pass one of those as --model"
        )


def chat_payload(model: str, request: Request, sampling: SamplingConfig) -> dict:
    """The JSON body of one chat completion request with the shared sampling settings."""
    return {
        "model": model,
        "messages": [dict(m) for m in request.messages],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": request.seed,
        "n": 1,
    }


def completion_text(body: dict, url: str) -> str:
    """The first choice's message content, or an EndpointError saying what the body held instead."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise EndpointError(f"{url} returned no choices[0].message.content: {json.dumps(body)[:300]}") from error
    return content or ""


class OpenAIBackend:
    """POST /chat/completions for each request, a few in flight at once."""

    name = "openai"

    def __init__(
        self,
        model: str,
        sampling: SamplingConfig,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 600.0,
    ):
        self.model = model
        self.sampling = sampling
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        probe_endpoint(self.url, model, self.api_key, min(timeout, 30.0))

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """Answers in request order (the thread pool keeps the order of `map`)."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._complete, requests))

    def _complete(self, request: Request) -> str:
        """One completion, retried on transient HTTP statuses and connection errors."""
        data = json.dumps(chat_payload(self.model, request, self.sampling)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(1, RETRIES + 1):
            try:
                http_request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(http_request, timeout=self.timeout) as response:
                    return completion_text(json.loads(response.read().decode("utf-8")), self.url)
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", errors="replace")[:300]
                if error.code not in RETRY_STATUSES or attempt == RETRIES:
                    raise EndpointError(
                        f"{self.url} answered HTTP {error.code}: {detail}; check --base-url, --model and ${API_KEY_ENV}"
                    ) from error
            except urllib.error.URLError as error:
                if attempt == RETRIES:
                    raise EndpointError(
                        f"cannot reach {self.url} ({error.reason}); is the server running? "
                        "start one with `vllm serve MODEL` or pass --base-url"
                    ) from error
            logger.warning("request to %s failed (attempt %d of %d); retrying", self.url, attempt, RETRIES)
            time.sleep(BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")
