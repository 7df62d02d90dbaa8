"""The service's answer computed offline, for checking a stream against: same parser, same detector, no broker.

Lines are parsed in file order by a fresh Drain3 (templates depend on order), each template is labelled by the
detector, and windows come from the session builder (rationanomaly.sessions), not from the service's window code.
"""

from __future__ import annotations

from collections.abc import Sequence

from rationanomaly.labels import NORMAL, label_to_int
from rationanomaly.sessions import DEFAULT_WINDOW, build_sessions
from rationanomaly.stream.detectors import TemplateDetector
from rationanomaly.stream.events import clean_line
from rationanomaly.stream.parser import TemplateParser


def offline_verdicts(
    lines: Sequence[bytes | str],
    detector: TemplateDetector,
    window: int = DEFAULT_WINDOW,
    parser: TemplateParser | None = None,
) -> tuple[list[str], dict[int, str]]:
    """(line labels, {window index: label}) for lines numbered 0, 1, ... as the replayer numbers them."""
    parser = parser or TemplateParser()
    templates = []
    for raw in lines:
        text, _ = clean_line(raw)
        templates.append(parser.parse(text).template if text else None)  # the service skips empty lines too
    distinct = sorted({t for t in templates if t is not None})
    known = dict(zip(distinct, detector.classify(distinct), strict=True)) if distinct else {}
    labels = [NORMAL if t is None else known[t] for t in templates]
    sessions = build_sessions(
        list(range(len(lines))),
        ["-"] * len(lines),
        [label_to_int(v) if v in ("normal", "abnormal") else 0 for v in labels],
        window,
    )
    return labels, {s.session_id: s.label for s in sessions}
