"""python benchmarks/stream_latency.py --out runs/stream

The streaming measurements the README reports, each one `python -m rationanomaly.stream bench` command, then a
side-by-side table with LogNEO's claim (15,000 events/s at 45 ms end to end, TensorRT on a GPU):
  1. Redis Streams, verdict cached, 15,000 ev/s, 60 s, 3 runs (the record is the median run by p99);
  2. the knee: the same path at rising rates, 20 s each (the lowest rate whose p99 passes 45 ms);
  3. Redis Streams, first-seen path: every 1,000th line a new template, a fake model taking 20 ms per call;
  4. Kafka (librdkafka's mock cluster), verdict cached, 15,000 ev/s, 60 s.
About 9 minutes on 2 cores. `--table_only` prints the table from the JSON files already in --out. Every number
carries the machine's load average: on a shared machine, rerun at a quiet time before quoting it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LOGNEO_RATE, LOGNEO_P_MS = 15_000, 45.0  # LogNEO (arXiv 2606.08153): Kafka + Redis + TensorRT, hardware not stated
KNEE_RATES = "10000,20000,25000,30000,35000,40000,50000"
RUNS = {
    "redis_cached_15k": ["--transport", "redis", "--rate", "15000", "--seconds", "60", "--runs", "3"],
    "redis_knee": ["--transport", "redis", "--rate", KNEE_RATES, "--seconds", "20"],
    "redis_first_seen_15k": ["--transport", "redis", "--rate", "15000", "--seconds", "60", "--path", "first_seen"],
    "kafka_cached_15k": ["--transport", "kafka", "--rate", "15000", "--seconds", "60"],
}


def run(out: Path, names: list[str], knee_rates: str = KNEE_RATES) -> None:
    """Run the named measurements one after the other (each starts and stops its own broker and worker)."""
    for name in names:
        arguments = [knee_rates if a == KNEE_RATES else a for a in RUNS[name]]
        command = [
            sys.executable,
            "-m",
            "rationanomaly.stream",
            "bench",
            *arguments,
            "--output_json",
            str(out / f"{name}.json"),
        ]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)


def row(label: str, record: dict) -> str:
    """One table row from a bench record."""
    p99 = record["p99_ms"]
    ratio = f"{p99 / LOGNEO_P_MS:.2f}" if p99 is not None else "-"
    return (
        f"| {label} | {record['rate_target']:.0f} | {record['rate_achieved']:.0f} | {record['p50_ms']} | {p99} | "
        f"{record['max_ms']} | {record['lost']} | {record['duplicates']} | {ratio} | "
        f"{record['machine']['load_average'][0]} |"
    )


def table(out: Path) -> str:
    """The side-by-side table (markdown) from the JSON records present in `out`."""
    lines = [
        "| measurement | target ev/s | achieved ev/s | p50 ms | p99 ms | max ms | lost | dup | p99 / 45 ms | "
        "load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| LogNEO as claimed: Kafka + Redis + TensorRT, GPU (hardware not stated) | {LOGNEO_RATE} | - | - | "
        f"{LOGNEO_P_MS:g} (end to end) | - | - | - | 1.00 | - |",
    ]
    records = {name: json.loads((out / f"{name}.json").read_text()) for name in RUNS if (out / f"{name}.json").exists()}
    if "redis_cached_15k" in records:
        record = records["redis_cached_15k"]
        p99s = [r["p99_ms"] for r in record.get("runs", [record])]
        lines.append(
            row(f"ours, Redis Streams, verdict cached, 2-core CPU (median of {len(p99s)}; p99s {p99s})", record)
        )
    for record in records.get("redis_knee", {}).get("sweep", []):
        lines.append(row("ours, Redis Streams, verdict cached, rate sweep (20 s)", record))
    if "redis_first_seen_15k" in records:
        record = records["redis_first_seen_15k"]
        lines.append(
            row("ours, Redis Streams, first-seen mix (1 new template per 1,000 lines, fake 20 ms model)", record)
        )
        lines.append(
            f"| ... of which the {record['first_seen_events']} first-seen lines | - | - | "
            f"{record['first_seen_p50_ms']} | {record['first_seen_p99_ms']} | {record['first_seen_max_ms']} "
            "| - | - | - | - |"
        )
    if "kafka_cached_15k" in records:
        lines.append(row("ours, Kafka mock cluster (in-process broker), verdict cached", records["kafka_cached_15k"]))
    if "redis_knee" in records:
        lines.append(
            f"\nknee (lowest swept rate with p99 over {LOGNEO_P_MS:g} ms or a loss): "
            f"{records['redis_knee'].get('knee_rate')}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, default=Path("runs/stream"), help="folder for the JSON records")
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), default=list(RUNS), help="measurements to run")
    parser.add_argument("--knee_rates", default=KNEE_RATES, help=f"rates of the sweep (default {KNEE_RATES})")
    parser.add_argument("--table_only", action="store_true", help="print the table from existing records")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        run(args.out, args.only, args.knee_rates)
    print(table(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
