"""One command, one table: the n-gram floor, the pre-trained model, LogGPT mode and LogNEO mode on the same split.

    python -m rationanomaly.nextkey compare --normal ../shared/data/deeplog/hdfs_train \
        --abnormal ../shared/data/deeplog/hdfs_test_abnormal_part1 --output_dir runs/nextkey/hdfs

Protocol (LogGPT's, on what DeepLog's HDFS release offers): the normal file is shuffled with `--seed`; the first
`--train_ratio` of it trains (10% of that validates), the rest is the normal test set; every sequence of the
abnormal file is an abnormal test case. One pre-trained model is the starting point of both RL runs, so the rows
differ only by what they name. Every stage writes into its own folder and is skipped when its evaluation exists,
so an interrupted comparison resumes where it stopped.

Writes `data/` (the split), one folder per row (model, nextkey.json, metrics.jsonl, evaluation.json),
`comparison.json`, `comparison.md` (the table) and `comparison.png` (recall and false-positive rate against K).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rationanomaly.io import atomic_path, write_json_atomic, write_text_atomic
from rationanomaly.nextkey.detect import evaluate_detector
from rationanomaly.nextkey.keys import read_sequences, write_sequences
from rationanomaly.nextkey.models import META_FILE, read_meta
from rationanomaly.nextkey.ngram import DEFAULT_ORDER, train_ngram
from rationanomaly.nextkey.reward import LOGGPT_REWARD
from rationanomaly.nextkey.sequences import split_normal
from rationanomaly.nextkey.train import LOGGPT, LOGNEO, PRETRAIN, RESUME_FILE, TrainConfig, train

logger = logging.getLogger(__name__)

NGRAM_ROW, PRETRAIN_ROW, LOGGPT_ROW, LOGNEO_ROW, PM1_ROW = "ngram", "pretrain", "loggpt", "logneo", "logneo_pm1"
ROWS = (NGRAM_ROW, PRETRAIN_ROW, LOGGPT_ROW, LOGNEO_ROW, PM1_ROW)
DEFAULT_ROWS = (NGRAM_ROW, PRETRAIN_ROW, LOGGPT_ROW, LOGNEO_ROW)
TITLES = {
    NGRAM_ROW: f"{DEFAULT_ORDER}-gram top-K (floor)",
    PRETRAIN_ROW: "pre-trained only (cross-entropy)",
    LOGGPT_ROW: "LogGPT mode (its code: REINFORCE, +-1)",
    LOGNEO_ROW: "LogNEO mode (PPO, position-aware reward)",
    PM1_ROW: "PPO with the +-1 reward (LogGPT's paper)",
}
EVALUATION_FILE = "evaluation.json"
DEFAULT_TRAIN_RATIO = 0.8  # ours: "most of" the normal file trains, the rest measures false alarms


@dataclass(frozen=True)
class Split:
    """Where the comparison's data lies."""

    train: Path
    test_normal: Path
    abnormal: Path


def prepare_split(normal_path: Path, abnormal_path: Path, data_dir: Path, train_ratio: float, seed: int) -> Split:
    """Write (once) the seeded train / normal-test split of the normal file; the abnormal file is used as it is."""
    split = Split(data_dir / "train", data_dir / "test_normal", abnormal_path)
    if split.train.is_file() and split.test_normal.is_file():
        return split
    normal = read_sequences(normal_path)
    train_rows, test_rows = split_normal(normal, round(len(normal) * train_ratio), seed)
    write_sequences(split.test_normal, test_rows)
    write_sequences(split.train, train_rows)
    seen = set(train_rows)
    write_json_atomic(
        data_dir / "split.json",
        {
            "normal": str(normal_path),
            "abnormal": str(abnormal_path),
            "train_ratio": train_ratio,
            "seed": seed,
            "train": len(train_rows),
            "test_normal": len(test_rows),
            "test_normal_also_in_train": sum(row in seen for row in test_rows),
            "abnormal_also_in_train": sum(row in seen for row in read_sequences(abnormal_path)),
        },
    )
    return split


def row_config(row: str, base: TrainConfig) -> TrainConfig:
    """The training config of a table row."""
    if row == PRETRAIN_ROW:
        return replace(base, method=PRETRAIN)
    if row == LOGGPT_ROW:
        return replace(base, method=LOGGPT, pretrain_epochs=0)
    if row == LOGNEO_ROW:
        return replace(base, method=LOGNEO, pretrain_epochs=0)
    if row == PM1_ROW:
        return replace(base, method=LOGNEO, pretrain_epochs=0, reward=LOGGPT_REWARD)
    raise ValueError(f"row={row!r}; use one of {ROWS}")


