"""From a checked dataset spec to split frames: reading the inputs, selecting rows, labels, dedupe,
stratified capped splits, and the checks a run relies on. The tasks (sweeper.tasks) put these
together; sweeper.data.cache calls them on a cold cache."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .pools import column, factorized, file_splits, member, read_pool, text_key, where_mask
from .spec import DEFAULT_CAPS, EVAL_FRACTIONS, SPLITS, DatasetError

# A task's labeller: (name, spec, input frame, pool id) -> (row codes, -1 unused; names; blank rows)
Labeller = Callable[[str, Mapping, pd.DataFrame, "tuple | None"], tuple[np.ndarray, object, np.ndarray]]


def read_inputs(spec: dict, hf_cache: Path | None = None) -> dict[str, pd.DataFrame]:
    """The input frames of a checked spec: {"all": the pool} or {split: its file / hub split}."""
    name = spec["name"]
    if spec["source"] == "pool":
        return {"all": read_pool(name, spec)}
    if spec["source"] == "files":
        return {split: read_file(name, path) for split, path in file_splits(name, spec)}
    return read_hub(name, spec, hf_cache)


def dropped_rows(frames: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Rows of the input left out for an empty text (or source / target) or a blank label, summed over
    the input's files; the record says so (data.dropped), as no split size would."""
    total: dict[str, int] = {}
    for df in frames.values():
        for reason, n in df.attrs.get("dropped", {}).items():
            total[reason] = total.get(reason, 0) + n
    return total


# ---------------------------------------------------------------- reading
def read_file(name: str, path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=path.suffix == ".jsonl", encoding="utf-8", dtype=False)
        if path.suffix in (".csv", ".tsv"):
            return pd.read_csv(
                path, sep="\t" if path.suffix == ".tsv" else ",", encoding="utf-8", dtype=str, keep_default_na=False
            )
    except UnicodeDecodeError as e:
        raise DatasetError(name, f"{path} is not UTF-8 ({e.reason} at byte {e.start})") from None
    except Exception as e:  # pandas/pyarrow raise many types for a broken file
        raise DatasetError(name, f"cannot read {path}: {type(e).__name__}: {e}") from None
    raise DatasetError(name, f"unsupported file type {path.suffix!r} ({path}); use csv, tsv, jsonl, json or parquet")


def read_hub(name: str, spec: Mapping, hf_cache: Path | None) -> dict[str, pd.DataFrame]:
    """Anything `datasets.load_dataset(path, name)` opens: a hub id, or a local folder/file."""
    import datasets

    if not spec.get("path"):
        raise DatasetError(name, "source 'hub' needs `path` (a hub id or a local folder/file)")
    splits = spec.get("splits") or {s: s for s in SPLITS}  # ours -> theirs
    try:
        dd = datasets.load_dataset(
            spec["path"], spec.get("config"), cache_dir=hf_cache and str(hf_cache), **spec.get("load_kwargs", {})
        )
    except Exception as e:
        raise DatasetError(name, f"load_dataset({spec['path']!r}) failed: {type(e).__name__}: {e}") from None
    out = {ours: dd[theirs].to_pandas() for ours, theirs in splits.items() if theirs in dd}
    if "train" not in out:
        raise DatasetError(name, f"no train split (mapped from {splits.get('train')!r}); has {', '.join(dd)}")
    return out


