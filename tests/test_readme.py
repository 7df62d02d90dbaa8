"""The README's commands run as written: its data, validation and watch blocks on the embedded sample."""

from __future__ import annotations

import json
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
    for script in (
        "anomaly_patch.py",
        "session_builder.py",
        "template_split.py",
        "cot_distill.py",
        "parquet_builder.py",
        "model_predict.py",
        "model_evaluate.py",
        "rationanomaly.watch",
    ):
        assert script in joined


@pytest.mark.slow
def test_readme_commands_run_as_written_in_order(tmp_path):
    root = workspace(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    for block in readme_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8")):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], cwd=root, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"README block failed:\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (root / "datasets" / "bgl_train.parquet").is_file()
    assert (root / "runs" / "validation" / "evaluation" / "BGL_by_rules.json").is_file()
    assert (root / "runs" / "watch" / "summary.json").is_file()


GPU_SECTION = "## On a GPU node"
# knobs README sets for the launchers that are not knob lines of their own: torchrun's and Ray's environment
LAUNCHER_ENVIRONMENT = {"NODE_RANK", "MASTER_ADDR", "MASTER_PORT"}


def readme_text() -> str:
    return (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def all_commands(text: str) -> list[list[str]]:
    """Every command line of every bash block: continuation lines joined, comments cut, split like a shell."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            for part in re.split(r"\s*(?:;|&&)\s*", line):
                words = shlex.split(part) if part else []
                if words:
                    commands.append(words)
    return commands


def assignments_and_program(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """`A=1 B=2 bash x.sh y` -> ({A: 1, B: 2}, [bash, x.sh, y])."""
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, value = words[0].split("=", 1)
        env[key], words = value, words[1:]
    return env, words


def help_text(argv: list[str]) -> str:
    """What `argv --help` prints (the scripts' and modules' own argparse help)."""
    done = subprocess.run(
        [*argv, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 0, f"{' '.join(argv)} --help failed: {done.stderr[-1000:]}"
    return done.stdout


def python_commands() -> dict[tuple[str, ...], set[str]]:
    """README's `python <script>` / `python -m <module>` commands and the flags each is given."""
    found: dict[tuple[str, ...], set[str]] = {}
    for words in all_commands(readme_text()):
        _, words = assignments_and_program(words)
        if len(words) < 2 or words[0] != "python":
            continue
        if words[1] == "-m":
            program, args = ("-m", words[2]), words[3:]
            if args and re.fullmatch(r"[a-z][a-z_-]*", args[0]):  # a subcommand: its own --help lists its flags
                program, args = (*program, args[0]), args[1:]
        elif (REPO_ROOT / words[1]).is_file():
            program, args = (words[1],), words[2:]
        else:  # the reference's numbered form, run from inside validation/
            continue
        found.setdefault(program, set()).update(a.split("=", 1)[0] for a in args if a.startswith("--"))
    return found


@pytest.mark.parametrize(
    "program, flags", sorted(python_commands().items()), ids=lambda v: " ".join(v) if isinstance(v, tuple) else None
)
def test_every_flag_readme_passes_a_python_command_exists(program, flags):
    text = help_text([sys.executable, *program])
    missing = sorted(flag for flag in flags if flag not in text)
    assert not missing, f"README passes {missing} to python {' '.join(program)}, whose --help does not list them"


def launcher_commands() -> list[tuple[str, dict[str, str], list[str]]]:
    """README's `bash model_*.sh` commands: (script, the knobs set before it, its arguments)."""
    found = []
    for words in all_commands(readme_text()):
        env, words = assignments_and_program(words)
        if len(words) >= 2 and words[0] == "bash" and words[1].endswith(".sh"):
            found.append((words[1], env, words[2:]))
    return found


def test_readme_runs_both_launchers():
    assert {script for script, _, _ in launcher_commands()} == {"model_train.sh", "model_export.sh"}


@pytest.mark.parametrize("script", ["model_train.sh", "model_export.sh"])
def test_every_knob_readme_sets_for_a_launcher_is_one_of_its_knobs(script):
    listed = help_text(["bash", str(REPO_ROOT / script)])
    knobs = set(re.findall(r"^\s+([A-Z_][A-Z0-9_]*)=\$\{", listed, re.M)) | LAUNCHER_ENVIRONMENT
    used = {knob for name, env, _ in launcher_commands() if name == script for knob in env}
    assert used and not used - knobs, f"README sets {sorted(used - knobs)} for {script}, which are not its knobs"


def hf_commands() -> list[list[str]]:
    """README's `hf ...` commands (huggingface_hub's CLI)."""
    return [words for words in all_commands(readme_text()) if words[0] == "hf"]


@pytest.mark.parametrize("words", hf_commands(), ids=lambda w: " ".join(w[:3]))
def test_every_hf_command_in_the_readme_exists_in_the_installed_hub(words):
    hf = Path(sys.executable).parent / "hf"
    assert hf.is_file(), "huggingface_hub's `hf` command is not installed beside this interpreter"
    subcommand = [w for w in words[1:3] if re.fullmatch(r"[a-z]+", w)]
    text = help_text([str(hf), *subcommand])
    flags = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    assert all(flag in text for flag in flags), f"hf {' '.join(subcommand)} lacks one of {flags}"


def test_readme_fetches_models_with_hf_not_the_removed_huggingface_cli():
    commands = [" ".join(words) for words in all_commands(readme_text())]
    assert not [c for c in commands if c.startswith("huggingface-cli")]
    assert "hf download meta-llama/Llama-2-7b-chat-hf --local-dir models/llama-2-7b-chat-hf" in commands
    assert "hf download distilbert/distilgpt2 --local-dir models/distilgpt2" in commands


def test_vllm_serve_in_the_readme_uses_flags_vllm_knows():
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed (make install adds its CPU build)")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "vllm"), "serve", "--help=all"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-1000:]
    text = done.stdout  # plain --help lists only the option groups
    for words in all_commands(readme_text()):
        if words[:2] == ["vllm", "serve"]:
            assert all(w.split("=", 1)[0] in text for w in words if w.startswith("--")), vllm.__version__


def gpu_data_blocks(text: str) -> list[str]:
    """The GPU section's bash blocks that a CPU runs: its data steps (no model, server or GPU needed)."""
    start = text.index(GPU_SECTION)
    section = text[start : text.index("\n## ", start + len(GPU_SECTION))]
    needs_gpu = (
        "hf ",
        "vllm",
        "--base_url",
        "model_train.sh",
        "model_export.sh",
        "ray start",
        "--backend vllm",
        "pip install",
    )
    return [b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if not any(k in b for k in needs_gpu)]


def test_gpu_section_data_steps_cover_the_recipe():
    joined = "\n".join(gpu_data_blocks(readme_text()))
    for script in (
        "log_parser.py",
        "anomaly_patch.py",
        "session_builder.py",
        "template_split.py",
        "cot_distill.py",
        "parquet_builder.py",
    ):
        assert script in joined


@pytest.mark.slow
@pytest.mark.realdata
def test_gpu_section_runs_on_the_public_data_up_to_the_dry_run(public_data, tmp_path):
    """The GPU recipe's data commands as written (loghub's BGL 2k sample standing in for the full BGL.log,
    no teacher: R-Log's rationales only), then its pre-flight on tiny models against the parquet they wrote."""
    from rationanomaly.train.checkpoints import save_steps
    from rationanomaly.train.tiny_run import build_dry_run_inputs

    public_data = public_data.resolve()  # the commands run in another folder
    (tmp_path / "repo").mkdir()
    root = workspace(tmp_path / "repo")
    (root / "runs" / "raw").mkdir(parents=True)
    (root / "runs" / "raw" / "BGL.log").symlink_to(public_data / "loghub" / "BGL_2k.log")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RATIONANOMALY_PUBLIC_DATA": str(public_data),
    }
    script = "\n".join(gpu_data_blocks(readme_text()))  # one shell, as a user runs them: `D` carries over
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"README blocks failed:\n{script}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    report = json.loads((root / "runs" / "cot" / "cot_report.json").read_text())
    meta = json.loads((root / "datasets" / "parquet_meta.json").read_text())
    assert meta["train"] == 149 and meta["validation"] == 0  # R-Log's share; the teacher adds the other 1,345
    assert len(json.loads((root / "runs" / "cot" / "missing.json").read_text())) == 1345, report
    assert (root / "datasets" / "testsets" / "BGL_test_sessions.json").is_file()
    # the step numbers README quotes are the ones the documented run writes (every template distilled)
    rows = sum(
        len(json.loads((root / "datasets" / "testsets" / f"{name}_train.json").read_text()))
        for name in ("BGL", "Spirit")
    )
    per_epoch = rows // 32  # data.train_batch_size and SFT_BATCH_SIZE
    grpo, sft = save_steps(per_epoch * 2, 10, save_last=False), save_steps(per_epoch * 3, per_epoch, save_last=True)
    assert (rows, per_epoch, grpo[-2:], sft) == (1494, 46, (90, 92), (46, 92, 138))
    text = readme_text()
    assert "46 steps per\nepoch, 138 in all, checkpoints at steps 46, 92 and 138" in text
    assert "46 steps per epoch, 92 in all, checkpoints at\nsteps 10, 20, ..., 90 and 92" in text
    assert "STEP=90 bash model_export.sh" in text and 90 in grpo
    # the launcher reads the parquet the recipe wrote (its defaults), with tiny models in place of the 7B ones
    knobs = build_dry_run_inputs(tmp_path / "tiny")
    knobs = {key: value for key, value in knobs.items() if key not in ("TRAIN_FILES", "SFT_TRAIN_FILES")}
    (root / "model_train.sh").symlink_to(REPO_ROOT / "model_train.sh")
    (root / "verl").symlink_to(REPO_ROOT / "verl")
    done = subprocess.run(
        ["bash", "model_train.sh", "trainer.max_actor_ckpt_to_keep=3"],
        cwd=root,
        env={**env, **knobs, "DRY_RUN": "1", "STAGE": "grpo", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "datasets/bgl_train.parquet (149 rows)" in done.stdout
    assert "37 per epoch x 2 epochs = 74" in done.stdout  # 149 // 4 with the tiny batch
    assert ", the last 3 kept = " in done.stdout


def test_readme_cpu_training_commands_are_the_ones_make_demo_runs():
    """README's DEVICE=cpu commands use the demo's knobs and GRPO steps, so what it promises is what CI ran."""
    from rationanomaly.demo import CPU_TRAINING_KNOBS, GRPO_STEPS

    text = readme_text()
    start = text.index("### On a CPU")
    block = re.findall(r"```bash\n(.*?)```", text[start:], re.S)[0].replace("\\\n", " ")
    assigned = dict(re.findall(r"(?<![\w.])([A-Z_][A-Z0-9_]*)=(\S+)", block))
    assert {key: assigned.get(key) for key in CPU_TRAINING_KNOBS if key != "OVERWRITE"} == {
        key: value for key, value in CPU_TRAINING_KNOBS.items() if key != "OVERWRITE"
    }
    assert "STAGE=sft bash model_train.sh" in block
    assert f"STAGE=grpo bash model_train.sh trainer.total_training_steps={GRPO_STEPS}" in block
