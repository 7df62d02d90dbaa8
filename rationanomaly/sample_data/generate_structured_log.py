"""python rationanomaly/sample_data/generate_structured_log.py --output rationanomaly/sample_data/bgl_structured.csv

Regenerates the synthetic BGL-style structured log from the sample template sheet (deterministic for --seed).
Background lines come from normal templates; incidents are short bursts where anomalous templates cluster,
as alerts do in real logs. `Label` follows the *sheet* label (so the deliberate label errors the patch fixes
are visible in the log too): `-` for a template the sheet calls normal, an alert tag otherwise.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from datetime import datetime, timezone
from pathlib import Path

from rationanomaly.io import write_text_atomic
from rationanomaly.labels import ABNORMAL
from rationanomaly.loaders import load_template_sheet
from rationanomaly.patch import NORMALIZED, match_entries, read_patch, rectified_labels

HERE = Path(__file__).resolve().parent
COLUMNS = [
    "LineId",
    "Label",
    "Timestamp",
    "Date",
    "Node",
    "Time",
    "NodeRepeat",
    "Type",
    "Component",
    "Level",
    "Content",
    "EventId",
    "EventTemplate",
]
START = 1120000000  # 2005-06-28, inside the period the public BGL log covers
# Chosen so that ~8% of lines raise an alert in a handful of bursts, like the public BGL 2k (143 of 2,000).
INCIDENT_START_P = 0.004  # chance that a background line opens an incident
INCIDENT_LINES = (12, 30)  # incident length range, in lines
INCIDENT_ANOMALY_P = 0.7  # share of incident lines drawn from anomalous templates


def _component(template: str) -> str:
    """loghub's Component column: the daemon family the template comes from."""
    if template.startswith(("ciod", "rts", "job ")):
        return "APP"
    if template.startswith(("mmcs", "BGLMaster", "idoproxy", "service action", "boot loader")):
        return "MMCS"
    if template.startswith(("node card", "link card", "power module", "fan module", "environment", "clock card")):
        return "HARDWARE"
    return "KERNEL"


def _node(rng: random.Random) -> str:
    rack, midplane, card = rng.randint(0, 7), rng.randint(0, 1), rng.randint(0, 15)
    return f"R{rack:02d}-M{midplane}-N{card:X}-C:J{rng.randint(2, 18):02d}-U{rng.choice('01')}1"


def _value(rng: random.Random) -> str:
    kind = rng.randint(0, 2)
    if kind == 0:
        return str(rng.randint(0, 4096))
    if kind == 1:
        return f"0x{rng.getrandbits(32):08x}"
    return _node(rng)


def _content(template: str, rng: random.Random) -> str:
    parts = template.split("<*>")
    return parts[0] + "".join(_value(rng) + part for part in parts[1:])


def generate_structured_log(templates: list[tuple[str, int]], abnormal_truth: set[str], lines: int, seed: int) -> str:
    """CSV text of `lines` log lines in loghub's structured layout, built from (template, sheet label) pairs."""
    rng = random.Random(seed)
    event_ids = {t: f"E{i + 1}" for i, (t, _) in enumerate(templates)}
    sheet = dict(templates)
    background = [t for t, _ in templates if t not in abnormal_truth and not sheet[t]]
    anomalous = sorted(abnormal_truth)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    now, incident_left = START, 0
    for line_id in range(1, lines + 1):
        if incident_left == 0 and rng.random() < INCIDENT_START_P:
            incident_left = rng.randint(*INCIDENT_LINES)
        in_incident = incident_left > 0
        incident_left = max(0, incident_left - 1)
        template = rng.choice(anomalous if in_incident and rng.random() < INCIDENT_ANOMALY_P else background)
        now += rng.randint(0, 2) if in_incident else rng.randint(1, 40)
        stamp = datetime.fromtimestamp(now, tz=timezone.utc)
        node = _node(rng)
        label = f"{_component(template)[:4]}ALRT" if sheet[template] else "-"
        level = "FATAL" if sheet[template] else ("ERROR" if template in abnormal_truth else "INFO")
        writer.writerow(
            [
                line_id,
                label,
                now,
                stamp.strftime("%Y.%m.%d"),
                node,
                stamp.strftime("%Y-%m-%d-%H.%M.%S.") + f"{rng.randint(0, 999999):06d}",
                node,
                "RAS",
                _component(template),
                level,
                _content(template, rng),
                event_ids[template],
                template,
            ]
        )
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--templates", type=Path, default=HERE / "bgl_templates.csv")
    parser.add_argument("--patch", type=Path, default=HERE / "anomaly_patch.json")
    parser.add_argument("--output", type=Path, default=HERE / "bgl_structured.csv")
    parser.add_argument("--lines", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    frame = load_template_sheet(args.templates).frame
    templates = [(t, int(v)) for t, v in zip(frame["log"], frame["label"], strict=True)]
    # Truth = sheet label corrected by the patch, matched loosely so the near-miss entry counts too.
    truth = {t for t, label in templates if label}
    matches = match_entries([t for t, _ in templates], read_patch(args.patch), NORMALIZED)
    for template, label in rectified_labels(matches).items():
        (truth.add if label == ABNORMAL else truth.discard)(template)
    write_text_atomic(args.output, generate_structured_log(templates, truth, args.lines, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
