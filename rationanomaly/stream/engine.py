"""The detection core, independent of any broker: lines in, line verdicts out, windows closed.

Flow per line: Drain3 template -> verdict cache (a local dict; the shared Redis hash is read and written by the
model thread) -> if the template is new, the line is held and its template asked of the detector once
(single-flight: one request per template however many lines wait for it), in micro-batches on a thread of its
own, so lines of known templates never wait behind a model call. Held lines are released when the answer comes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from rationanomaly.evaluate import UNKNOWN
from rationanomaly.labels import ABNORMAL, NORMAL
from rationanomaly.sessions import DEFAULT_WINDOW
from rationanomaly.stream.detectors import TemplateDetector
from rationanomaly.stream.events import (
    NO_TEMPLATE,
    NOTE_EMPTY,
    NOTE_MISSING,
    Event,
    InputReport,
    LineVerdict,
    WindowVerdict,
)
from rationanomaly.stream.parser import TemplateParser

logger = logging.getLogger(__name__)

CACHE, MODEL, INPUT = "cache", "model", "input"  # where a line's verdict came from
MAX_BATCH = 64  # ours: templates per detector call; a vLLM server batches these itself
MAX_WAIT_S = 0.002  # ours: how long the model thread waits to fill a micro-batch after the first template
RETRIES = 3  # detector attempts per micro-batch before its templates get UNKNOWN (1 if the detector retries itself)
RETRY_BACKOFF_S = 0.5
REMEMBER_WINDOWS = 100_000  # finished windows remembered so a redelivered line cannot reopen one


class SharedVerdicts(Protocol):
    """The verdict cache shared by workers (a Redis hash): template key -> label."""

    def get_many(self, keys: Sequence[str]) -> dict[str, str]: ...

    def put_many(self, verdicts: dict[str, str]) -> None: ...


class ModelWorker:
    """A thread that answers template requests in micro-batches: shared cache first, then the detector."""

    def __init__(
        self,
        detector: TemplateDetector,
        shared: SharedVerdicts | None = None,
        max_batch: int = MAX_BATCH,
        max_wait_s: float = MAX_WAIT_S,
        retries: int | None = None,
        retry_backoff_s: float = RETRY_BACKOFF_S,
    ):
        self.detector = detector
        self.shared = shared
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        if retries is None:  # one retry layer: a detector whose backend retries (openai) gets a single attempt here
            retries = 1 if getattr(detector, "retries_inside", False) else RETRIES
        self.retries, self.retry_backoff_s = retries, retry_backoff_s
        self.requests: queue.Queue[tuple[str, str]] = queue.Queue()
        self.results: queue.Queue[tuple[str, str]] = queue.Queue()
        self.model_calls = 0
        self.templates_asked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)
        self._thread.start()

    def ask(self, key: str, template: str) -> None:
        """Queue one template for a verdict (the caller makes sure each key is asked once)."""
        self.requests.put((key, template))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the micro-batch in progress (bounded wait)."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        """Collect a micro-batch (up to max_batch, at most max_wait_s after the first), answer it, repeat."""
        while not self._stop.is_set():
            try:
                batch = [self.requests.get(timeout=0.1)]
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.requests.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            for key, label in self.answer(batch).items():
                self.results.put((key, label))

    def answer(self, batch: Sequence[tuple[str, str]]) -> dict[str, str]:
        """Labels for a micro-batch: what the shared cache knows, the detector for the rest (retried, bounded)."""
        labels = self._shared_get([key for key, _ in batch])
        missing = [(key, template) for key, template in batch if key not in labels]
        if missing:
            answered = self._classify([template for _, template in missing])
            fresh = {key: label for (key, _), label in zip(missing, answered, strict=True)}
            labels.update(fresh)
            self._shared_put({k: v for k, v in fresh.items() if v != UNKNOWN})
        return labels

    def _classify(self, templates: list[str]) -> list[str]:
        """One detector call with bounded retries; UNKNOWN for every template when all attempts fail."""
        for attempt in range(1, self.retries + 1):
            try:
                labels = self.detector.classify(templates)
                self.model_calls += 1
                self.templates_asked += len(templates)
                return [label if label in (NORMAL, ABNORMAL) else UNKNOWN for label in labels]
            except Exception as error:  # a plug-in may raise anything; the stream must go on
                logger.warning(
                    "detector %s failed on %d templates (attempt %d of %d): %s",
                    self.detector.name,
                    len(templates),
                    attempt,
                    self.retries,
                    error,
                )
                if attempt < self.retries:
                    self._stop.wait(self.retry_backoff_s * attempt)
        logger.error(
            "detector %s gave up on %d templates after %d attempts; their lines get verdict %r and the "
            "templates are asked again when they next occur",
            self.detector.name,
            len(templates),
            self.retries,
            UNKNOWN,
        )
        return [UNKNOWN] * len(templates)

    def _shared_get(self, keys: list[str]) -> dict[str, str]:
        """Shared-cache lookups; an unreachable cache only costs a model call."""
        if self.shared is None:
            return {}
        try:
            return self.shared.get_many(keys)
        except Exception as error:  # redis-py raises several kinds; the detector still answers
            logger.warning("shared verdict cache unreadable (%s); asking the detector", error)
            return {}

    def _shared_put(self, verdicts: dict[str, str]) -> None:
        """Shared-cache writes; a failure is logged, the verdicts still reach this worker's lines."""
        if self.shared is None or not verdicts:
            return
        try:
            self.shared.put_many(verdicts)
        except Exception as error:
            logger.warning("shared verdict cache not written (%s); other workers will ask again", error)


