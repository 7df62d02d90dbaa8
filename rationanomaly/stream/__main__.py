"""python -m rationanomaly.stream bench --transport redis --rate 2000 --seconds 5 --output_json runs/stream/bench.json

Real-time detection over Redis Streams or Kafka. Commands:
  serve   the worker: logs.raw -> Drain3 -> verdict cache -> detector for new templates -> logs.verdicts
          (one verdict per line) and sessions.verdicts (one per 100-line window); stops cleanly on SIGTERM
  replay  feed a log file (raw lines, or a loghub structured CSV's Content column) into the input stream
  bench   start redis-server (or the Kafka mock cluster) on 127.0.0.1 and a worker, feed an open-loop load,
          write the latency record (--output_json)
Exit status: 0 done, 1 the broker stayed unreachable, 2 a bad argument or a missing file or package.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path

from rationanomaly.paths import SAMPLE_DATA_DIR

DEFAULT_INPUT = SAMPLE_DATA_DIR / "bgl_structured.csv"


def build_parser() -> argparse.ArgumentParser:
    """The three subcommands and their flags."""
    from rationanomaly.stream.bench import FIRST_SEEN, NOVEL_EVERY, PATHS
    from rationanomaly.stream.detectors import FAKE_LATENCY_MS, TEMPLATE_DETECTORS
    from rationanomaly.stream.engine import MAX_BATCH
    from rationanomaly.stream.parser import DEFAULT_SIM_TH, LOG_FORMATS
    from rationanomaly.stream.redis_transport import (
        CLAIM_IDLE_MS,
        DEFAULT_URL,
        INPUT_STREAM,
        LINES_STREAM,
        RECONNECT_S,
        WINDOWS_STREAM,
    )
    from rationanomaly.stream.service import MAX_HELD, READ_BATCH

    parser = argparse.ArgumentParser(
        prog="python -m rationanomaly.stream",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True)

    def broker(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--transport", choices=("redis", "kafka"), default="redis")
        sub.add_argument(
            "--redis_url",
            default=None,
            help=f"Redis server (default {DEFAULT_URL}; with kafka: optional shared verdict cache, no Drain snapshot)",
        )
        sub.add_argument("--bootstrap_servers", default="127.0.0.1:9092", help="Kafka brokers (kafka transport)")
        sub.add_argument("--input_stream", default=INPUT_STREAM, help="input stream / topic")
        sub.add_argument(
            "--kafka_option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="librdkafka setting for the Kafka clients, e.g. session.timeout.ms=6000 (repeatable)",
        )

    serve = commands.add_parser("serve", help="run the detection worker")
    broker(serve)
    serve.add_argument("--lines_stream", default=LINES_STREAM, help="line verdicts stream / topic")
    serve.add_argument("--windows_stream", default=WINDOWS_STREAM, help="window verdicts stream / topic")
    serve.add_argument(
        "--consumer",
        default=socket.gethostname(),
        help="consumer name (Redis); a restarted worker with the same name replays its pending lines",
    )
    serve.add_argument("--detector", choices=sorted(TEMPLATE_DETECTORS), default="rules")
    serve.add_argument("--model", default="", help="model name (openai) or folder (transformers)")
    serve.add_argument("--base_url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    serve.add_argument("--mode", default="cot", help="prompt mode of rationanomaly.prompts (cot, log, default)")
    serve.add_argument("--max_new_tokens", type=int, default=None, help="answer budget per template")
    serve.add_argument("--fake_latency_ms", type=float, default=FAKE_LATENCY_MS, help="fake detector's delay per call")
    serve.add_argument("--max_batch", type=int, default=MAX_BATCH, help="templates per detector call")
    serve.add_argument(
        "--log_format",
        choices=LOG_FORMATS,
        default="raw",
        help="raw: parse whole lines; bgl: drop loghub's BGL header first",
    )
    serve.add_argument("--sim_th", type=float, default=DEFAULT_SIM_TH, help="Drain similarity threshold")
    serve.add_argument("--window", type=int, default=100, help="lines per window (paper: 100)")
    serve.add_argument("--read_batch", type=int, default=READ_BATCH, help="messages per read")
    serve.add_argument("--max_held", type=int, default=MAX_HELD, help="lines waiting for the model before reads pause")
    serve.add_argument(
        "--claim_idle_ms",
        type=int,
        default=CLAIM_IDLE_MS,
        help="take over other consumers' messages pending this long (Redis)",
    )
    serve.add_argument(
        "--reconnect_seconds",
        type=float,
        default=RECONNECT_S,
        help="how long to wait for a broker that went away before exiting",
    )
    serve.add_argument("--maxlen", type=int, default=None, help="trim the verdict streams to about this length")
    serve.add_argument(
        "--snapshot_file",
        type=Path,
        default=None,
        help="also write the Drain snapshot here, and restore it when the broker keeps none (kafka: the only copy)",
    )
    serve.add_argument("--max_seconds", type=float, default=None, help="stop after this many seconds")
    serve.add_argument(
        "--idle_exit_seconds",
        type=float,
        default=None,
        help="stop after this many seconds without input (and nothing held)",
    )
    serve.add_argument("--max_lines", type=int, default=None, help="stop after this many input lines")
    serve.add_argument("--stats_json", type=Path, default=None, help="write the run's counts here at exit")

    replay = commands.add_parser("replay", help="feed a log file into the input stream")
    replay.add_argument("file", type=Path, help="raw log, or loghub structured CSV (its Content column)")
    broker(replay)
    replay.add_argument("--source", default=None, help="log name carried by each line (default: the file's stem)")
    replay.add_argument("--rate", type=float, default=0.0, help="lines per second, open loop (0 = as fast as possible)")
    replay.add_argument("--limit", type=int, default=None, help="send at most this many lines")

    bench = commands.add_parser("bench", help="measure latency at a fixed offered rate")
    bench.add_argument("--transport", choices=("redis", "kafka"), default="redis")
    bench.add_argument(
        "--rate",
        type=str,
        default="15000",
        help="lines per second; a comma-separated list sweeps the rates and reports the knee",
    )
    bench.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run")
    bench.add_argument("--runs", type=int, default=1, help="runs per rate; the record is the median run by p99")
    bench.add_argument(
        "--path",
        choices=PATHS,
        default="cached",
        help=f"cached: known templates; {FIRST_SEEN}: plus new ones answered by a fake model",
    )
    bench.add_argument("--fake_latency_ms", type=float, default=FAKE_LATENCY_MS)
    bench.add_argument("--novel_every", type=int, default=NOVEL_EVERY, help="first_seen: every Nth line is new")
    bench.add_argument(
        "--input",
        type=Path,
        default=DEFAULT_INPUT,
        help="lines to send, round and round (default: the embedded synthetic BGL sample)",
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--output_json", type=Path, required=True)
    return parser


def kafka_options(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` flags as a librdkafka settings dict."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--kafka_option {pair!r}: write KEY=VALUE, e.g. session.timeout.ms=6000")
        options[key.strip()] = value.strip()
    return options


def serve(args: argparse.Namespace) -> int:
    """Build the transport, parser, detector and engine, then run until stopped; print one summary line."""
    from rationanomaly.io import write_json_atomic
    from rationanomaly.stream.detectors import make_template_detector
    from rationanomaly.stream.redis_transport import DEFAULT_URL, RedisTransport, RedisVerdicts, connect
    from rationanomaly.stream.service import StopFlag, build_engine, restore_parser, run_worker

    stop = StopFlag()
    stop.install_signal_handlers()  # before connecting: a SIGTERM during the first reconnect wait is clean too
    client = None
    if args.transport == "redis" or args.redis_url:
        client = connect(args.redis_url or DEFAULT_URL)
    if args.transport == "redis":
        transport = RedisTransport(
            client,
            args.consumer,
            args.input_stream,
            args.lines_stream,
            args.windows_stream,
            window=args.window,
            claim_idle_ms=args.claim_idle_ms,
            reconnect_s=args.reconnect_seconds,
            maxlen=args.maxlen,
            stopping=stop.event,
        )
    else:
        from rationanomaly.stream.kafka_transport import KafkaTransport

        transport = KafkaTransport(
            args.bootstrap_servers,
            args.input_stream,
            args.lines_stream,
            args.windows_stream,
            window=args.window,
            extra=kafka_options(args.kafka_option),
        )
    parser = restore_parser(transport, args.snapshot_file, {"sim_th": args.sim_th, "log_format": args.log_format})
    detector = make_template_detector(
        args.detector,
        model=args.model,
        base_url=args.base_url,
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        latency_ms=args.fake_latency_ms,
    )
    engine = build_engine(parser, detector, RedisVerdicts(client) if client is not None else None, args.max_batch)
    try:
        stats = run_worker(
            transport,
            engine,
            stop,
            args.read_batch,
            max_held=args.max_held,
            max_seconds=args.max_seconds,
            idle_exit_s=args.idle_exit_seconds,
            max_lines=args.max_lines,
            snapshot_file=args.snapshot_file,
            snapshot_in_transport=args.transport == "redis",
        )
    finally:
        if hasattr(transport, "close"):
            transport.close()
    if args.stats_json:
        write_json_atomic(args.stats_json, stats.to_dict())
    summary = (
        f"served {stats.lines_in} lines -> {stats.verdicts} verdicts ({dict(stats.paths)}), {stats.windows} "
        f"windows, {stats.model_calls} detector calls for {stats.templates_asked} templates, "
        f"{stats.templates} templates in Drain, stopped by {stats.stopped_by or 'signal'} after "
        f"{stats.seconds:.1f} s"
    )
    print(summary)  # noqa: T201
    return 0


def replay(args: argparse.Namespace) -> int:
    """Send the file's lines once (optionally paced), then print what was sent."""
    from rationanomaly.stream.feed import KafkaSender, RedisSender, feed, read_lines
    from rationanomaly.stream.redis_transport import DEFAULT_URL, connect

    lines = read_lines(args.file)
    if args.limit is not None:
        lines = lines[: args.limit]
    if args.transport == "redis":
        sender = RedisSender(connect(args.redis_url or DEFAULT_URL, timeout_s=30), args.input_stream)
    else:
        sender = KafkaSender(args.bootstrap_servers, args.input_stream, kafka_options(args.kafka_option))
    source = args.source or args.file.stem
    result = feed(sender.send, lines, source, args.rate, progress=sys.stderr.isatty())
    sender.close()
    summary = (
        f"sent {result.sent} lines of {args.file} as {source!r} to {args.transport} {args.input_stream} "
        f"in {result.seconds:.2f} s ({result.rate:.0f} lines/s)"
    )
    print(summary)  # noqa: T201
    return 0


