"""python -m rationanomaly.timeseries synth --layout yahoo --output_dir runs/timeseries/a1 --series 67 --seed 0

Two commands. `synth` writes seeded synthetic series in the Yahoo CSV or SMD txt layout (defaults: the
A1 / SMD statistics). `train` runs the dynamic-reward agent (VAE + LSTM-DQN + active learning) on a
dataset folder and writes report.json, training.png, validation.png and timing.json.

    python -m rationanomaly.timeseries train --data runs/timeseries/a1 --layout yahoo \\
        --mode reference --output_dir runs/timeseries/a1_reference

Defaults are the reference's constants for the layout; flags override them. An interrupted `train`
resumes from output_dir/checkpoint.pt when run again with the same settings. Exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace

from rationanomaly.timeseries.data import LAYOUTS, SeriesFormatError

SYNTH_LAYOUTS = ("yahoo", "smd")


def build_parser() -> argparse.ArgumentParser:
    """`synth` and `train` subcommands with snake_case flags."""
    parser = argparse.ArgumentParser(prog="python -m rationanomaly.timeseries", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write synthetic series in the Yahoo or SMD layout")
    synth.add_argument("--layout", required=True, choices=SYNTH_LAYOUTS)
    synth.add_argument(
        "--output_dir", required=True, help="folder to write (Yahoo: real_N.csv; SMD: train/ test/ test_label/)"
    )
    synth.add_argument("--series", type=int, required=True, help="number of series (A1 has 67, SMD 28 machines)")
    synth.add_argument("--seed", type=int, required=True)
    synth.add_argument("--min_length", type=int, default=None, help="shortest series (default: A1 741, SMD 23,687)")
    synth.add_argument("--max_length", type=int, default=None, help="longest series (default: A1 1,461, SMD 28,743)")
    synth.add_argument("--dims", type=int, default=None, help="channels of an SMD series (default 38)")
    synth.add_argument(
        "--anomaly_rate", type=float, default=None, help="share of anomalous points (default: A1 0.0176, SMD 0.0416)"
    )

    train = commands.add_parser("train", help="train and validate the dynamic-reward agent")
    train.add_argument(
        "--data", required=True, help="dataset folder (Yahoo: *.csv; SMD: ServerMachineDataset; WaDi: the two CSVs)"
    )
    train.add_argument("--layout", required=True, choices=LAYOUTS)
    train.add_argument("--mode", default="reference", choices=("reference", "fixed"))
    train.add_argument("--output_dir", required=True)
    train.add_argument("--episodes", type=int, default=None, help="episodes (default: A1 300, SMD 100, WaDi 20)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--al_budget", type=int, default=None, help="active-learning labels per episode")
    train.add_argument("--lp_budget", type=int, default=None, help="pseudo-labels per series visit")
    train.add_argument("--gamma", type=float, default=None, help="discount (default: A1 .92, SMD .96, WaDi .5)")
    train.add_argument("--vae_epochs", type=int, default=None, help="VAE epochs (default: A1 200, SMD 50, WaDi 20)")
    train.add_argument("--vae_batch_size", type=int, default=None, help="VAE batch size (default 32)")
    train.add_argument("--batch_size", type=int, default=None, help="DQN batch size (default: A1 256, SMD 128)")
    train.add_argument("--replay_init", type=int, default=None, help="transitions the warm-up collects (default 1500)")
    train.add_argument("--updates_per_episode", type=int, default=None, help="DQN updates per episode (default 10)")
    train.add_argument("--learning_rate", type=float, default=None, help="Q-network Adam learning rate (3e-4)")
    train.add_argument(
        "--label_spreading",
        choices=("rbf", "knn"),
        default=None,
        help="LabelSpreading kernel (default rbf as the reference; knn for SMD scale)",
    )
    train.add_argument(
        "--channels",
        choices=("first", "all"),
        default=None,
        help="channels the agent sees (default: SMD first as the reference, else all)",
    )
    train.add_argument("--checkpoint_every", type=int, default=None, help="episodes between checkpoints (50)")
    train.add_argument("--debug", action="store_true", help="log progress and show tracebacks")
    return parser


def settings_from(args: argparse.Namespace):
    """The layout's preset with the flags that were given on top."""
    from rationanomaly.timeseries.train import preset

    settings = preset(args.layout, args.mode)
    overrides = {
        name: getattr(args, name)
        for name in (
            "episodes",
            "al_budget",
            "lp_budget",
            "gamma",
            "batch_size",
            "replay_init",
            "updates_per_episode",
            "learning_rate",
            "label_spreading",
            "channels",
            "checkpoint_every",
        )
        if getattr(args, name) is not None
    }
    vae = {
        key: value
        for key, value in (("epochs", args.vae_epochs), ("batch_size", args.vae_batch_size))
        if value is not None
    }
    return replace(settings, seed=args.seed, **overrides, vae=replace(settings.vae, **vae))


def run_synth(args: argparse.Namespace) -> str:
    """Write the synthetic dataset; returns the summary line."""
    from rationanomaly.timeseries.synthetic import DEFAULT_SPECS, write_synthetic

    spec = DEFAULT_SPECS[args.layout]
    given = {
        "series": args.series,
        "min_length": args.min_length,
        "max_length": args.max_length,
        "dims": args.dims,
        "anomaly_rate": args.anomaly_rate,
    }
    spec = replace(spec, **{key: value for key, value in given.items() if value is not None})
    written = write_synthetic(args.output_dir, args.layout, spec, args.seed)
    return (
        f"wrote {spec.series} synthetic series ({len(written)} files, {args.layout} layout, seed {args.seed}) "
        f"to {args.output_dir}"
    )


def run_train(args: argparse.Namespace) -> str:
    """Read, train, validate; returns the summary line."""
    from rationanomaly.timeseries.data import read_dataset
    from rationanomaly.timeseries.train import train

    started = time.perf_counter()
    settings = settings_from(args)
    report = train(read_dataset(args.data, args.layout), settings, args.output_dir, progress=sys.stderr.isatty())
    mean, labels = report["validation"]["mean"], report["labels"]
    return (
        f"{settings.mode} on {len(report['split']['validation'])} validation series: mean P {mean['precision']:.3f} "
        f"R {mean['recall']:.3f} F1 {mean['f1']:.3f} (point-adjusted F1 {mean['pa_f1']:.3f}, AU-PR "
        f"{mean['au_pr']:.3f}; all-normal F1 {report['validation']['baselines']['all_normal']['f1']:.3f}); "
        f"labels true {labels['true']} ({labels['share_true']:.1%}), pseudo {labels['pseudo']}; "
        f"lambda {report['lambda'][0] if report['lambda'] else settings.lam.initial:g} -> "
        f"{report['episodes'][-1]['lambda_next'] if report['episodes'] else settings.lam.initial:g}; "
        f"wrote {args.output_dir}/report.json in {time.perf_counter() - started:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; print its summary line; 2 on a data or settings error."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run_synth(args) if args.command == "synth" else run_train(args)
    except (SeriesFormatError, ValueError, FileNotFoundError) as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    print(summary)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
