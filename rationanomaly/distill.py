"""CoT distillation: ask an OpenAI-compatible chat endpoint to explain each template's (rectified) label.

Any server that speaks `POST {base_url}/chat/completions` works: a local `vllm serve`, or a hosted model
(API key from $OPENAI_API_KEY). Requests run in a thread pool; transport errors, timeouts, HTTP 429 and
5xx are retried with exponential backoff; an answer that fails the same checks as a joined rationale
(rationales.check_rationale) is asked again up to `invalid_retries` times, then reported.

Every finished item (success or final failure) is appended to a JSONL cache and fsync'ed before the next
one is recorded, so a crash loses at most the items in flight, and a rerun requests only what is not done
yet. A crash can leave a half-written last line; it is cut off when the cache is opened again.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.cli import UserError
from rationanomaly.labels import INSTRUCTION, normalize_label
from rationanomaly.predict.openai_backend import EndpointError, probe_endpoint
from rationanomaly.rationales import Rationale, check_rationale
from rationanomaly.samples import Sample

logger = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
OK, FAILED = "ok", "failed"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})  # worth another try; other 4xx are our fault

DISTILL_SYSTEM_PROMPT = (
    "You are an expert in system log analysis who writes training explanations. You are given one log "
    "template, in which <*> stands for a variable value, and its correct label. Explain step by step why the "
    "template has that label: what the component and the event are, whether the message reports a failure, "
    "an error condition or routine operation, and what in the text shows it. Do not doubt or contradict the "
    "given label. Reply with exactly this format and nothing else:\n"
    "<think>your step-by-step analysis</think><answer>LABEL</answer>\n"
    "where LABEL is the given label, the single word normal or abnormal."
)


class DistillError(UserError):
    """A request that cannot succeed by retrying (wrong URL or model name, authentication, another 4xx)."""


class RetryableError(RuntimeError):
    """A failure worth another try: timeout, broken connection, HTTP 408/409/425/429/5xx, a reply that is not JSON."""


@dataclass(frozen=True)
class DistillConfig:
    """Where to ask and how hard to try."""

    base_url: str
    model: str
    api_key: str | None = None
    temperature: float = 0.7
    max_tokens: int = 1024
    timeout: float = 120.0
    concurrency: int = 8
    retries: int = 5  # transport retries per request (429, 5xx, timeouts)
    invalid_retries: int = 3  # extra requests when the answer fails the rationale checks
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_backoff: float = 60.0
    seed: int | None = None  # passed to the endpoint (vLLM and OpenAI honour it); recorded in the cache

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise DistillError("the model name is empty; pass the name the endpoint serves (--model)")
        if not self.base_url.strip():
            raise DistillError("the endpoint URL is empty; pass e.g. --base_url http://127.0.0.1:8000/v1")


@dataclass(frozen=True)
class DistillResult:
    """What a run produced: all successful rationales (cached + new), the failures, and the request count."""

    rationales: list[Rationale]
    failures: list[dict]
    requested: int
    cached: int


def distill_messages(template: str, label: str) -> list[dict[str, str]]:
    """The chat messages that ask for a rationale of `template` ending in `label`."""
    label = normalize_label(label)
    user = f"Log template: {template}\nCorrect label: {label}\nExplain why this log is {label}."
    return [{"role": "system", "content": DISTILL_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based): base * 2**attempt, capped, or the server's ask."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    return min(base * 2**attempt, cap)


def completions_url(base_url: str) -> str:
    """`{base}/chat/completions`, accepting a base with or without `/v1` and a trailing slash."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    """The Retry-After header in seconds, when the server sent a number."""
    try:
        return float(error.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None


def post_chat(config: DistillConfig, messages: list[dict[str, str]]) -> str:
    """One chat completion; returns the message content. Raises RetryableError or DistillError."""
    payload = {
        "model": config.model,
        "messages": messages,
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
    }
    if config.seed is not None:
        payload["seed"] = config.seed
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    request = urllib.request.Request(completions_url(config.base_url), json.dumps(payload).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=config.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read()[:200].decode("utf-8", "replace")
        if error.code in RETRY_STATUS:
            raise RetryableError(f"HTTP {error.code}: {detail}") from error
        raise DistillError(
            f"{request.full_url} answered HTTP {error.code}: {detail}; check the URL, model name and ${API_KEY_ENV}"
        ) from error
    # http.client.HTTPException: the connection broke mid-reply (IncompleteRead, BadStatusLine); worth a retry.
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise RetryableError(f"{type(error).__name__}: {error}") from error
    try:
        return json.loads(body)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise RetryableError(f"reply is not a chat completion: {body[:200]!r}") from error


def request_with_retries(
    config: DistillConfig, messages: list[dict[str, str]], sleep: Callable[[float], None] = time.sleep
) -> str:
    """post_chat, retried with exponential backoff on RetryableError; the last error is re-raised."""
    for attempt in range(config.retries + 1):
        try:
            return post_chat(config, messages)
        except RetryableError as error:
            if attempt == config.retries:
                raise
            cause = error.__cause__
            retry_after = _retry_after(cause) if isinstance(cause, urllib.error.HTTPError) else None
            delay = backoff_delay(attempt, config.backoff, config.max_backoff, retry_after)
            logger.warning("retry %d/%d in %.1fs: %s", attempt + 1, config.retries, delay, error)
            sleep(delay)
    raise AssertionError("unreachable")


def distill_one(sample: Sample, config: DistillConfig, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Ask until a valid rationale comes back (or the retries run out); returns the cache record."""
    label = normalize_label(sample.label)
    messages = distill_messages(sample.input, label)
    record = {
        "input": sample.input,
        "label": label,
        "instruction": sample.instruction,
        "model": config.model,
        "seed": config.seed,
    }
    problems = []
    for _ in range(config.invalid_retries + 1):
        try:
            reply = request_with_retries(config, messages, sleep)
        except RetryableError as error:
            return {
                **record,
                "status": FAILED,
                "reason": "request_failed",
                "detail": str(error),
                "attempts": len(problems) + 1,
            }
        problem = check_rationale(reply, label)
        if problem is None:
            return {**record, "status": OK, "reasoning": reply.strip(), "attempts": len(problems) + 1}
        problems.append({"reason": problem[0], "detail": problem[1], "reply": reply[:500]})
    last = problems[-1]
    return {
        **record,
        "status": FAILED,
        "reason": last["reason"],
        "detail": last["detail"],
        "attempts": len(problems),
        "replies": problems,
    }


