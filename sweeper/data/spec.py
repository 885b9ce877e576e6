"""Dataset specs (conf/dataset/<name>.yaml, or a drop-in file under data/custom/): names, reading,
checks, and the one error type every data problem becomes."""

from __future__ import annotations

import difflib
import json
import re
import string
from pathlib import Path
from typing import Any

from .. import paths

SPLITS = ("train", "validation", "test")
DEFAULT_CAPS = {"train": 2000, "validation": 300, "test": 500}
EVAL_FRACTIONS = {"validation": 0.1, "test": 0.2}  # carved from train when no caps / files give them
CUSTOM_DIR = paths.REPO_ROOT / "data" / "custom"  # drop-in files: data/custom/<name>.csv|jsonl|parquet
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
TASKS = ("classification", "lm", "generation")  # generation: text in (`source`), text out (`target`)
SOURCES = ("pool", "files", "hub")
RULES = ("multiclass", "one_vs_rest", "pair", "subset")


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
        return {"name": name, "family": "custom", "task": "classification", "source": "files", "path": str(path)}
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


def checked_spec(spec: Any) -> dict:
    """The spec as a plain dict with defaults filled in, or a DatasetError naming the problem."""
    spec = as_dict(spec)
    name = spec.get("name") or "?"
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*", str(name)) or ".." in str(name):
        # the name becomes the dataset's cache folder: `../x` must not reach outside it
        raise DatasetError(str(name), "name must be a plain name (letters, digits, _ . = -; no '/', no '..')")
    if spec.get("task") not in TASKS:
        raise DatasetError(name, f"task must be one of {', '.join(TASKS)}, got {spec.get('task')!r}")
    if spec.setdefault("source", "pool") not in SOURCES:
        raise DatasetError(name, f"source must be one of {', '.join(SOURCES)}, got {spec['source']!r}")
    spec.setdefault("seed", 0)
    if spec["task"] == "generation":
        return checked_generation_spec(spec)
    spec.setdefault("text_field", "text")
    if spec["task"] == "classification":
        spec.setdefault("label_field", "label")
        spec.setdefault("rule", "multiclass")
        spec.setdefault("min_count", 2)
        spec.setdefault("balance", False)
        if spec["rule"] not in RULES:
            raise DatasetError(name, f"rule must be one of {', '.join(RULES)}, got {spec['rule']!r}")
        if spec["rule"] == "one_vs_rest":
            spec.setdefault("negative_name", "rest")
        if spec["rule"] == "one_vs_rest" and not spec.get("positive"):
            raise DatasetError(name, "rule one_vs_rest needs `positive: <label value>`")
        if spec["rule"] in ("pair", "subset") and len(spec.get("classes") or []) < 2:
            raise DatasetError(name, f"rule {spec['rule']} needs `classes: [a, b, ...]`")
    check_caps(name, spec.get("caps"))
    return spec


GENERATION_DEFAULT_CAPS = {"train": 2000, "validation": 100, "test": 200}  # greedy decoding is the cost on a CPU


def checked_generation_spec(spec: dict) -> dict:
    """generation: `source_field` -> `target_field` (any two text columns); `prompt` (a template with
    {source}) and `max_new_tokens` (decoding budget) are the dataset's, since both follow its texts."""
    name = spec["name"]
    spec.setdefault("source_field", "source")
    spec.setdefault("target_field", "target")
    spec.setdefault("prompt", "{source}")
    spec.setdefault("max_new_tokens", 32)
    if spec["source_field"] == spec["target_field"]:
        raise DatasetError(name, f"source_field and target_field are both '{spec['source_field']}'")
    prompt = spec["prompt"]
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(prompt) if field is not None}
    except (ValueError, TypeError, AttributeError):  # a stray brace, or no text at all
        fields = None
    if fields != {"source"}:
        raise DatasetError(name, f"prompt must be a text holding {{source}} (and no other {{field}}), got {prompt!r}")
    tokens = spec["max_new_tokens"]
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
        raise DatasetError(name, f"max_new_tokens must be a positive integer, got {tokens!r}")
    check_caps(name, spec.get("caps"))
    return spec


def check_caps(name: str, caps) -> None:
    if caps is not None and (not isinstance(caps, dict) or set(caps) - set(SPLITS)):
        raise DatasetError(name, f"caps must map {', '.join(SPLITS)} to sizes, got {caps!r}")