def select_rows(name: str, spec: Mapping, df: pd.DataFrame, labeller: Labeller | None = None) -> pd.DataFrame:
    """Rows a dataset uses: `where: {column: value | [values]}`, a derived label `y` ("" = not
    used; `labeller`: the task's, None for a task without labels) and, for pools, a per-label sample
    of at most what the caps can take, so the rest of the work touches thousands of rows, not the
    whole pool. Columns: text, _key (+ y, _split)."""
    pool = df.attrs.get("pool")
    column(name, df, spec["text_field"], "text")
    if spec.get("split_field"):
        column(name, df, spec["split_field"], "split")
    has_text = np.array(df[spec["text_field"]].notna(), dtype=bool)  # a null text is no example
    used = where_mask(name, spec, df)
    mask = has_text & used
    y_code, dropped = None, {}
    if labeller is not None:
        column(name, df, spec["label_field"], "label")
        y_code, names, blank = labeller(name, spec, df, pool)
        dropped = {"blank_label": int((used & blank).sum())}
        used &= ~blank & (y_code >= 0)  # rows the task uses: an empty text among them is a dropped example
        mask &= ~blank & (y_code >= 0)  # a null label (astype(str) made it "nan") is no class either
    idx = np.flatnonzero(mask)
    if y_code is not None and pool:
        idx = sample_rows(spec, y_code[idx], idx, df["_dup"].to_numpy()[idx])
    needed = [c for c in (spec["text_field"], "_key", spec.get("split_field")) if c and c in df]
    sub = df[needed].iloc[idx]  # take only the columns we use: pools carry several
    text = column(name, sub, spec["text_field"], "text").astype(str)
    if "_key" not in sub:  # pool texts are clean already; files may carry stray blanks
        text = text.str.strip()
    out = pd.DataFrame({"text": text, "_key": sub["_key"] if "_key" in sub else text_key(text)})
    if spec.get("transform") == "mask_proper_nouns":  # names are learnt from the whole corpus
        corpus = read_pool(name, spec)["text"] if spec["source"] == "pool" else df[spec["text_field"]]
        out["text"] = mask_proper_nouns(out["text"], corpus.astype(str))
    if y_code is not None:
        out["y"] = np.asarray(names, dtype=object)[y_code[idx]]
    if spec.get("split_field"):
        out["_split"] = column(name, sub, spec["split_field"], "split").astype(str)
    out = out.astype(object)  # Python strings: pandas ops on small object frames beat arrow ones
    nonempty = out["text"].str.len() > 0
    out = out[nonempty].reset_index(drop=True)
    out.attrs["dropped"] = {"empty_text": int((used & ~has_text).sum() + (~nonempty).sum()), **dropped}
    return out


def class_codes(name: str, spec: Mapping, df: pd.DataFrame, pool) -> tuple[np.ndarray, pd.Index, np.ndarray]:
    """classification's labeller: (each row's class code, -1 for a row the task does not use; the
    class names; rows whose label is blank), computed per distinct value (pools repeat labels a lot)."""
    codes, uniques = factorized(df, spec["label_field"], pool)
    derived = derived_labels(spec, pd.Series(uniques, dtype=object))  # per distinct value
    classes, names = pd.factorize(np.where(derived == "", None, derived).astype(object))
    return classes[codes], names, blank_labels(df[spec["label_field"]], codes, uniques)


def blank_labels(raw: pd.Series, codes: np.ndarray, uniques) -> np.ndarray:
    """Rows whose label is missing or blank (per distinct value: pools repeat labels a lot)."""
    blank_codes = np.flatnonzero(pd.Series(uniques, dtype=object).astype(str).str.strip() == "")
    return np.isin(codes, blank_codes) | np.asarray(raw.isna(), dtype=bool)


def check_label_values(name: str, spec: Mapping, given: dict[str, pd.DataFrame]) -> None:
    """`positive` / `classes` must name values the label column holds (a typo, not a 0-row class)."""
    wanted = [spec["positive"]] if spec["rule"] == "one_vs_rest" else spec.get("classes") or []
    sep, col = spec.get("label_sep"), spec["label_field"]
    seen = set()
    for df in given.values():
        column(name, df, col, "label")
        pool = df.attrs.get("pool")
        seen |= _pool_values(*pool, col, sep) if pool else label_values(factorized(df, col)[1], sep)
    unknown = [str(v) for v in wanted if str(v) not in seen]
    if unknown:
        raise DatasetError(
            name,
            f"unknown label value(s) {', '.join(unknown)} in column "
            f"'{col}'; known: {', '.join(sorted(seen - {''})[:30])}",
        )


def label_values(uniques, sep: str | None) -> frozenset[str]:
    values = pd.Series(np.asarray(uniques, dtype=object))
    return frozenset(values.str.split(sep).explode() if sep else values)


@lru_cache(maxsize=64)
def _pool_values(path: str, digest: str, col: str, sep: str | None) -> frozenset[str]:
    return label_values(factorized(None, col, (path, digest))[1], sep)


def has_value(raw: pd.Series, value: str, sep: str) -> pd.Series:
    """Multi-valued cells ("a;b;c"): does the cell hold `value`? Vectorised, no split."""
    return (sep + raw + sep).str.contains(sep + value + sep, regex=False)


