"""Where things live. Everything is relative to the repository (an editable install), overridable by env."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
POOLS_DIR = REPO_ROOT / "data" / "pools"  # committed source pools (zstd parquet)
# Materialised datasets, converted model weights: rebuilt on demand, never committed.
CACHE_DIR = Path(os.environ.get("SWEEPER_CACHE", REPO_ROOT / ".cache"))
RESULTS_DIR = REPO_ROOT / "results"