class DetectionEngine:
    """Parses events, answers known templates at once and holds lines of new templates until the model answers."""

    def __init__(self, parser: TemplateParser, model: ModelWorker):
        self.parser = parser
        self.model = model
        self.local: dict[str, str] = {}
        self.held: dict[str, list[tuple[Event, str]]] = {}
        self.held_lines = 0
        self.report = InputReport()

    def submit(self, events: Sequence[Event]) -> list[LineVerdict]:
        """Verdicts available now (cached templates, empty lines); lines of new templates are held."""
        ready = []
        for event in events:
            self.report.note(event)
            if event.note in (NOTE_EMPTY, NOTE_MISSING):
                ready.append(LineVerdict(event, "", "", NORMAL, INPUT))
                continue
            parsed = self.parser.parse(event.line)
            label = self.local.get(parsed.key)
            if label is not None:
                ready.append(LineVerdict(event, parsed.key, parsed.template, label, CACHE))
                continue
            waiting = self.held.get(parsed.key)
            if waiting is None:
                waiting = self.held[parsed.key] = []
                self.model.ask(parsed.key, parsed.template)
            waiting.append((event, parsed.template))
            self.held_lines += 1
        return ready

    def collect(self, timeout: float = 0.0) -> list[LineVerdict]:
        """Lines released by the model's answers so far (waits up to `timeout` for the first answer)."""
        released = []
        while True:
            try:
                key, label = self.model.results.get(timeout=timeout) if timeout > 0 else self.model.results.get_nowait()
            except queue.Empty:
                return released
            timeout = 0.0
            if label != UNKNOWN:  # an unanswered template is asked again when it next occurs
                self.local[key] = label
            waiting = self.held.pop(key, [])
            released.extend(LineVerdict(event, key, template, label, MODEL) for event, template in waiting)
            self.held_lines -= len(waiting)  # not a sum over every held template per answer


class MemoryWindows:
    """Tumbling windows of `size` lines per source, closed when every line has a verdict (one worker's state)."""

    def __init__(self, size: int = DEFAULT_WINDOW, remember: int = REMEMBER_WINDOWS):
        self.size = size
        self.open: dict[tuple[str, int], dict[int, tuple[str, str]]] = {}  # window -> seq -> (label, key)
        self.done: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.remember = remember

    def add(self, verdicts: Sequence[LineVerdict]) -> list[WindowVerdict]:
        """Record line verdicts (a redelivered line counts once) and return the windows they finished."""
        finished = []
        for verdict in verdicts:
            seq = verdict.event.seq
            if seq is None or seq < 0:
                continue
            window = (verdict.event.source, seq // self.size)
            if window in self.done:
                continue
            lines = self.open.setdefault(window, {})
            lines[seq] = (verdict.verdict, verdict.template_key or NO_TEMPLATE)
            if len(lines) == self.size:
                del self.open[window]
                self.done[window] = None
                if len(self.done) > self.remember:
                    self.done.popitem(last=False)
                ordered = [lines[s] for s in sorted(lines)]
                finished.append(
                    WindowVerdict(
                        window[0],
                        window[1],
                        self.size,
                        sum(label == ABNORMAL for label, _ in ordered),
                        tuple(key for _, key in ordered),
                    )
                )
        return finished