def derived_labels(spec: Mapping, raw: pd.Series) -> np.ndarray:
    """The task's class of each row per `rule`; "" for rows the task does not use."""
    rule, sep = spec["rule"], spec.get("label_sep")
    if rule == "one_vs_rest":
        pos = str(spec["positive"])
        hit = has_value(raw, pos, sep) if sep else raw == pos
        return np.where(raw == "", "", np.where(hit, pos, spec["negative_name"]))
    chosen = [str(c) for c in spec.get("classes") or []]
    if sep:  # a multi-valued row counts only when exactly one chosen value is among its values
        picks = raw.str.split(sep).map(lambda t: [v for v in t if v and (not chosen or v in chosen)])
        return np.where(picks.str.len() == 1, picks.str[0].fillna(""), "")
    return np.where(raw.isin(chosen), raw, "") if chosen else raw.to_numpy(dtype=object)


def sample_rows(spec: Mapping, codes: np.ndarray, idx: np.ndarray, dup: np.ndarray) -> np.ndarray:
    """Per class, a seeded sample big enough for the caps (class proportions kept unless
    balanced); rows whose text repeats elsewhere are all kept so dedupe still sees conflicts."""
    total = sum({**DEFAULT_CAPS, **(spec.get("caps") or {})}.values())
    frac = min(1.0, 1.25 * total / max(1, len(idx)))
    rng = np.random.default_rng(spec["seed"])
    keep = [idx[dup]]
    for c in range(codes.max() + 1):
        members = idx[codes == c]
        limit = total if spec["balance"] else max(math.ceil(len(members) * frac), 3 * spec["min_count"])
        keep.append(rng.choice(members, limit, replace=False) if len(members) > limit else members)
    return np.unique(np.concatenate(keep))


def mask_proper_nouns(texts: pd.Series, corpus: pd.Series) -> pd.Series:
    """Capitalised words never seen in lower case in `corpus` (names, places) become `_`."""
    words = re.compile(r"\b[A-Z][a-z']+\b")
    names = proper_nouns(tuple(corpus))
    return texts.map(lambda t: words.sub(lambda m: "_" if m.group(0) in names else m.group(0), t))


@lru_cache(maxsize=4)
def proper_nouns(corpus: tuple[str, ...]) -> frozenset[str]:
    text = " ".join(corpus)
    lower = set(re.findall(r"\b[a-z][a-z']+\b", text))
    return frozenset(w for w in set(re.findall(r"\b[A-Z][a-z']+\b", text)) if w.lower() not in lower)


