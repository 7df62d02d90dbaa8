"""The README's next-key commands run as written (in-process, on the synthetic data and the embedded sample)."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from rationanomaly.nextkey.__main__ import main as nextkey_main
from rationanomaly.paths import REPO_ROOT
from rationanomaly.watch.__main__ import main as watch_main

SECTION = "## Next-key detectors: LogGPT and LogNEO"
ENTRY_POINTS = {"rationanomaly.nextkey": nextkey_main, "rationanomaly.watch": watch_main}

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def section_commands() -> list[list[str]]:
    """argv of every `python -m rationanomaly...` line in the section's bash blocks that runs on a CPU."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + len(SECTION))]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        if "torchrun" in block:  # the GPU commands
            continue
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            needs_public_data = any(path in line for path in ("../shared/data", "runs/nextkey/hdfs"))
            if words[:2] == ["python", "-m"] and words[2] in ENTRY_POINTS and not needs_public_data:
                commands.append(words[2:])
    return commands


def test_the_section_names_every_subcommand():
    commands = section_commands()
    assert {argv[1] for argv in commands if argv[0] == "rationanomaly.nextkey"} >= {
        "synthetic",
        "compare",
        "sequences",
        "train",
        "evaluate",
    }


@pytest.mark.slow
def test_readme_next_key_commands_run_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "rationanomaly").symlink_to(REPO_ROOT / "rationanomaly")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for argv in section_commands():
        assert ENTRY_POINTS[argv[0]](argv[1:]) == 0, (argv, capsys.readouterr().err[-2000:])
    table = (tmp_path / "runs/nextkey/synthetic/compare/comparison.md").read_text()
    assert table.count("\n") == 6  # header, rule and the four default rows
    record = json.loads((tmp_path / "runs/nextkey/synthetic/logneo_alone.json").read_text())
    assert (record["tp"] + record["fn"], record["fp"] + record["tn"]) == (200, 600)
    assert (tmp_path / "runs/nextkey/synthetic/watch/reward.png").is_file()
    assert json.loads((tmp_path / "runs/nextkey/sample/sequences.json").read_text())["train_size"] == 600
