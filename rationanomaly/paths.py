"""Where things live: the repository root and the optional public data folder."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The package is installed editable from the repository, so the root is its parent.
REPO_ROOT = PACKAGE_DIR.parent
SAMPLE_DATA_DIR = PACKAGE_DIR / "sample_data"
PUBLIC_DATA_ENV = "RATIONANOMALY_PUBLIC_DATA"


def public_data_dir() -> Path | None:
    """The folder named by $RATIONANOMALY_PUBLIC_DATA (the public BGL/Spirit data), or None if unset."""
    value = os.environ.get(PUBLIC_DATA_ENV, "").strip()
    return Path(value) if value else None
