"""The README's commands run as written: its data, validation and watch blocks on the embedded sample."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rationanomaly.paths import REPO_ROOT

SECTIONS = ("## Data:", "## Validation:", "## Watching a run")
# blocks that need what a CPU test cannot have: a teacher endpoint, a trained model, a live training run
NEEDS_MORE = ("--base_url", "cd validation", "targets")


def readme_blocks(text: str, titles: tuple[str, ...] = SECTIONS) -> list[str]:
    """The bash blocks of the named README sections, in order, without the ones that need a GPU or a server."""
    blocks = []
    for title in titles:
        start = text.index(title)
        end = text.find("\n## ", start + len(title))
        section = text[start : end if end != -1 else None]
        blocks += [b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if not any(k in b for k in NEEDS_MORE)]
    return blocks


def workspace(tmp_path: Path) -> Path:
    """A folder that looks like the repository root (scripts and package linked in), so outputs stay in tmp."""
    for name in ("rationanomaly", "model_watch.ipynb"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    for folder in ("datasets", "validation"):
        (tmp_path / folder).mkdir()
        for script in (REPO_ROOT / folder).iterdir():
            if script.is_file():
                (tmp_path / folder / script.name).symlink_to(script)
    return tmp_path


def test_readme_blocks_cover_every_data_and_validation_script():
    joined = "\n".join(readme_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8")))
    for script in ("anomaly_patch.py", "session_builder.py", "template_split.py", "cot_distill.py",
                   "parquet_builder.py", "model_predict.py", "model_evaluate.py", "rationanomaly.watch"):
        assert script in joined


@pytest.mark.slow
def test_readme_commands_run_as_written_in_order(tmp_path):
    root = workspace(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    for block in readme_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8")):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=root, env=env, capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, f"README block failed:\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (root / "datasets" / "bgl_train.parquet").is_file()
    assert (root / "runs" / "validation" / "evaluation" / "BGL_by_rules.json").is_file()
    assert (root / "runs" / "watch" / "summary.json").is_file()
