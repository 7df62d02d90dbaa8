"""Shared fixtures: offline mode, the public data folder, and tiny models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

import runpy  # noqa: E402
import stat  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from rationanomaly.paths import PUBLIC_DATA_ENV, REPO_ROOT, public_data_dir  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """A public data folder that is named but absent is a usage error: only an unset variable skips those tests.

    Otherwise a typo in the path skips every public-data test and the run still reports success.
    """
    folder = public_data_dir()
    if folder is not None and not folder.is_dir():
        raise pytest.UsageError(
            f"{PUBLIC_DATA_ENV}={folder} is not a folder; point it at the public data folder "
            f"(CI uses ../shared/data) or unset it to skip the tests that need it"
        )


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Keep Ray and HF datasets from writing into the home folder during tests."""
    cache = tmp_path_factory.mktemp("hf_cache")
    os.environ.setdefault("HF_DATASETS_CACHE", str(cache / "datasets"))
    os.environ.setdefault("HF_HOME", str(cache / "home"))
    yield


@pytest.fixture(scope="session")
def public_data() -> Path:
    """The public BGL/Spirit data folder; skips the test with the reason when it is not configured."""
    folder = public_data_dir()
    if folder is None:
        pytest.skip(f"{PUBLIC_DATA_ENV} is unset: point it at the public data folder (CI uses ../shared/data)")
    return folder  # a named folder that does not exist stopped the run in pytest_configure


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A saved byte-level BPE tokenizer with a Llama-2-chat template and the four reasoning tags."""
    from rationanomaly.tiny import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A saved, randomly initialised 2-layer Llama (seed 0) with its tokenizer."""
    from rationanomaly.tiny import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny_llama")
    build_tiny_llama(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A saved, randomly initialised 2-layer GPT-2 (the perplexity model's shape, scaled down)."""
    from rationanomaly.tiny import build_tiny_gpt2

    path = tmp_path_factory.mktemp("tiny_gpt2")
    build_tiny_gpt2(path)
    return path


@dataclass(frozen=True)
class CliResult:
    """What a command-line run showed: exit code, stdout, and the `error:` lines of stderr."""

    code: int
    out: str
    errors: list[str]


@pytest.fixture
def cli(capsys):
    """Run `datasets/X.py` or `validation/X.py` in-process as a user would; never a traceback on the screen."""

    def run(script: str, argv: list[str]) -> CliResult:
        code = runpy.run_path(str(REPO_ROOT / script), run_name="cli")["main"](argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return CliResult(code, out, [line for line in err.splitlines() if line.startswith("error:")])

    return run


@pytest.fixture
def snapshot():
    """Every file under a folder with its bytes and mode: equal snapshots mean nothing was changed or added."""

    def take(folder: Path) -> dict[str, tuple[bytes, int]]:
        return {
            str(p.relative_to(folder)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(Path(folder).rglob("*"))
            if p.is_file()
        }

    return take


@pytest.fixture(scope="module")
def one_cpu_thread():
    """One intra-op torch thread for a module (what rationanomaly.nextkey uses on a CPU), restored afterwards.

    Tiny models on shared cores run far faster that way: OpenMP threads spin-wait for cores other jobs hold.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """`make demo` once per test session (real SFT + GRPO on the CPU, export, prediction, watch); its folder.

    Several tests read what it wrote, so the minutes of real training are spent once. While working on these
    tests, RATIONANOMALY_DEMO_RUN=runs/demo reuses a finished `make demo` folder instead.
    """
    pytest.importorskip("vllm", reason="vLLM's CPU build is not installed: run `make install`")
    from rationanomaly import demo

    if os.environ.get("RATIONANOMALY_DEMO_RUN"):
        reused = Path(os.environ["RATIONANOMALY_DEMO_RUN"]).resolve()
        if not (reused / "summary.json").is_file():
            raise pytest.UsageError(f"RATIONANOMALY_DEMO_RUN={reused} holds no finished demo (summary.json)")
        return reused

    out = tmp_path_factory.mktemp("demo") / "run"
    assert demo.main(["--out", str(out)]) == 0, f"the demo failed; its step logs are in {out / 'logs'}"
    return out
