"""Multi-label datasets: each text with a set of labels from a fixed list, read from a column whose
cells join several labels with `label_sep` ("role::program;role::shared-lib"). Called by the
multilabel task (sweeper.tasks.multilabel): its labeller and its split frames."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .build import blank_labels, dedupe
from .pools import factorized, member, text_key
from .spec import DEFAULT_CAPS, EVAL_FRACTIONS, SPLITS, DatasetError

JOIN = "\x1f"  # joins a row's labels inside the build (names never hold it); "" is no row of the task
NONE = "\x1e"  # a row with no label, where the spec allows one (allow_empty)


def label_sets(name: str, spec: Mapping, df: pd.DataFrame, pool) -> tuple[np.ndarray, pd.Index, np.ndarray]:
    """The multilabel labeller: (each row's label-set code, -1 for a row the task does not use; the
    sets, as JOIN-joined sorted names; blank rows). Only labels of `labels` count when given; a row
    holding none of them is not used (`allow_empty`: it is, with an empty set). Computed per
    distinct cell, as pools repeat them."""
    col, sep = spec["label_field"], spec.get("label_sep")
    codes, uniques = factorized(df, col, pool)
    cells = pd.Series(uniques, dtype=object).astype(str)
    if sep and len(cells) and not cells.str.contains(sep, regex=False).any():
        raise DatasetError(name, f"label_sep {sep!r} appears in no row of column '{col}': each row holds one label, "
                                 "which is task classification")  # fmt: skip
    blank = blank_labels(df[col], codes, uniques)
    if blank.any() and not spec["allow_empty"] and spec["source"] != "pool":
        row = int(np.flatnonzero(blank)[0])
        raise DatasetError(name, f"row {row} of column '{col}' has an empty label set; "
                                 "set `allow_empty: true` to keep such rows as having no label")  # fmt: skip
    wanted = {str(v) for v in spec.get("labels") or []}
    sets = [canonical(cell, sep, wanted, spec["allow_empty"]) for cell in cells]
    y, names = pd.factorize(np.array([s or None for s in sets], dtype=object))
    row_codes = y[codes]
    if spec["allow_empty"]:  # a blank (or null) cell is a row with no label, not a row to drop
        names = pd.Index([*names, NONE]) if NONE not in set(names) else names
        row_codes = np.where(blank, list(names).index(NONE), row_codes)
        blank = np.zeros(len(df), dtype=bool)
    return row_codes, names, blank


def canonical(cell: str, sep: str | None, wanted: set[str], allow_empty: bool) -> str:
    values = {v.strip() for v in (cell.split(sep) if sep else [cell])} - {""}
    if wanted:
        values &= wanted
    if not values:  # no label of the set: an example of "none of them", or no example of the task
        return NONE if allow_empty else ""
    return JOIN.join(sorted(values))


def labels_of(y: str) -> list[str]:
    return [] if y == NONE else y.split(JOIN)


def multilabel_frames(name: str, spec: Mapping, given: dict[str, pd.DataFrame]) -> tuple[dict, list[str]]:
    """(split frames with `label` = the row's sorted label indices, the label names). The label set:
    `labels` (each must have min_count rows of the input: the pool, or the train file), else every
    label with at least min_count; after the split, each must still have a train row."""
    train = given.get("all", given.get("train"))
    counts = Counter(label for y in train["y"] for label in labels_of(y))
    min_count = spec["min_count"]
    if spec.get("labels"):
        names = [str(v) for v in spec["labels"]]
        small = [n for n in names if counts.get(n, 0) < min_count]
        if small:
            raise DatasetError(name, f"label(s) {', '.join(small[:10])} have fewer than min_count={min_count} rows")
    else:
        names = sorted(n for n, c in counts.items() if c >= min_count)
    if len(names) < 2:
        raise DatasetError(name, f"a single label ({', '.join(names) or 'none'}) with min_count={min_count} rows: "
                                 "one label is task classification")  # fmt: skip
    keep = set(names)
    given = {s: restricted(df, keep, spec["allow_empty"]) for s, df in given.items()}
    frames = split_rows(spec, given)
    in_train = {label for y in frames["train"]["y"] for label in labels_of(y)}
    absent = [n for n in names if n not in in_train]
    if absent:  # a label the model never sees a positive of: its F1 would only measure the split
        raise DatasetError(name, f"label(s) {', '.join(absent[:10])} have no train row after the split "
                                 f"(caps {spec.get('caps') or 'default'}); raise min_count or leave them out of labels")  # fmt: skip
    index = {n: i for i, n in enumerate(names)}
    out = {
        s: pd.DataFrame({
            "text": df["text"].to_numpy(),
            "label": [[index[n] for n in labels_of(y)] for y in df["y"]],
            "_key": df["_key"].to_numpy(),
        })
        for s, df in frames.items()
    }  # fmt: skip
    return out, names


def restricted(df: pd.DataFrame, keep: set[str], allow_empty: bool) -> pd.DataFrame:
    """Rows with their sets cut to the kept labels; a row left with none goes, unless allowed."""
    cut = [JOIN.join(n for n in labels_of(y) if n in keep) for y in df["y"]]
    cut = [c if c else (NONE if allow_empty else "") for c in cut]
    out = df.assign(y=cut)
    return out[out["y"] != ""].reset_index(drop=True)


def split_rows(spec: Mapping, given: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Seeded random splits (a label set is no class to stratify by: most sets are rare), capped;
    files keep their splits, missing ones are carved from train; no text in two splits."""
    caps, seed = spec.get("caps") or {}, spec["seed"]
    if "all" in given:
        df = dedupe(given["all"]).sample(frac=1, random_state=seed)
        caps = {**DEFAULT_CAPS, **caps}
        n_test = min(caps["test"], max(1, round(len(df) * EVAL_FRACTIONS["test"])))
        n_val = min(caps["validation"], max(1, round(len(df) * EVAL_FRACTIONS["validation"])))
        frames = {
            "test": df.iloc[:n_test],
            "validation": df.iloc[n_test : n_test + n_val],
            "train": df.iloc[n_test + n_val :],
        }
    else:
        evals = {s: dedupe(df) for s, df in given.items() if s != "train"}
        held = set().union(*(set(df["_key"]) for df in evals.values()))
        train = dedupe(given["train"])
        train = train[~member(train["_key"], held)].sample(frac=1, random_state=seed)
        for split in [s for s in ("test", "validation") if s not in evals]:
            n = max(1, round(len(train) * EVAL_FRACTIONS[split]))
            evals[split], train = train.iloc[:n], train.iloc[n:]
        frames = {"train": train, **evals}
    return {s: _capped(frames[s], caps.get(s), seed) for s in SPLITS}


def _capped(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    df = df.sample(frac=1, random_state=seed)
    return (df.head(cap) if cap else df).reset_index(drop=True)


def check_multilabel_splits(name: str, frames: Mapping[str, pd.DataFrame], names: list[str]) -> None:
    """Train must hold at least two of the labels (else nothing to tell apart); no test text in train."""
    seen = {i for labels in frames["train"]["label"] for i in labels}
    if len(seen) < 2:
        raise DatasetError(name, f"train holds {len(seen)} of the {len(names)} labels; multilabel needs >= 2")
    keys = {s: df["_key"] if "_key" in df else text_key(df["text"]) for s, df in frames.items()}
    leaked = int(member(keys["test"], set(keys["train"])).sum())
    if leaked:
        raise DatasetError(name, f"{leaked} test texts also occur in train")
