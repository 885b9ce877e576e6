"""Datasets for the worker: a small spec (conf/dataset/<name>.yaml) -> HF `datasets.DatasetDict`.

Specs point at a committed source pool (data/pools/*.parquet), at files of your own, or at
anything `datasets.load_dataset` can open. The first use materialises the splits as parquet under
`<cache>/<name>-<hash of spec + inputs>/` (built in a temp folder, then renamed: readers never
see a half-written dataset); later uses read that folder back, after checking each split file
against the sha256 meta.json holds: a truncated or swapped file (or a cache written before
digests) is set aside and rebuilt, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..files import file_sha256, publish_dir
from .pools import file_digest, input_files
from .prepare import build_frames, checked_spec, features
from .spec import SPLITS, DatasetError

if TYPE_CHECKING:
    import datasets

FORMAT_VERSION = 3  # bump when materialisation changes, so old caches are not reused


def spec_hash(spec: Mapping) -> str:
    """Hash of the spec, the inputs' contents and the format version: the cache key."""
    name = spec.get("name", "?")
    blob = json.dumps(
        {"spec": spec, "format": FORMAT_VERSION, "inputs": [file_digest(p) for p in input_files(name, spec)]},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def data_fingerprint(spec: Mapping) -> str:
    """The data a spec reads, without its wording: the input files' digests and the format version.
    (Hub datasets have no local input: their name and revision are in the spec itself.) A missing
    or unreadable input still fingerprints, so the point gets its run id and loading it reports why."""
    name = spec.get("name", "?")
    try:
        inputs = [_digest_or_reason(p) for p in input_files(name, spec)]
    except DatasetError as error:
        inputs = [str(error)]
    blob = json.dumps({"format": FORMAT_VERSION, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _digest_or_reason(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as error:
        return f"unreadable {path}: {type(error).__name__}"


def cache_folder(spec: Mapping, cache_dir: Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else paths.CACHE_DIR / "datasets"
    return root / f"{spec['name']}-{spec_hash(spec)}"


def materialise(spec: Any, cache_dir: Path | None = None) -> Path:
    """Build the splits as parquet (once) and return their folder; `meta.json` marks it complete."""
    spec = checked_spec(spec)
    folder = cache_folder(spec, cache_dir)
    if (folder / "meta.json").exists():
        problem = unsound(folder)
        if problem is None:
            return folder
        set_aside(folder, problem)
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames, meta = build_frames(spec, hf_cache=folder.parent / "hf")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for split, df in frames.items():
            columns = [c for c in ("text", "label", "source", "target") if c in df]
            table = pa.Table.from_pandas(df[columns], preserve_index=False)
            pq.write_table(table, tmp / f"{split}.parquet", compression="zstd")
        sizes = {s: len(df) for s, df in frames.items()}
        digests = {f"{s}.parquet": file_sha256(tmp / f"{s}.parquet") for s in frames}
        meta = {**meta, "name": spec["name"], "spec": spec, "format": FORMAT_VERSION, "sizes": sizes}
        meta["sha256"] = digests
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    except BaseException:  # disk full, a pyarrow error: no half-written folder stays in the cache
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, folder)  # a concurrent build of the same content may have won: theirs is as good
    return folder


def unsound(folder: Path) -> str | None:
    """Why a complete cache folder cannot be used (meta.json unreadable, a split file not the one
    it wrote), or None."""
    try:
        digests = read_meta(folder)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "meta.json unreadable or without digests"
    for name, want in digests.items():
        try:
            if file_sha256(folder / name) != want:
                return f"{name} is not the file it wrote (truncated or replaced)"
        except OSError as error:
            return f"{name}: {error.strerror or error}"
    return None


def set_aside(folder: Path, problem: str) -> None:
    """Move a corrupt cache folder out of the way (readers that opened its files keep them), then remove it."""
    print(f"[dataset cache] {folder.name}: {problem}; rebuilding it", file=sys.stderr, flush=True)
    aside = tempfile.mkdtemp(prefix=f".{folder.name}.corrupt-", dir=folder.parent)  # a unique name
    try:
        os.rename(folder, aside)
    except FileNotFoundError:  # another process set it aside first
        os.rmdir(aside)
        return
    shutil.rmtree(aside, ignore_errors=True)


def dropped_rows(spec: Mapping) -> dict[str, int]:
    """Input rows the built splits left out, by reason ({"empty_text": N, "blank_label": M}; generation:
    empty_source / empty_target), from the cache a point just loaded ({} when it is gone)."""
    try:
        return read_meta(cache_folder(checked_spec(spec))).get("dropped", {})
    except (OSError, ValueError, DatasetError):
        return {}


def read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def load_splits(spec: Mapping, cache_dir: Path | None = None) -> datasets.DatasetDict:
    """Splits train/validation/test with the task's columns (sweeper.tasks): classification `text`
    (str) and `label` (ClassLabel, its names in ds["train"].features["label"].names); multilabel a
    `label` list of ClassLabel; lm `text`; generation `source` and `target`."""
    import datasets
    import pyarrow.parquet as pq

    folder = materialise(spec, cache_dir)
    meta = read_meta(folder)
    schema = features(meta)
    out = datasets.DatasetDict()
    for split in [s for s in SPLITS if s in meta["sizes"]]:
        table = pq.read_table(folder / f"{split}.parquet").cast(schema.arrow_schema)
        # In memory; the folder name is a content hash, so it is a sound fingerprint for .map().
        out[split] = datasets.Dataset(
            table, info=datasets.DatasetInfo(features=schema), split=split, fingerprint=f"{folder.name}-{split}"
        )
    return out
