"""Datasets for the worker: a small spec (conf/dataset/<name>.yaml) -> HF `datasets.DatasetDict`.

Specs point at a committed source pool (data/pools/*.parquet), at files of your own, or at
anything `datasets.load_dataset` can open. The first use materialises the splits as parquet under
`<cache>/<name>-<hash of spec + inputs>/` (built in a temp folder, then renamed: readers never
see a half-written dataset); later uses read that folder back.

Public API: DatasetError, load_splits, load_spec, spec_names, resolve_dataset_name.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from sweeper import paths

if TYPE_CHECKING:
    import datasets

FORMAT_VERSION = 2  # bump when materialisation changes, so old caches are not reused
SPLITS = ("train", "validation", "test")
DEFAULT_CAPS = {"train": 2000, "validation": 300, "test": 500}
CUSTOM_DIR = paths.REPO_ROOT / "data" / "custom"  # drop-in files: data/custom/<name>.csv|jsonl|parquet
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


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
        return {"name": name, "family": "custom", "task": "classification", "source": "files",
                "path": str(path)}
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


# ---------------------------------------------------------------- inputs
@lru_cache(maxsize=None)
def _file_digest(path: str, size: int, mtime: float) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime)


def text_key(texts: pd.Series) -> pd.Series:
    """What counts as the same text: case and whitespace differences do not make a new one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(texts.to_numpy(dtype=object), type=pa.large_string()) if texts.dtype == object else \
        pa.array(texts, type=pa.large_string())  # arrow kernels: 50x faster than Python re here
    keys = pc.utf8_lower(pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, r"\s+", " ")))
    return pd.Series(keys, index=texts.index, dtype=pd.ArrowDtype(pa.large_string())).astype("str")


