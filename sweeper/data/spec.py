"""Dataset specs (conf/dataset/<name>.yaml, or a drop-in file under data/custom/): names, reading,
the checks every task shares, and the one error type every data problem becomes."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from .. import paths
from ..tasks.base import DEFAULT as DEFAULT_TASK

SPLITS = ("train", "validation", "test")
DEFAULT_CAPS = {"train": 2000, "validation": 300, "test": 500}
GENERATION_DEFAULT_CAPS = {"train": 2000, "validation": 100, "test": 200}  # greedy decoding is the cost on a CPU
EVAL_FRACTIONS = {"validation": 0.1, "test": 0.2}  # carved from train when no caps / files give them
CUSTOM_DIR = paths.REPO_ROOT / "data" / "custom"  # drop-in files: data/custom/<name>.csv|jsonl|parquet
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
SOURCES = ("pool", "files", "hub")


class DatasetError(ValueError):
    """A dataset cannot be built; the message is one line starting with "dataset '<name>': "."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"dataset '{name}': " + " ".join(str(problem).split()))


# ---------------------------------------------------------------- specs
def spec_dir() -> Path:
    return paths.CONF_DIR / "dataset"


def spec_names(pattern: str = "*") -> list[str]:
    """Catalogue names matching a shell-style pattern (the same glob Hydra's `glob()` uses)."""
    return sorted(p.stem for p in spec_dir().glob(f"{pattern}.yaml"))


def resolve_dataset_name(name: str) -> Path:
    """Path of a dataset's spec (or drop-in file); an unknown name suggests the closest ones."""
    path = spec_dir() / f"{name}.yaml"
    if path.exists():
        return path
    for suffix in FILE_SUFFIXES:
        if (CUSTOM_DIR / f"{name}{suffix}").exists():
            return CUSTOM_DIR / f"{name}{suffix}"
    names = spec_names() + sorted(p.stem for p in CUSTOM_DIR.glob("*") if p.suffix in FILE_SUFFIXES)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"see `python -m sweeper.datasets` ({len(names)} known)"
    raise DatasetError(name, f"unknown dataset; {hint}")


def load_spec(name: str) -> dict:
    """The spec of a catalogue dataset, or a bring-your-own spec for a data/custom/ file."""
    path = resolve_dataset_name(name)
    if path.suffix != ".yaml":
        return {"name": name, "family": "custom", "task": DEFAULT_TASK, "source": "files", "path": str(path)}
    import yaml  # specs are plain YAML; OmegaConf.load is 20x slower for the same dict

    try:
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(name, f"unreadable spec {path}: {type(e).__name__}: {e}") from None
    if not isinstance(spec, dict):
        raise DatasetError(name, f"spec {path} is not a mapping of fields")
    return spec


def as_dict(spec: Any) -> dict:
    """A plain dict from an OmegaConf DictConfig or any Mapping."""
    if hasattr(spec, "_metadata"):  # DictConfig, without importing omegaconf for plain dicts
        from omegaconf import OmegaConf

        return OmegaConf.to_container(spec, resolve=True)
    return json.loads(json.dumps(dict(spec), default=str))  # Paths -> str; tuples -> lists


def check_caps(name: str, caps) -> None:
    if caps is not None and (not isinstance(caps, dict) or set(caps) - set(SPLITS)):
        raise DatasetError(name, f"caps must map {', '.join(SPLITS)} to sizes, got {caps!r}")