def run_row(
    row: str,
    split: Split,
    output_dir: Path,
    base: TrainConfig,
    progress: bool = True,
    device: str = "auto",
    threads: int | None = None,
) -> dict:
    """Train (unless done) and evaluate one row; returns its evaluation plus its training seconds."""
    out = output_dir / row
    evaluation_path = out / EVALUATION_FILE
    if not evaluation_path.is_file():
        if not (out / META_FILE).is_file() or (out / RESUME_FILE).is_file():
            if row == NGRAM_ROW:
                train_ngram(split.train, out, DEFAULT_ORDER, base.dataset, base.top_k, base.framing)
            else:
                init = None if row == PRETRAIN_ROW else output_dir / PRETRAIN_ROW
                train(
                    split.train,
                    out,
                    row_config(row, base),
                    init=init,
                    device=device,
                    progress=progress,
                    threads=threads,
                )
        evaluate_detector(
            out, split.test_normal, split.abnormal, base.top_k, evaluation_path, device, threads, progress
        )
    meta = read_meta(out)
    evaluation = json.loads(evaluation_path.read_text(encoding="utf-8"))
    return {
        "row": row,
        "title": TITLES[row],
        **{k: evaluation[k] for k in ("precision", "recall", "f1", "fpr", "tp", "fp", "fn", "tn", "top_k")},
        "train_seconds": meta.get("seconds", 0.0),
        "evaluate_seconds": evaluation["seconds"],
        "rl_episodes": (meta.get("rl") or {}).get("episodes_run"),
        "pretrain_epochs": (meta.get("pretrain") or {}).get("epochs_run"),
        "sweep": evaluation["sweep"],
    }


def format_markdown(rows: list[dict]) -> str:
    """The comparison as a Markdown table (P/R/F1/FPR, counts, training time)."""
    lines = [
        "| detector | precision | recall | F1 | FPR | TP | FP | FN | TN | K | training |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['title']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['fpr']:.4f} | "
            f"{r['tp']} | {r['fp']} | {r['fn']} | {r['tn']} | {r['top_k']} | {_duration(r)} |"
        )
    return "\n".join(lines) + "\n"


def _duration(row: dict) -> str:
    seconds = row["train_seconds"]
    parts = [f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2f} s"]
    if row["pretrain_epochs"]:
        parts.append(f"{row['pretrain_epochs']} epochs")
    if row["rl_episodes"]:
        parts.append(f"{row['rl_episodes']} episodes")
    return ", ".join(parts)


def plot_sweeps(rows: list[dict], path: Path) -> Path:
    """Recall and false-positive rate of every row against K, with each row's K marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (recall_axes, fpr_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for index, row in enumerate(rows):
        colour = f"C{index}"
        ks = [point["top_k"] for point in row["sweep"]]
        recall_axes.plot(ks, [point["recall"] for point in row["sweep"]], color=colour, label=row["title"])
        fpr_axes.plot(ks, [point["fpr"] for point in row["sweep"]], color=colour, label=row["title"])
    for axes, name in ((recall_axes, "recall"), (fpr_axes, "false-positive rate")):
        if rows:
            axes.axvline(rows[0]["top_k"], color="grey", linestyle=":", linewidth=1)
        axes.set_xlabel("K (top-K candidates accepted)")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
    fpr_axes.set_yscale("symlog", linthresh=1e-3)  # logarithmic above 0.1%, linear down to 0 (no false alarm)
    fpr_axes.set_ylim(0, 1.05)
    recall_axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return path


def compare(
    normal_path: str | Path,
    abnormal_path: str | Path,
    output_dir: str | Path,
    config: TrainConfig | None = None,
    rows: tuple[str, ...] = DEFAULT_ROWS,
    train_ratio: float = DEFAULT_TRAIN_RATIO,
    progress: bool = True,
    device: str = "auto",
    threads: int | None = None,
) -> dict:
    """Run every row on one split and write comparison.json / .md / .png; returns the comparison record."""
    config = config or TrainConfig()
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise ValueError(f"rows {unknown}; choose from {ROWS}")
    output_dir = Path(output_dir)
    started = time.perf_counter()
    split = prepare_split(Path(normal_path), Path(abnormal_path), output_dir / "data", train_ratio, config.seed)
    needs_pretrain = any(row not in (NGRAM_ROW, PRETRAIN_ROW) for row in rows) and PRETRAIN_ROW not in rows
    ordered = [row for row in ROWS if row in rows or (row == PRETRAIN_ROW and needs_pretrain)]
    results = []
    for row in ordered:
        logger.info("comparison: %s", TITLES[row])
        result = run_row(row, split, output_dir, config, progress, device, threads)
        if row in rows:
            results.append(result)
    record = {
        "normal": str(normal_path),
        "abnormal": str(abnormal_path),
        "train_ratio": train_ratio,
        "seed": config.seed,
        "arch": config.arch,
        "rows": results,
        "wall_seconds_this_call": time.perf_counter() - started,
    }
    write_json_atomic(output_dir / "comparison.json", record)
    write_text_atomic(output_dir / "comparison.md", format_markdown(results))
    plot_sweeps(results, output_dir / "comparison.png")
    return record