class JsonlCache:
    """Append-only JSONL of finished items; the last record per input wins. Thread-safe appends."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = self._load()
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict]:
        """Read every complete record; cut off a torn last line (a crash mid-write) so appends stay valid."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        records: dict[str, dict] = {}
        offset = 0
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            try:
                record = json.loads(line)
                if not line.endswith(b"\n") or not isinstance(record, dict) or "input" not in record:
                    raise ValueError("incomplete record")
            except ValueError as error:
                if offset + len(line) < len(data):
                    raise DistillError(
                        f"{self.path}: line {number} is not a cache record ({error}); only the last "
                        "line can be torn by a crash, so the file was edited: fix or delete it"
                    ) from error
                logger.warning(
                    "%s: dropping a torn last line (%d bytes) left by an interrupted run", self.path, len(line)
                )
                os.truncate(self.path, offset)
                break
            records[record["input"]] = record
            offset += len(line)
        return records

    def done(self, template: str, label: str) -> bool:
        """True when the template already has a successful rationale for this label.

        A rationale cached under the other label (the template was rectified since) is asked again.
        """
        record = self.records.get(template, {})
        return record.get("status") == OK and record.get("label") == normalize_label(label)

    def append(self, record: dict) -> None:
        """Append one record and fsync it before returning: a crash after this keeps it."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            with self.path.open("ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self.records[record["input"]] = record


def distill(
    templates: Sequence[Sample],
    config: DistillConfig,
    cache_path: str | Path,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> DistillResult:
    """Distil a rationale for every template not yet done in the cache; returns all rationales and failures.

    Templates keep their order in the result; items that failed in an earlier run are asked again.
    """
    from tqdm import tqdm

    cache = JsonlCache(cache_path)
    unique = list({s.input: s for s in templates}.values())
    todo = [s for s in unique if not cache.done(s.input, s.label)]
    cached = len(unique) - len(todo)
    logger.info("%d templates: %d done in %s, %d to request", len(unique), cached, cache.path, len(todo))
    if todo:
        try:
            probe_endpoint(completions_url(config.base_url), config.model, config.api_key, min(config.timeout, 30.0))
        except EndpointError as error:
            raise DistillError(str(error)) from error
        with (
            ThreadPoolExecutor(max_workers=max(1, config.concurrency)) as pool,
            tqdm(total=len(todo), desc="distil", unit="template", disable=not progress) as bar,
        ):
            futures = [pool.submit(distill_one, sample, config, sleep) for sample in todo]
            try:
                for future in as_completed(futures):
                    cache.append(future.result())
                    bar.update(1)
            except BaseException:
                # A fatal error (bad URL, authentication) or Ctrl-C: stop queued requests; finished ones are cached.
                for future in futures:
                    future.cancel()
                raise
    rationales, failures = [], []
    for sample in unique:
        record = cache.records[sample.input]
        if record["status"] == OK:
            rationales.append(
                Rationale(sample.input, record["reasoning"], record["label"], record.get("instruction") or INSTRUCTION)
            )
        else:
            failures.append(record)
    return DistillResult(rationales, failures, len(todo), cached)


def failures_summary(failures: Iterable[dict]) -> dict[str, int]:
    """Failure count per reason, for the one-screen summary."""
    return dict(sorted(Counter(record["reason"] for record in failures).items()))
