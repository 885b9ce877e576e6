"""Turning a checked dataset spec into split frames (`text`, `label`): selection, labels, dedupe,
stratified capped splits. Called by sweeper.data.materialise on a cold cache only."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import pandas as pd

from sweeper.data import (DEFAULT_CAPS, SPLITS, DatasetError, check_splits, file_splits,
                          read_pool, text_key)

EVAL_FRACTIONS = {"validation": 0.1, "test": 0.2}  # carved from train when no caps are given


def build_frames(spec: dict) -> tuple[dict[str, pd.DataFrame], dict]:
    name = spec["name"]
    if spec["source"] == "pool":
        given = {"all": read_pool(name, spec)}
    elif spec["source"] == "files":
        given = {split: read_file(name, path) for split, path in file_splits(name, spec)}
    else:
        given = read_hub(name, spec)
    given = {s: select_rows(name, spec, df) for s, df in given.items()}
    if spec["task"] == "lm":
        frames = lm_frames(name, spec, given)
        check_splits(name, frames, None)
        return frames, {"task": "lm"}
    frames, label_names = classification_frames(name, spec, given)
    check_splits(name, frames, label_names)
    return frames, {"task": "classification", "label_names": label_names}


# ---------------------------------------------------------------- reading
def read_file(name: str, path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=path.suffix == ".jsonl", encoding="utf-8", dtype=False)
        if path.suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", encoding="utf-8",
                               dtype=str, keep_default_na=False)
    except UnicodeDecodeError as e:
        raise DatasetError(name, f"{path} is not UTF-8 ({e.reason} at byte {e.start})") from None
    except Exception as e:  # pandas/pyarrow raise many types for a broken file
        raise DatasetError(name, f"cannot read {path}: {type(e).__name__}: {e}") from None
    raise DatasetError(name, f"unsupported file type {path.suffix!r} ({path}); use csv, tsv, jsonl, json or parquet")


def read_hub(name: str, spec: Mapping) -> dict[str, pd.DataFrame]:
    """Anything `datasets.load_dataset(path, name)` opens: a hub id, or a local folder/file."""
    import datasets

    if not spec.get("path"):
        raise DatasetError(name, "source 'hub' needs `path` (a hub id or a local folder/file)")
    splits = spec.get("splits") or {s: s for s in SPLITS}  # ours -> theirs
    try:
        dd = datasets.load_dataset(spec["path"], spec.get("config"), **spec.get("load_kwargs", {}))
    except Exception as e:
        raise DatasetError(name, f"load_dataset({spec['path']!r}) failed: {type(e).__name__}: {e}") from None
    out = {ours: dd[theirs].to_pandas() for ours, theirs in splits.items() if theirs in dd}
    if "train" not in out:
        raise DatasetError(name, f"no train split (mapped from {splits.get('train')!r}); has {', '.join(dd)}")
    return out


def column(name: str, df: pd.DataFrame, col: str, role: str) -> pd.Series:
    if col not in df.columns:
        avail = ", ".join(c for c in df.columns if c != "_key")
        raise DatasetError(name, f"missing {role} column '{col}'; available: {avail}")
    return df[col]


def select_rows(name: str, spec: Mapping, df: pd.DataFrame) -> pd.DataFrame:
    """Apply `where: {column: value | [values]}` and keep the text (+ label) as strings."""
    for col, want in (spec.get("where") or {}).items():
        values = column(name, df, col, "where").astype(str)
        want = [str(w) for w in (want if isinstance(want, list) else [want])]
        unknown = sorted(set(want) - set(values.unique()))
        if unknown:
            raise DatasetError(name, f"unknown value(s) {', '.join(unknown)} for where-column '{col}'")
        df = df[values.isin(want)]
    text = column(name, df, spec["text_field"], "text").astype(str)
    if "_key" not in df:  # pool texts are clean already; files may carry stray blanks
        text = text.str.strip()
    out = pd.DataFrame({"text": text.to_numpy()})
    out["_key"] = df["_key"].to_numpy() if "_key" in df else text_key(out["text"]).to_numpy()
    if spec.get("transform") == "mask_proper_nouns":
        out["text"] = mask_proper_nouns(out["text"])
    if spec["task"] == "classification":
        out["y"] = column(name, df, spec["label_field"], "label").astype(str).to_numpy()
    if spec.get("split_field"):
        out["_split"] = column(name, df, spec["split_field"], "split").astype(str).to_numpy()
    return out[out["text"].str.len() > 0]


def mask_proper_nouns(texts: pd.Series) -> pd.Series:
    """Capitalised words never seen in lower case (names, places) become `_`: style, not plot."""
    lower = set(re.findall(r"\b[a-z][a-z']+\b", " ".join(texts)))
    names = {w for w in re.findall(r"\b[A-Z][a-z']+\b", " ".join(texts)) if w.lower() not in lower}
    pattern = re.compile(r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b")
    return texts.str.replace(pattern, "_", regex=True)


# ---------------------------------------------------------------- lm
def lm_frames(name: str, spec: Mapping, given: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """lm: `split_field` + `validation: [values]` holds those rows out (e.g. a whole book);
    otherwise a given validation file, otherwise the last 10% of train. Order is kept."""
    if spec.get("split_field"):
        df = pd.concat(given.values(), ignore_index=True)
        held = [str(v) for v in spec.get("validation") or []]
        unknown = sorted(set(held) - set(df["_split"]))
        if unknown or not held:
            raise DatasetError(name, f"validation value(s) {', '.join(unknown) or '(none given)'} not in "
                                     f"column '{spec['split_field']}'")
        val = df["_split"].isin(held)
        frames = {"train": df[~val], "validation": df[val]}
    else:
        train = pd.concat([df for s, df in given.items() if s != "validation"], ignore_index=True)
        frames = {"train": train, "validation": given.get("validation")}
        if frames["validation"] is None:
            cut = len(train) - max(1, len(train) // 10)
            frames = {"train": train.iloc[:cut], "validation": train.iloc[cut:]}
    frames = {s: df.drop_duplicates("_key") for s, df in frames.items()}
    held_keys = set(frames["validation"]["_key"])
    frames["train"] = frames["train"][~frames["train"]["_key"].isin(held_keys)]
    return {s: df[["text"]].reset_index(drop=True) for s, df in frames.items()}


# ---------------------------------------------------------------- classification
def relabel(name: str, spec: Mapping, df: pd.DataFrame, values: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """Map raw label values to the task's classes (per `rule`); rows outside them are dropped."""
    rule, sep = spec["rule"], spec.get("label_sep")
    tags = df["y"].str.split(sep) if sep else None
    wanted = [spec["positive"]] if rule == "one_vs_rest" else spec.get("classes") or []
    unknown = [str(v) for v in wanted if str(v) not in values]
    if unknown:
        shown = ", ".join(sorted(values)[:30])
        raise DatasetError(name, f"unknown label value(s) {', '.join(unknown)} in column "
                                 f"'{spec['label_field']}'; known: {shown}")
    if rule == "one_vs_rest":
        pos = str(spec["positive"])
        hit = tags.apply(lambda t: pos in t) if sep else df["y"] == pos
        neg = spec.get("negative_name", "rest")
        df = df[df["y"] != ""].assign(y=hit.map({True: pos, False: neg}))
        return df, [neg, pos]
    classes = [str(c) for c in wanted]
    if sep:  # a multi-valued row counts only when exactly one chosen class is among its values
        chosen = set(classes) if classes else None
        picks = tags.apply(lambda t: [v for v in t if v and (chosen is None or v in chosen)])
        df = df[picks.str.len() == 1].assign(y=picks[picks.str.len() == 1].str[0])
    elif classes:
        df = df[df["y"].isin(classes)]
    return df, classes


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per text; a text seen with two labels has no true label and is dropped."""
    dup = df["_key"].duplicated(keep=False)
    if not dup.any():
        return df
    n_labels = df[dup].groupby("_key")["y"].nunique()
    conflicted = set(n_labels[n_labels > 1].index)
    return df[~df["_key"].isin(conflicted)].drop_duplicates("_key")


def classification_frames(name: str, spec: Mapping, given: dict[str, pd.DataFrame]):
    values = set().union(*(df["y"].str.split(spec["label_sep"]).explode().unique() if spec.get("label_sep")
                           else df["y"].unique() for df in given.values()))
    relabelled = {}
    for split, df in given.items():
        relabelled[split], names = relabel(name, spec, df, values)
    counts = pd.concat(relabelled.values())["y"].value_counts()
    small = sorted(c for c in (names or counts.index) if counts.get(c, 0) < spec["min_count"])
    if spec["rule"] != "multiclass" and small:
        raise DatasetError(name, f"class(es) {', '.join(small)} have fewer than min_count="
                                 f"{spec['min_count']} rows")
    names = names or sorted(c for c in counts.index if counts[c] >= spec["min_count"])
    frames = split_frames(spec, {s: df[df["y"].isin(names)] for s, df in relabelled.items()})
    index = {n: i for i, n in enumerate(names)}
    out = {s: pd.DataFrame({"text": df["text"].to_numpy(), "label": df["y"].map(index).to_numpy()})
           for s, df in frames.items()}
    return out, names


def split_frames(spec: Mapping, given: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Pool: stratified capped split. Files/hub: keep the given splits, carve missing ones from
    train, drop from train any text an evaluation split holds."""
    caps, seed = spec.get("caps"), spec["seed"]
    if "all" in given:
        df = dedupe(given["all"]).sample(frac=1, random_state=seed)
        return stratified(df, {**DEFAULT_CAPS, **(caps or {})}, spec["balance"], spec["min_count"], seed)
    evals = {s: dedupe(df) for s, df in given.items() if s != "train"}
    held = set().union(*(set(df["_key"]) for df in evals.values()))
    train = dedupe(given["train"])
    train = train[~train["_key"].isin(held)].sample(frac=1, random_state=seed)
    missing = [s for s in ("test", "validation") if s not in evals]
    if missing:
        n = len(train)
        want = {s: (caps or {}).get(s) or max(1, round(n * EVAL_FRACTIONS[s])) for s in missing}
        want["train"] = (caps or {}).get("train") or n
        carved = stratified(train, want, spec["balance"], 1, seed)
        evals.update({s: carved[s] for s in missing})
        train = carved["train"]
    frames = {"train": train, **evals}
    return {s: trim(frames[s], (caps or {}).get(s), seed) for s in SPLITS}