def member(values: pd.Series, wanted) -> np.ndarray:
    """values.isin(wanted) as a bool array, via arrow: pandas' isin on arrow strings builds one
    Python scalar per wanted value (seconds over a catalogue)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(values.to_numpy(dtype=object), type=pa.large_string())
    hit = pc.is_in(arr, value_set=pa.array([str(w) for w in wanted], type=pa.large_string()))
    return hit.fill_null(False).to_numpy(zero_copy_only=False)


@lru_cache(maxsize=64)
def _factorized(path: str, digest: str, col: str) -> tuple:
    return pd.factorize(_read_pool(path, digest)[col].astype(str))


def factorized(df: pd.DataFrame, col: str, pool: tuple | None = None) -> tuple:
    """(codes, uniques) of a column; computed once per pool column (labels repeat a lot)."""
    return _factorized(*pool, col) if pool else pd.factorize(df[col].astype(str))


@lru_cache(maxsize=16)
def _read_pool(path: str, digest: str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df["_key"] = text_key(df["text"].astype(str))
    df["_dup"] = df["_key"].duplicated(keep=False)  # the few texts dedupe must look at closely
    return df


def pool_path(name: str, spec: Mapping) -> Path:
    pool = spec.get("pool")
    path = paths.POOLS_DIR / f"{pool}.parquet"
    if not pool or not path.exists():
        known = ", ".join(sorted(p.stem for p in paths.POOLS_DIR.glob("*.parquet")))
        raise DatasetError(name, f"unknown pool '{pool}'; available: {known}")
    return path


def read_pool(name: str, spec: Mapping) -> pd.DataFrame:
    path = pool_path(name, spec)
    df = _read_pool(str(path), file_digest(path))
    df.attrs["pool"] = (str(path), file_digest(path))  # lets factorized() cache per pool column
    return df


def input_files(name: str, spec: Mapping) -> list[Path]:
    """The files a spec reads: their content is part of the cache key."""
    source = spec.get("source", "pool")
    if source == "pool":
        return [pool_path(name, spec)]
    if source == "files":
        return [p for _, p in file_splits(name, spec)]
    return []


def file_splits(name: str, spec: Mapping) -> list[tuple[str, Path]]:
    files = spec.get("data_files") or {"train": spec.get("path")}
    if not files.get("train"):
        raise DatasetError(name, "source 'files' needs `path` or `data_files: {train: ...}`")
    out = []
    for split, p in files.items():
        if split not in SPLITS:
            raise DatasetError(name, f"unknown split '{split}' in data_files; use {', '.join(SPLITS)}")
        path = Path(p).expanduser()
        path = path if path.is_absolute() else paths.REPO_ROOT / path
        if not path.is_file():
            raise DatasetError(name, f"file not found: {path}")
        out.append((split, path))
    return out


# ---------------------------------------------------------------- cache
def spec_hash(spec: Mapping) -> str:
    """Hash of the spec, the inputs' contents and the format version: the cache key."""
    name = spec.get("name", "?")
    blob = json.dumps({"spec": spec, "format": FORMAT_VERSION,
                       "inputs": [file_digest(p) for p in input_files(name, spec)]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_folder(spec: Mapping, cache_dir: Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else paths.CACHE_DIR / "datasets"
    return root / f"{spec['name']}-{spec_hash(spec)}"


def materialise(spec: Any, cache_dir: Path | None = None) -> Path:
    """Build the splits as parquet (once) and return their folder; `meta.json` marks it complete."""
    spec = checked_spec(spec)
    folder = cache_folder(spec, cache_dir)
    if (folder / "meta.json").exists():
        return folder
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweeper.data_build import build_frames  # deferred: only needed on a cold cache

    frames, meta = build_frames(spec, hf_cache=folder.parent / "hf")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for split, df in frames.items():
            columns = [c for c in ("text", "label") if c in df]
            pq.write_table(pa.Table.from_pandas(df[columns], preserve_index=False),
                           tmp / f"{split}.parquet", compression="zstd")
        meta = {**meta, "name": spec["name"], "spec": spec, "format": FORMAT_VERSION,
                "sizes": {s: len(df) for s, df in frames.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "meta.json").exists():  # another process did not win the race either
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def load_splits(spec: Mapping, cache_dir: Path | None = None) -> "datasets.DatasetDict":
    """classification: splits train/validation/test, columns `text` (str) and `label` (int),
    and the label names available as ds["train"].features["label"].names (ClassLabel).
    lm: splits train/validation with a `text` column."""
    import datasets
    import pyarrow.parquet as pq

    folder = materialise(spec, cache_dir)
    meta = read_meta(folder)
    features = {"text": datasets.Value("string")}
    if meta["task"] == "classification":
        features["label"] = datasets.ClassLabel(names=meta["label_names"])
    features = datasets.Features(features)
    out = datasets.DatasetDict()
    for split in [s for s in SPLITS if s in meta["sizes"]]:
        table = pq.read_table(folder / f"{split}.parquet").cast(features.arrow_schema)
        # In memory; the folder name is a content hash, so it is a sound fingerprint for .map().
        out[split] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features),
                                      split=split, fingerprint=f"{folder.name}-{split}")
    return out


# ---------------------------------------------------------------- spec checks
TASKS = ("classification", "lm")
SOURCES = ("pool", "files", "hub")
RULES = ("multiclass", "one_vs_rest", "pair", "subset")


def checked_spec(spec: Any) -> dict:
    """The spec as a plain dict with defaults filled in, or a DatasetError naming the problem."""
    spec = as_dict(spec)
    name = spec.get("name") or "?"
    if spec.get("task") not in TASKS:
        raise DatasetError(name, f"task must be one of {', '.join(TASKS)}, got {spec.get('task')!r}")
    if spec.setdefault("source", "pool") not in SOURCES:
        raise DatasetError(name, f"source must be one of {', '.join(SOURCES)}, got {spec['source']!r}")
    spec.setdefault("text_field", "text")
    spec.setdefault("seed", 0)
    if spec["task"] == "classification":
        spec.setdefault("label_field", "label")
        spec.setdefault("rule", "multiclass")
        spec.setdefault("min_count", 2)
        spec.setdefault("balance", False)
        if spec["rule"] not in RULES:
            raise DatasetError(name, f"rule must be one of {', '.join(RULES)}, got {spec['rule']!r}")
        if spec["rule"] == "one_vs_rest" and not spec.get("positive"):
            raise DatasetError(name, "rule one_vs_rest needs `positive: <label value>`")
        if spec["rule"] in ("pair", "subset") and len(spec.get("classes") or []) < 2:
            raise DatasetError(name, f"rule {spec['rule']} needs `classes: [a, b, ...]`")
    caps = spec.get("caps")
    if caps is not None and (not isinstance(caps, dict) or set(caps) - set(SPLITS)):
        raise DatasetError(name, f"caps must map {', '.join(SPLITS)} to sizes, got {caps!r}")
    return spec


def check_splits(name: str, frames: Mapping[str, pd.DataFrame], label_names: list | None) -> None:
    """Refuse splits a run would silently misuse: empty, one label, unseen test labels, leaks."""
    for split, df in frames.items():
        if len(df) == 0:
            raise DatasetError(name, f"split '{split}' is empty")
    if label_names is None:
        return
    train = set(frames["train"]["label"])
    if len(train) < 2:
        only = label_names[next(iter(train))] if train else "none"
        raise DatasetError(name, f"a single label in train ({only}); classification needs >= 2")
    for split in ("validation", "test"):
        unseen = sorted(set(frames[split]["label"]) - train)
        if unseen:
            shown = ", ".join(str(label_names[i]) for i in unseen[:10])
            raise DatasetError(name, f"labels in {split} unseen in train: {shown}")
    keys = {s: df["_key"] if "_key" in df else text_key(df["text"]) for s, df in frames.items()}
    leaked = int(member(keys["test"], set(keys["train"])).sum())
    if leaked:
        raise DatasetError(name, f"{leaked} test texts also occur in train")
