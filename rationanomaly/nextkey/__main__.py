"""python -m rationanomaly.nextkey sequences --input rationanomaly/sample_data/bgl_structured.csv --grouping time \
    --output_dir runs/nextkey/sample --train_size 60

Next-key detectors from the command line: `sequences` (loghub structured CSV -> DeepLog key files), `synthetic`
(seeded made-up key files), `train`
(pre-training, LogGPT mode, LogNEO mode, or the n-gram floor), `evaluate` (P/R/F1/FPR of a model folder) and
`compare` (every detector on one split, one table). Each prints one summary line; errors are one line on stderr
(exit 2) unless --debug. `torchrun --nproc_per_node N -m rationanomaly.nextkey train ...` trains on N processes.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace

from rationanomaly.cli import fraction, positive_int, run_command
from rationanomaly.nextkey.keys import DATASET_TOP_K, FRAMINGS, SESSION
from rationanomaly.nextkey.models import ARCHS, GPT2, ModelShape
from rationanomaly.nextkey.reward import RewardParams
from rationanomaly.nextkey.sequences import GROUPINGS, MAX_LEN, STEP_SECONDS

NGRAM_METHOD = "ngram"


def _add_sequences(commands) -> None:
    parser = commands.add_parser("sequences", help="loghub structured CSV -> DeepLog key-sequence files")
    parser.add_argument("--input", required=True, help="loghub *.log_structured.csv")
    parser.add_argument(
        "--output_dir", required=True, help="folder for normal/abnormal files, keys.json, sequences.json"
    )
    parser.add_argument(
        "--grouping",
        required=True,
        choices=GROUPINGS,
        help="block: HDFS blk_ ids; time: sliding time windows (BGL, Thunderbird); lines: fixed "
        "windows of consecutive lines",
    )
    parser.add_argument("--labels", help="block grouping: loghub's anomaly_label.csv (BlockId,Label)")
    parser.add_argument("--key_map", help="keys.json of an earlier run, so both runs number keys alike")
    parser.add_argument("--window", type=int, help="seconds (time, default 60) or lines (lines, default 100)")
    parser.add_argument(
        "--step", type=int, default=STEP_SECONDS, help=f"time windows: slide in seconds (default {STEP_SECONDS})"
    )
    parser.add_argument(
        "--max_len",
        type=int,
        default=MAX_LEN,
        help=f"longest sequence kept whole (default {MAX_LEN}); longer time windows are cut",
    )
    parser.add_argument(
        "--train_size",
        type=int,
        help="also write LogGPT's split: this many shuffled normal "
        "sequences in `train`, the rest in `test_normal`, all abnormal in `test_abnormal`",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")


def _add_training_knobs(parser: argparse.ArgumentParser) -> None:
    """Model, optimisation and reward knobs shared by `train` and `compare` (defaults: LogGPT's, or ours)."""
    default, reward, shape = _defaults()
    parser.add_argument("--arch", choices=ARCHS, default=GPT2, help="model family (default gpt2)")
    parser.add_argument("--n_layer", type=int, default=shape.n_layer, help="layers (default 6, LogGPT's)")
    parser.add_argument("--n_head", type=int, default=shape.n_head, help="attention heads (default 6)")
    parser.add_argument("--n_embd", type=int, default=shape.n_embd, help="width (default 60)")
    parser.add_argument("--dropout", type=float, default=shape.dropout, help="pre-training dropout (default 0.1)")
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        default=SESSION,
        help="session: <bos> keys <eos>, every key and the end scored; window: no end, first key "
        "not scored (default session)",
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASET_TOP_K),
        default="hdfs",
        help="picks LogGPT's K (hdfs 7, bgl 80, thunderbird 690) unless --top_k",
    )
    parser.add_argument("--top_k", type=positive_int, help="K of top-K detection (default: LogGPT's for --dataset)")
    parser.add_argument(
        "--pretrain_epochs",
        type=int,
        help="cross-entropy epochs (default 100 from scratch, 0 when --init is a next-key model and the method is RL)",
    )
    parser.add_argument("--rl_episodes", type=int, default=default.rl_episodes, help="RL episodes (default 20)")
    parser.add_argument(
        "--batch_size", type=positive_int, default=default.batch_size, help="pre-training batch (default 16)"
    )
    parser.add_argument("--lr", type=float, default=default.lr, help="pre-training AdamW lr (default 1e-4)")
    parser.add_argument(
        "--patience",
        type=int,
        default=default.patience,
        help="pre-training stops after this many epochs without a better validation loss (default 5; 0 = never)",
    )
    parser.add_argument("--rl_lr", type=float, default=default.rl_lr, help="RL Adam lr (default 1e-5)")
    parser.add_argument(
        "--rl_batch_size", type=positive_int, default=default.rl_batch_size, help="RL batch (default 64)"
    )
    parser.add_argument(
        "--ppo_epochs", type=positive_int, default=default.ppo_epochs, help="logneo: updates per batch (default 2)"
    )
    parser.add_argument("--clip", type=float, default=default.clip, help="logneo: PPO clip epsilon (default 0.2)")
    parser.add_argument(
        "--ce_coef", type=float, default=default.ce_coef, help="logneo: cross-entropy weight (default 0.1)"
    )
    parser.add_argument(
        "--kl_coef", type=float, default=default.kl_coef, help="logneo: KL to the starting model (default 0)"
    )
    parser.add_argument(
        "--samples", type=positive_int, default=default.samples, help="logneo: K-lists per position (default 4)"
    )
    parser.add_argument(
        "--raw_advantages",
        action="store_true",
        help="logneo: do not divide advantages by their batch standard deviation",
    )
    parser.add_argument("--alpha", type=float, default=reward.alpha, help="reward: early-hit bonus (default 1)")
    parser.add_argument("--beta", type=float, default=reward.beta, help="reward: late-miss extra cost (default 1)")
    parser.add_argument("--decay", type=float, default=reward.decay, help="reward: position decay lambda (default 3)")
    parser.add_argument("--kappa", type=float, default=reward.kappa, help="reward: rank decay (default 1)")
    parser.add_argument(
        "--validation_ratio",
        type=fraction(high_open=True),
        default=default.validation_ratio,
        help="share of --train held out to validate when --validation is absent (default 0.1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda")
    parser.add_argument("--threads", type=int, help="CPU threads (default 1: small models gain nothing from more)")


