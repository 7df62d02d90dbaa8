"""The reference's numbered catalogue of models and test sets (validation/model_testset_list.json).

`model_predict.py -m 0 -t 1 -c cot` picks `models[0]` and `testsets[1]`; their paths come from
`model_paths` / `testset_paths`. Relative paths are read against the catalogue's own folder, as the
reference ran from `validation/`, so the commands work from any working directory. We add
`session_paths` (session JSON per test set) and `results_dir` (reference: `../datasets/results`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import read_text
from rationanomaly.paths import REPO_ROOT

DEFAULT_CATALOG = REPO_ROOT / "validation" / "model_testset_list.json"
# The reference's output folders under results_dir (model_predict.py / model_evaluate.py).
RAW_OUTPUT_DIR, LABELLED_DIR, DIFF_DIR = "original_vllm_output", "labelled_output", "diff"
# model_evaluate.py -s: `b` meant BGL, anything else Spirit.
SESSION_SHORTHANDS = {"b": "BGL", "bgl": "BGL", "s": "Spirit", "spirit": "Spirit"}


class CatalogError(ValueError):
    """A catalogue lookup that cannot be answered (bad index, missing key)."""


@dataclass(frozen=True)
class Selection:
    """A model and a test set picked by number, with every path resolved."""

    model: str
    model_path: Path
    testset: str
    testset_path: Path
    results_dir: Path

    @property
    def stem(self) -> str:
        """`{testset}_by_{model}`: the reference's file name for this pair."""
        return f"{self.testset}_by_{self.model}"

    @property
    def predictions_path(self) -> Path:
        """Raw predictions (reference: results/original_vllm_output/{testset}_by_{model}.json)."""
        return self.results_dir / RAW_OUTPUT_DIR / f"{self.stem}.json"

    @property
    def labelled_path(self) -> Path:
        """Binarised predictions with their labels (reference: results/labelled_output/)."""
        return self.results_dir / LABELLED_DIR / f"{self.stem}.json"

    @property
    def diff_path(self) -> Path:
        """The items whose binarised prediction differs from the label (reference: results/diff/)."""
        return self.results_dir / DIFF_DIR / f"{self.stem}.json"


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> dict:
    """Read the catalogue and check it has the reference's four keys."""
    path = Path(path)
    try:
        data = json.loads(read_text(path, "pass --catalog FILE (layout: validation/model_testset_list.json)"))
    except json.JSONDecodeError as error:
        raise CatalogError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a JSON object with models, model_paths, testsets, testset_paths")
    missing = [k for k in ("models", "model_paths", "testsets", "testset_paths") if k not in data]
    if missing:
        raise CatalogError(f"{path} lacks {missing}; see validation/model_testset_list.json for the layout")
    data["_folder"] = str(path.resolve().parent)
    return data


def _resolve(catalog: dict, value: str) -> Path:
    """A catalogue path, relative ones read against the catalogue's folder."""
    path = Path(value)
    return path if path.is_absolute() else (Path(catalog["_folder"]) / path).resolve()


def _pick(catalog: dict, kind: str, index: int) -> str:
    """`catalog[kind][index]` with an error that lists the choices."""
    names = catalog[kind]
    if not 0 <= index < len(names):
        choices = ", ".join(f"{i}={n}" for i, n in enumerate(names))
        raise CatalogError(f"{kind} number {index} is not in the catalogue ({choices})")
    return names[index]


def select(catalog: dict, model_id: int, testset_id: int) -> Selection:
    """Resolve `-m MODEL_ID -t TESTSET_ID` to names and paths."""
    model, testset = _pick(catalog, "models", model_id), _pick(catalog, "testsets", testset_id)
    for key, name in (("model_paths", model), ("testset_paths", testset)):
        if name not in catalog[key]:
            raise CatalogError(f"{name!r} has no entry in {key} of the catalogue")
    return Selection(
        model,
        _resolve(catalog, catalog["model_paths"][model]),
        testset,
        _resolve(catalog, catalog["testset_paths"][testset]),
        results_dir(catalog),
    )


def results_dir(catalog: dict) -> Path:
    """Where outputs go (reference: `../datasets/results` from validation/, i.e. datasets/results)."""
    return _resolve(catalog, catalog.get("results_dir", "../datasets/results"))


def session_path(catalog: dict, session: str) -> Path:
    """The session JSON for `-s` (b / s shorthands as in the reference, or a test-set name)."""
    name = SESSION_SHORTHANDS.get(session.strip().lower(), session.strip())
    paths = catalog.get("session_paths", {})
    if name not in paths:
        raise CatalogError(
            f"no session file for {session!r}: add {name!r} to session_paths in the catalogue or pass --sessions FILE"
        )
    return _resolve(catalog, paths[name])


def reference_ids(model: str | None, testset: str | None) -> tuple[int, int] | None:
    """(model number, test-set number) when both are bare integers (reference `-m 0 -t 1`), else None.

    The reference's `--model`/`--testset` took catalogue numbers; ours also take paths. A path that
    is a bare number must be written `./0` to be read as a path.
    """
    if model is None or testset is None or not (model.isdigit() and testset.isdigit()):
        return None
    return int(model), int(testset)


def default_output(results_dir: Path, testset: str | Path, model: str | Path | None) -> Path:
    """results/original_vllm_output/{testset}_by_{model}.json for explicit paths (reference naming)."""
    name = Path(str(model)).name if model else "rules"
    return results_dir / RAW_OUTPUT_DIR / f"{Path(testset).stem}_by_{name}.json"