def bench(args: argparse.Namespace) -> int:
    """Run the bench (each rate, `runs` times), write the JSON record, print one line per rate."""
    from rationanomaly.io import write_json_atomic
    from rationanomaly.stream.bench import BenchConfig, knee, median_run, run_bench
    from rationanomaly.stream.feed import read_lines

    try:
        rates = [float(r) for r in args.rate.split(",") if r.strip()]
    except ValueError as error:
        raise ValueError(f"--rate {args.rate!r}: give a number or a comma-separated list of numbers") from error
    if not rates or any(r <= 0 for r in rates) or args.runs < 1 or args.seconds <= 0:
        raise ValueError("--rate, --runs and --seconds must be positive")
    corpus = tuple(read_lines(args.input))
    # SIGTERM unwinds like Ctrl-C, so the bench's broker and worker are stopped by their `finally` blocks
    signal.signal(signal.SIGTERM, _exit_on_signal)
    sweep = []
    for rate in rates:
        config = BenchConfig(
            args.transport,
            rate,
            args.seconds,
            args.path,
            corpus,
            args.fake_latency_ms,
            args.novel_every,
            args.seed,
            progress=sys.stderr.isatty(),
        )
        runs = [run_bench(config) for _ in range(args.runs)]
        record = {**median_run(runs), "runs": runs} if len(runs) > 1 else runs[0]
        sweep.append(record)
        print(_bench_line(record))  # noqa: T201
    output = sweep[0] if len(sweep) == 1 else {**sweep[0], "sweep": sweep, "knee_rate": knee(sweep)}
    output["input"] = str(args.input)
    write_json_atomic(args.output_json, output)
    if len(sweep) > 1:
        print(f"knee (lowest rate with p99 over {sweep[0]['latency_target_ms']:g} ms): {output['knee_rate']}")  # noqa: T201
    print(f"wrote {args.output_json}")  # noqa: T201
    return 0


