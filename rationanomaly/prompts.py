"""Prompts: the system messages and the user message, shared by the parquet builder and prediction.

Training (parquet) and evaluation (predict) must show the model the same text, so both build
their chat messages here. The wording of the default prompts is ours; users can pass a file.
"""

from __future__ import annotations

from pathlib import Path

from rationanomaly.labels import INSTRUCTION

COT_SYSTEM_PROMPT = (
    "You are an experienced site reliability engineer who reviews system logs. "
    "For each log entry, first reason step by step about what the message reports: the component, "
    "the event, and whether it signals a failure, an error condition or routine operation. "
    "Write that reasoning between <think> and </think>. Then give your verdict between <answer> and "
    "</answer>, and write only one word there: normal or abnormal."
)

LOG_SYSTEM_PROMPT = (
    "You classify system log entries. A log entry is abnormal if it reports a failure, an error, "
    "an exception, a hardware or network fault, a crash, a timeout or data loss; otherwise it is normal. "
    "Answer with one word: normal or abnormal."
)

# Prediction modes of the reference's model_predict.py: cot (think/answer), log (rules only), default (none).
SYSTEM_PROMPTS: dict[str, str | None] = {"cot": COT_SYSTEM_PROMPT, "log": LOG_SYSTEM_PROMPT, "default": None}


def load_system_prompt(mode: str = "cot", path: str | Path | None = None) -> str | None:
    """The system prompt for a mode, or the stripped content of `path` when one is given."""
    if path is not None:
        text = Path(path).read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"system prompt file {path} is empty; write the prompt into it or drop the option")
        return text
    if mode not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown prompt mode {mode!r}; choose one of {sorted(SYSTEM_PROMPTS)}")
    return SYSTEM_PROMPTS[mode]


def user_message(log: str, instruction: str = INSTRUCTION) -> str:
    """The user turn: the instruction, a blank line, then the log template (reference sample layout)."""
    return f"{instruction}\n\n{log}"


def chat_messages(log: str, system_prompt: str | None, instruction: str = INSTRUCTION) -> list[dict[str, str]]:
    """Chat messages for one log: an optional system turn, then the user turn."""
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": user_message(log, instruction)})
    return messages
