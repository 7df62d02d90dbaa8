"""python benchmarks/timeseries_a1.py --output_dir runs/timeseries/a1_bench

The A1-sized run of the dynamic-reward agent: 5 seeds x both modes through the training CLI, two runs side
by side (each on one thread), then the mean +- sd over seeds beside the numbers of the reference
repository's own A1 result files. Without `--data` it first writes an A1-sized synthetic set (67 series of
741-1,461 points, 1.76% anomalous); with `--data PATH_TO/A1Benchmark` it runs on your copy of Yahoo A1.

Settings are the A1 preset (300 episodes, AL 30 / LP 100 per episode, gamma .92: the run behind the
repository's best A1 F1) except the VAE: 20 epochs at batch 256 instead of 200 at batch 32, which alone
would take ~13 min per run on 2 cores. A finished run (its report.json exists) is not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rationanomaly.io import write_json_atomic

MODES = ("reference", "fixed")
# The reference repository's own A1 result files, mean over its validation series (notes/dynamic-reward.md s.3).
REPOSITORY_A1 = [
    ("(LP 100, AL 30, .92), 02-15", 0.464, 0.678, 0.517),
    ("(LP 150, AL 50, .94), 02-15", 0.580, 0.628, 0.513),
    ("(LP 200, AL 100, .96), 02-15", 0.762, 0.402, 0.457),
    ("(LP 200, AL 1000, .96), 03-23", 0.740, 0.360, 0.444),
]
METRICS = ("precision", "recall", "f1", "pa_f1", "au_pr")


def build_parser() -> argparse.ArgumentParser:
    """Output folder, data, seeds, parallel runs and the VAE budget."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--output_dir", default="runs/timeseries/a1_bench")
    parser.add_argument("--data", default=None, help="Yahoo A1Benchmark folder (default: A1-sized synthetic data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--vae_epochs", type=int, default=20)
    parser.add_argument("--vae_batch_size", type=int, default=256)
    return parser


def finished_as_asked(report_path: Path, data: Path, args: argparse.Namespace) -> bool:
    """True when this run's report exists and was made from the same data and budget; such a run is not redone.

    A report from other data or settings in the same folder (a synthetic run, then `--data A1Benchmark`) would
    otherwise be printed under the new data's name; the benchmark stops instead of mixing them.
    """
    if not report_path.is_file():
        return False
    report = json.loads(report_path.read_text())
    asked = {"data": str(data.resolve()), "episodes": args.episodes, "vae_epochs": args.vae_epochs,
             "vae_batch_size": args.vae_batch_size}  # fmt: skip
    found = {"data": str(Path(report["data"]).resolve()), "episodes": report["settings"]["episodes"],
             "vae_epochs": report["settings"]["vae"]["epochs"],
             "vae_batch_size": report["settings"]["vae"]["batch_size"]}  # fmt: skip
    if found != asked:
        differ = ", ".join(f"{key} {found[key]} (asked {asked[key]})" for key in asked if found[key] != asked[key])
        raise SystemExit(f"error: {report_path} was made with {differ}; pass another --output_dir")
    return True


def run_all(commands: list[tuple[Path, list[str]]], jobs: int) -> None:
    """Run the commands, at most `jobs` at a time; a failed run stops the benchmark with its log's tail."""
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < jobs:
            folder, command = pending.pop(0)
            folder.mkdir(parents=True, exist_ok=True)
            log = (folder / "train.log").open("w")
            running.append((folder, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for item in [r for r in running if r[1].poll() is not None]:
            folder, process, log = item
            log.close()
            running.remove(item)
            if process.returncode:
                tail = (folder / "train.log").read_text()[-2000:]
                raise SystemExit(f"run in {folder} failed ({process.returncode}):\n{tail}")
            print((folder / "train.log").read_text().strip().splitlines()[-1], flush=True)


def mean_sd(values: list[float]) -> str:
    """'mean +- sd' over seeds (sample sd; 0 for a single seed)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {sd:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Generate data if needed, run every (mode, seed), print the table, write summary.json."""
    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    started, load_before = time.perf_counter(), os.getloadavg()
    data = Path(args.data) if args.data else out / "data"
    python = [sys.executable, "-m", "rationanomaly.timeseries"]
    if not args.data and not any(data.glob("*.csv")):
        subprocess.run([*python, "synth", "--layout", "yahoo", "--output_dir", str(data), "--series", "67",
                        "--seed", "0"], check=True)  # fmt: skip
    commands = []
    for seed in args.seeds:
        for mode in MODES:
            folder = out / f"{mode}_seed{seed}"
            if not finished_as_asked(folder / "report.json", data, args):
                commands.append((folder, [*python, "train", "--data", str(data), "--layout", "yahoo", "--mode", mode,
                                          "--output_dir", str(folder), "--seed", str(seed), "--episodes",
                                          str(args.episodes), "--vae_epochs", str(args.vae_epochs),
                                          "--vae_batch_size", str(args.vae_batch_size)]))  # fmt: skip
    run_all(commands, args.jobs)
    wall = time.perf_counter() - started
    rows, summary = [], {"data": str(data), "seeds": args.seeds, "wall_s": wall, "runs": len(commands),
                         "load_before": load_before, "load_after": os.getloadavg(), "modes": {}}  # fmt: skip
    earlier = out / "summary.json"
    if not commands and earlier.is_file():  # nothing ran now: keep the wall time and load of the run that did
        summary.update({k: json.loads(earlier.read_text())[k] for k in ("wall_s", "runs", "load_before", "load_after")})
        wall, load_before = summary["wall_s"], summary["load_before"]
    for mode in MODES:
        reports = [json.loads((out / f"{mode}_seed{seed}" / "report.json").read_text()) for seed in args.seeds]
        means = {m: [r["validation"]["mean"][m] for r in reports] for m in METRICS}
        timing = [json.loads((out / f"{mode}_seed{seed}" / "timing.json").read_text()) for seed in args.seeds]
        summary["modes"][mode] = {"per_seed": means, "total_s": [t["total_s"] for t in timing],
                                  "cpu_s": [t.get("cpu_s") for t in timing],
                                  "share_true_labels": [r["labels"]["share_true"] for r in reports]}  # fmt: skip
        rows.append((f"ours, {mode}", *(mean_sd(means[m]) for m in METRICS)))
    header = f"{'run':<34} {'P':>15} {'R':>15} {'F1':>15} {'PA-F1':>15} {'AU-PR':>15}"
    print(header)
    for name, *cells in rows:
        print(f"{name:<34} " + " ".join(f"{c:>15}" for c in cells))
    for name, precision, recall, f1 in REPOSITORY_A1:
        print(f"{'repo A1 ' + name:<34} {precision:>15.3f} {recall:>15.3f} {f1:>15.3f} {'-':>15} {'-':>15}")
    print(
        f"{summary['runs']} runs in {wall / 60:.1f} min wall ({args.jobs} side by side); load average "
        f"{load_before[0]:.1f} before, {summary['load_after'][0]:.1f} after; data {data}"
    )
    cpu = [s for mode in MODES for s in summary["modes"][mode]["cpu_s"] if s is not None]
    if cpu:
        runs = len(MODES) * len(args.seeds)
        idle_minutes = statistics.mean(cpu) * runs / args.jobs / 60  # CPU time is what an idle core would spend
        print(f"CPU per run {statistics.mean(cpu) / 60:.1f} min (mean of {len(cpu)}); on {args.jobs} idle cores "
              f"the {runs} runs take about {idle_minutes:.0f} min")  # fmt: skip
    write_json_atomic(out / "summary.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