def _exit_on_signal(number: int, _frame: object) -> None:
    """Turn a signal into SystemExit (exit status 128 + signal number, as a shell reports it)."""
    raise SystemExit(128 + number)


def _bench_line(record: dict) -> str:
    """One line per measured rate: what the README tables quote."""
    line = (
        f"{record['transport']} {record['path']}: target {record['rate_target']:.0f} ev/s, achieved "
        f"{record['rate_achieved']:.0f}, events {record['events']}, lost {record['lost']}, duplicates "
        f"{record['duplicates']}, p50 {record['p50_ms']} ms, p99 {record['p99_ms']} ms, max {record['max_ms']} ms, "
        f"load {record['machine']['load_average'][0]}"
    )
    if record.get("first_seen_p50_ms") is not None:
        line += f"; first-seen p50 {record['first_seen_p50_ms']} ms, p99 {record['first_seen_p99_ms']} ms"
    return line


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand; errors are one line unless --debug."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from rationanomaly.stream.parser import StreamDependencyError
    from rationanomaly.stream.redis_transport import BrokerUnavailable

    handlers = {"serve": serve, "replay": replay, "bench": bench}
    try:
        return handlers[args.command](args)
    except BrokerUnavailable as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 1
    except (StreamDependencyError, FileNotFoundError, ValueError, TimeoutError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except Exception as error:
        if args.debug:
            raise
        name = type(error).__name__
        print(f"error: {name}: {error} (rerun with --debug for the traceback)", file=sys.stderr)  # noqa: T201
        return 1 if "Connection" in name else 2


if __name__ == "__main__":
    raise SystemExit(main())