# ---------------------------------------------------------------- lm
def lm_frames(name: str, spec: Mapping, given: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """lm: `split_field` + `validation: [values]` holds those rows out (e.g. a whole book);
    otherwise a given validation file, otherwise the last 10% of train. The held-out rows are cut
    into validation and test (split_held_out). Order is kept."""
    if spec.get("split_field"):
        df = pd.concat(given.values(), ignore_index=True)
        held = [str(v) for v in spec.get("validation") or []]
        unknown = sorted(set(held) - set(df["_split"]))
        if unknown or not held:
            raise DatasetError(
                name,
                f"validation value(s) {', '.join(unknown) or '(none given)'} not in column '{spec['split_field']}'",
            )
        val = df["_split"].isin(held)
        frames = {"train": df[~val], "validation": df[val]}
    else:
        train = pd.concat([df for s, df in given.items() if s not in ("validation", "test")], ignore_index=True)
        frames = {"train": train, "validation": given.get("validation")}
        if frames["validation"] is None:
            cut = len(train) - max(1, len(train) // 10)
            frames = {"train": train.iloc[:cut], "validation": train.iloc[cut:]}
    frames = {s: df.drop_duplicates("_key") for s, df in frames.items()}
    frames["validation"], frames["test"] = split_held_out(frames["validation"], given.get("test"))
    held_keys = set(frames["validation"]["_key"]) | set(frames["test"]["_key"])
    frames["train"] = frames["train"][~member(frames["train"]["_key"], held_keys)]
    return {s: df[["text"]].reset_index(drop=True) for s, df in frames.items()}


def split_held_out(held: pd.DataFrame, test: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(validation, test) of an lm dataset: a given test file, else the held-out rows' second half
    (order kept: configurations are chosen on the first half of a held-out book, scored on the rest)."""
    if test is not None:
        test = test.drop_duplicates("_key")
        return held[~member(held["_key"], set(test["_key"]))], test
    if len(held) < 2:
        return held, held.iloc[:0]
    half = len(held) // 2
    return held.iloc[:half], held.iloc[half:]


# ---------------------------------------------------------------- classification
def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per text; a text seen with two labels has no true label and is dropped."""
    dup = df["_key"].duplicated(keep=False)
    if not dup.any():
        return df
    n_labels = df[dup].groupby("_key")["y"].nunique()
    conflicted = set(n_labels[n_labels > 1].index)
    return df[~member(df["_key"], conflicted)].drop_duplicates("_key")


def classification_frames(name: str, spec: Mapping, given: dict[str, pd.DataFrame]):
    counts = given.get("all", given.get("train"))["y"].value_counts()  # classes come from train
    if spec["rule"] == "one_vs_rest":
        names = [spec["negative_name"], str(spec["positive"])]
    else:
        names = [str(c) for c in spec.get("classes") or []]
    small = sorted(c for c in (names or counts.index) if counts.get(c, 0) < spec["min_count"])
    if spec["rule"] != "multiclass" and small:
        raise DatasetError(name, f"class(es) {', '.join(small)} have fewer than min_count={spec['min_count']} rows")
    numeric = all(str(c).lstrip("-").isdigit() for c in counts.index)  # "2" before "10"
    names = names or sorted(
        (c for c in counts.index if counts[c] >= spec["min_count"]), key=lambda c: (int(c), c) if numeric else (0, c)
    )
    for split in [s for s in given if s not in ("all", "train")]:  # given eval files
        unseen = sorted(set(given[split]["y"]) - set(names))
        if unseen:
            raise DatasetError(
                name,
                f"labels in {split} unseen in train: {', '.join(unseen[:10])} "
                f"(a class needs min_count={spec['min_count']} train rows)",
            )
    frames = split_frames(spec, {s: df[member(df["y"], names)] for s, df in given.items()})
    index = {n: i for i, n in enumerate(names)}
    out = {
        s: pd.DataFrame(
            {"text": df["text"].to_numpy(), "label": df["y"].map(index).to_numpy(), "_key": df["_key"].to_numpy()}
        )
        for s, df in frames.items()
    }
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
    train = train[~member(train["_key"], held)].sample(frac=1, random_state=seed)
    missing = [s for s in ("test", "validation") if s not in evals]
    if missing:
        n = len(train)
        want = {s: (caps or {}).get(s) or max(1, round(n * EVAL_FRACTIONS[s])) for s in missing}
        want["train"] = (caps or {}).get("train") or max(1, n - sum(want.values()))
        carved = stratified(train, want, spec["balance"], 1, seed)
        evals.update({s: carved[s] for s in missing})
        taken = set().union(*(set(carved[s]["_key"]) for s in missing))
        train = carved["train"] if (caps or {}).get("train") else train[~member(train["_key"], taken)]
    frames = {"train": train, **evals}
    return {s: trim(frames[s], (caps or {}).get(s), seed) for s in SPLITS}


def stratified(df: pd.DataFrame, caps: dict[str, int], balance: bool, min_count: int, seed: int):
    """Per class: take a share of rows (equalised when `balance`), cut test, validation, then
    train in proportion to the caps (>= 1 row of each class per split), then trim to the caps."""
    groups = {c: g for c, g in df.groupby("y", sort=True)}
    if not groups:  # nothing left: check_splits reports the empty split
        return {s: df.iloc[:0] for s in caps}
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
            parts[s].append(g.iloc[start : start + k])
            start += k
        parts["train"].append(g.iloc[start:m])
    return {s: trim(pd.concat(p), caps[s], seed) for s, p in parts.items()}


def trim(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most `cap` rows, shrinking every class in proportion (largest remainders get the
    spare rows; each class keeps >= 1); shuffled."""
    if cap is not None and len(df) > cap:
        sizes = df["y"].value_counts().sort_index()
        share = sizes * cap / len(df)
        keep = share.astype(int).clip(lower=1)
        spare = cap - keep.sum()
        if spare > 0:
            order = (share - share.astype(int)).sort_values(ascending=False, kind="stable").index
            keep[order[:spare]] += 1
        df = df[df.groupby("y").cumcount().to_numpy() < df["y"].map(keep).to_numpy()]
        df = df.sample(frac=1, random_state=seed).head(cap)
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)


# ---------------------------------------------------------------- checks
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
