"""python -m rationanomaly.stream.demo --out runs/demo-stream

The real-time service end to end on the embedded synthetic BGL sample: a private redis-server on 127.0.0.1, a
worker process, the sample replayed at a steady rate, then the verdicts (abnormal lines, every window, checked
against the offline computation), the latency summary and a latency plot, and a clean SIGTERM stop.
Writes `summary.json`, `latency.png` and the worker's log into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rationanomaly.paths import SAMPLE_DATA_DIR

DEFAULT_INPUT = SAMPLE_DATA_DIR / "bgl_structured.csv"
DEMO_RATE = 2000.0  # lines per second: the 1,500-line sample in under a second, paced like a live log
SHOWN_LINES = 8


def build_parser() -> argparse.ArgumentParser:
    """Output folder, input log and replay rate."""
    parser = argparse.ArgumentParser(prog="python -m rationanomaly.stream.demo", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.json, latency.png, worker.log")
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="log to replay (default: embedded sample)")
    parser.add_argument("--rate", type=float, default=DEMO_RATE, help="replay rate, lines per second")
    return parser


def run_demo(out: Path, log: Path, rate: float) -> tuple[dict, list[str]]:
    """Serve, replay, collect, stop; returns the summary record and the report lines to print."""
    import numpy as np
    import redis

    from rationanomaly.io import write_json_atomic
    from rationanomaly.stream.bench import (
        latency_summary,
        plot_latency,
        redis_server,
        start_worker,
        stop_worker,
        wait_for_consumer,
        wait_until,
    )
    from rationanomaly.stream.detectors import RulesDetector
    from rationanomaly.stream.feed import RedisSender, feed, read_lines
    from rationanomaly.stream.offline import offline_verdicts

    out.mkdir(parents=True, exist_ok=True)
    lines = read_lines(log)
    source = log.stem
    (out / "redis").mkdir(exist_ok=True)
    with redis_server(out / "redis") as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        worker = start_worker(["--redis_url", url, "--consumer", "demo"], out / "worker.log")
        try:
            wait_for_consumer(url, "demo")
            sent = feed(RedisSender(client).send, lines, source, rate)
            wait_until(
                lambda: client.xlen("logs.verdicts") >= sent.sent,
                60,
                f"the worker did not answer every line within 60 s (see {out / 'worker.log'})",
            )
            wait_until(lambda: client.xlen("sessions.verdicts") >= len(lines) // 100, 10, "windows missing")
        finally:
            status = stop_worker(worker)
        verdicts = sorted((fields for _, fields in client.xrange("logs.verdicts")), key=lambda v: int(v["seq"]))
        windows = sorted((fields for _, fields in client.xrange("sessions.verdicts")), key=lambda w: int(w["window"]))
    latencies = np.asarray([(int(v["tp"]) - int(v["t"])) / 1e6 for v in verdicts])
    labels, offline_windows = offline_verdicts(lines, RulesDetector())
    agree_lines = [v["verdict"] for v in verdicts] == labels
    agree_windows = {int(w["window"]): w["verdict"] for w in windows} == offline_windows
    summary = {
        "input": str(log),
        "lines": len(lines),
        "verdicts": len(verdicts),
        "abnormal_lines": sum(v["verdict"] == "abnormal" for v in verdicts),
        "windows": len(windows),
        "abnormal_windows": sum(w["verdict"] == "abnormal" for w in windows),
        "templates": len({v["tkey"] for v in verdicts}),
        "rate": rate,
        "latency": latency_summary(latencies),
        "matches_offline": agree_lines and agree_windows,
        "worker_exit_status": status,
    }
    write_json_atomic(out / "summary.json", summary)
    plot_latency(latencies, out / "latency.png", f"demo: {len(lines)} lines at {rate:.0f} lines/s over Redis Streams")
    report = [
        f"{len(verdicts)} line verdicts for {len(lines)} lines, {summary['abnormal_lines']} abnormal; first "
        f"{SHOWN_LINES} abnormal lines:"
    ]
    report += [
        f"  line {v['seq']:>5}  {v['verdict']:<8}  {v['template'][:90]}"
        for v in [v for v in verdicts if v["verdict"] == "abnormal"][:SHOWN_LINES]
    ]
    report.append(f"{len(windows)} windows of 100 lines (abnormal if any line is):")
    report += [
        f"  window {int(w['window']):>3}  {w['verdict']:<8}  {w['abnormal_lines']:>3} abnormal lines" for w in windows
    ]
    lat = summary["latency"]
    report.append(
        f"latency (verdict publish - intended send): p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
        f"max {lat['max_ms']} ms; same verdicts as the offline computation: "
        f"{'yes' if summary['matches_offline'] else 'NO'}; worker exit status after SIGTERM: {status}"
    )
    report.append(f"wrote {out / 'summary.json'}, {out / 'latency.png'}, {out / 'worker.log'}")
    return summary, report


def main(argv: list[str] | None = None) -> int:
    """Run the demo and print its report; one error line on failure."""
    args = build_parser().parse_args(argv)
    try:
        summary, report = run_demo(args.out, args.input, args.rate)
    except (FileNotFoundError, TimeoutError, ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    print("\n".join(report))  # noqa: T201
    return 0 if summary["matches_offline"] and summary["worker_exit_status"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