def _defaults():
    from rationanomaly.nextkey.train import TrainConfig

    return TrainConfig(), RewardParams(), ModelShape()


def config_from_args(args: argparse.Namespace, method: str):
    """The TrainConfig a command line asks for."""
    from rationanomaly.nextkey.train import TrainConfig

    shape = replace(ModelShape(), n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    reward = RewardParams(alpha=args.alpha, beta=args.beta, decay=args.decay, kappa=args.kappa)
    return TrainConfig(
        method=method,
        arch=args.arch,
        shape=shape,
        framing=args.framing,
        dataset=args.dataset,
        top_k=args.top_k,
        seed=args.seed,
        validation_ratio=args.validation_ratio,
        pretrain_epochs=args.pretrain_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        rl_episodes=args.rl_episodes,
        rl_lr=args.rl_lr,
        rl_batch_size=args.rl_batch_size,
        ppo_epochs=args.ppo_epochs,
        clip=args.clip,
        ce_coef=args.ce_coef,
        kl_coef=args.kl_coef,
        samples=args.samples,
        advantage_scale=not args.raw_advantages,
        reward=reward,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: five subcommands."""
    parser = argparse.ArgumentParser(prog="python -m rationanomaly.nextkey", description=__doc__.split("\n\n")[1])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_sequences(commands)

    synthetic = commands.add_parser("synthetic", help="seeded synthetic normal/abnormal key files (demo, tests)")
    synthetic.add_argument("--output_dir", required=True, help="folder for the normal and abnormal files")
    synthetic.add_argument("--normal", type=int, default=600, help="normal sessions (default 600)")
    synthetic.add_argument("--abnormal", type=int, default=200, help="abnormal sessions (default 200)")
    synthetic.add_argument("--seed", type=int, default=0, help="seed (default 0)")

    train = commands.add_parser("train", help="train a next-key model on normal sequences")
    train.add_argument("--train", required=True, help="DeepLog file of normal training sequences")
    train.add_argument(
        "--validation", help="DeepLog file of normal validation sequences (default: hold out part of --train)"
    )
    train.add_argument("--method", required=True, choices=("pretrain", "loggpt", "logneo", NGRAM_METHOD))
    train.add_argument("--output_dir", required=True, help="model folder to write")
    train.add_argument(
        "--init",
        help="start from this folder: a next-key model, or a local HF gpt2/gpt_neo model "
        "(e.g. GPT-Neo-1.3B; its embeddings are resized to the keys)",
    )
    train.add_argument("--ngram_order", type=int, default=3, help="ngram: n (default 3)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_training_knobs(train)

    evaluate = commands.add_parser("evaluate", help="P/R/F1/FPR of a model folder on normal and abnormal files")
    evaluate.add_argument("--model", required=True, help="model folder (transformer or n-gram)")
    evaluate.add_argument("--normal", required=True, help="DeepLog file of normal test sequences")
    evaluate.add_argument("--abnormal", required=True, help="DeepLog file of abnormal test sequences")
    evaluate.add_argument("--output_json", required=True, help="metrics file to write")
    evaluate.add_argument("--top_k", type=positive_int, help="K (default: the model's)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda")
    evaluate.add_argument("--threads", type=int, help="CPU threads (default 1)")

    compare = commands.add_parser("compare", help="n-gram, pre-trained, LogGPT and LogNEO modes on one split")
    compare.add_argument("--normal", required=True, help="DeepLog file of normal sequences (split into train/test)")
    compare.add_argument("--abnormal", required=True, help="DeepLog file of abnormal test sequences")
    compare.add_argument("--output_dir", required=True, help="folder for the split, the models and the table")
    compare.add_argument(
        "--train_ratio",
        type=fraction(low_open=True, high_open=True),
        default=0.8,
        help="share of --normal that trains (default 0.8)",
    )
    compare.add_argument(
        "--rows",
        default="ngram,pretrain,loggpt,logneo",
        help="comma-separated rows among ngram, pretrain, loggpt, logneo, logneo_pm1 (PPO on the "
        "+-1 reward) (default: the first four)",
    )
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_training_knobs(compare)
    return parser


def _run(args: argparse.Namespace) -> str | None:
    """Run the chosen command; returns its summary line (None on a non-zero torchrun rank)."""
    if args.command == "sequences":
        from rationanomaly.nextkey.sequences import build_sequences

        meta = build_sequences(
            args.input,
            args.output_dir,
            args.grouping,
            args.labels,
            args.key_map,
            args.window,
            args.step,
            args.max_len,
            args.train_size,
            args.seed,
        )
        return (
            f"{meta['sequences']} sequences ({meta['normal']} normal, {meta['abnormal']} abnormal, "
            f"{meta['unlabelled']} unlabelled), {meta['keys']} keys -> {args.output_dir}"
        )
    if args.command == "synthetic":
        from rationanomaly.nextkey.synthetic import write_synthetic

        paths = write_synthetic(args.output_dir, args.normal, args.abnormal, args.seed)
        return f"{args.normal} normal and {args.abnormal} abnormal synthetic sessions -> {paths['normal'].parent}"
    if args.command == "train":
        if args.method == NGRAM_METHOD:
            from rationanomaly.nextkey.ngram import train_ngram

            meta = train_ngram(args.train, args.output_dir, args.ngram_order, args.dataset, args.top_k, args.framing)
            return (
                f"{args.ngram_order}-gram on {meta['sequences']['train']} sequences, K={meta['top_k']} -> "
                f"{args.output_dir}"
            )
        from rationanomaly.nextkey.train import train

        meta = train(
            args.train,
            args.output_dir,
            config_from_args(args, args.method),
            args.validation,
            args.init,
            args.device,
            progress=not args.quiet,
            threads=args.threads,
        )
        if int(os.environ.get("RANK", "0")) != 0:
            return None
        rl = meta["rl"] or {}
        return (
            f"{meta['method']} ({meta['arch']}): {meta['pretrain']['epochs_run']} pre-training epochs, "
            f"{rl.get('episodes_run', 0)} RL episodes, {meta['seconds']:.0f} s, K={meta['top_k']} -> "
            f"{args.output_dir}"
        )
    if args.command == "evaluate":
        from rationanomaly.nextkey.detect import evaluate_detector

        record = evaluate_detector(
            args.model, args.normal, args.abnormal, args.top_k, args.output_json, args.device, args.threads
        )
        return (
            f"precision {record['precision']:.4f} recall {record['recall']:.4f} f1 {record['f1']:.4f} "
            f"fpr {record['fpr']:.4f} (K={record['top_k']}, tp {record['tp']} fp {record['fp']} fn "
            f"{record['fn']} tn {record['tn']}) -> {args.output_json}"
        )
    from rationanomaly.nextkey.compare import compare, format_markdown

    record = compare(
        args.normal,
        args.abnormal,
        args.output_dir,
        config_from_args(args, "pretrain"),
        tuple(r.strip() for r in args.rows.split(",") if r.strip()),
        args.train_ratio,
        progress=not args.quiet,
        device=args.device,
        threads=args.threads,
    )
    return (
        format_markdown(record["rows"]) + f"wrote comparison.json, comparison.md, comparison.png to "
        f"{args.output_dir} ({record['wall_seconds_this_call']:.0f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print one summary; one-line errors (exit 2 for bad input, 1 otherwise) unless --debug."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    def body() -> int:
        summary = _run(args)
        if summary is not None:
            print(summary)  # noqa: T201
        return 0

    return run_command(body, args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