def stratified(df: pd.DataFrame, caps: dict[str, int], balance: bool, min_count: int, seed: int):
    """Per class: take a share of rows (equalised when `balance`), cut test, validation, then
    train in proportion to the caps (>= 1 row of each class per split), then trim to the caps."""
    groups = {c: g for c, g in df.groupby("y", sort=True)}
    total = sum(caps.values())
    n = {c: len(g) for c, g in groups.items()}
    if balance:
        quota = min(min(n.values()), math.ceil(total / 2)) if len(n) == 2 else math.ceil(total / len(n))
        n = {c: min(v, quota) for c, v in n.items()}
    scale = min(1.0, total / max(1, sum(n.values())))
    parts = {s: [] for s in caps}
    for c, g in groups.items():
        m = min(len(g), max(min_count, round(n[c] * scale)), n[c] if balance else len(g))
        start = 0
        for s in [s for s in caps if s != "train"]:
            k = max(1, math.floor(m * caps[s] / total))
            parts[s].append(g.iloc[start:start + k])
            start += k
        parts["train"].append(g.iloc[start:m])
    return {s: trim(pd.concat(p), caps[s], seed) for s, p in parts.items()}


def trim(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most `cap` rows, shrinking every class in proportion (each keeps >= 1 row); shuffled."""
    if cap is not None and len(df) > cap:
        keep = df.groupby("y")["y"].transform("size").map(lambda s: max(1, math.floor(s * cap / len(df))))
        rank = df.groupby("y").cumcount()
        df = df[rank < keep]
        df = df.sample(frac=1, random_state=seed).head(cap)
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)
