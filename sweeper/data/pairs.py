"""Generation datasets: (source, target) text pairs from any two columns, one target per source,
split so that no source is in two splits. Called by sweeper.data.build for task `generation`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .pools import column, member, text_key, where_mask
from .spec import EVAL_FRACTIONS, GENERATION_DEFAULT_CAPS, SPLITS


def pair_rows(name: str, spec: Mapping, df: pd.DataFrame) -> pd.DataFrame:
    """generation: the (source, target) pairs a spec uses (`where` as for the other tasks), both texts
    stripped and non-empty; `_key` is the source's, so one source lands in one split only."""
    source = column(name, df, spec["source_field"], "source")
    target = column(name, df, spec["target_field"], "target")
    used = where_mask(name, spec, df)
    keep = np.flatnonzero(used)
    out = pd.DataFrame(
        {
            "source": source.iloc[keep].fillna("").astype(str).str.strip(),
            "target": target.iloc[keep].fillna("").astype(str).str.strip(),
        }
    )
    empty_source, empty_target = out["source"].str.len() == 0, out["target"].str.len() == 0
    out = out[~empty_source & ~empty_target].astype(object)
    out["_key"] = text_key(out["source"])
    out = out.reset_index(drop=True)
    out.attrs["dropped"] = {"empty_source": int(empty_source.sum()), "empty_target": int(empty_target.sum())}
    return out


def generation_frames(name: str, spec: Mapping, given: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """One target per source (the first in the input's order: a source translated twice keeps its
    first translation); a pool is shuffled and cut into test, validation, train by the caps (at most
    20% / 10% of the pairs each); given files keep their splits, missing ones are carved from train,
    and train loses every source an evaluation split holds."""
    seed, caps = spec["seed"], spec.get("caps") or {}
    if "all" in given:
        caps = {**GENERATION_DEFAULT_CAPS, **caps}
        given = {"train": given["all"]}
    evals = {s: df.drop_duplicates("_key") for s, df in given.items() if s != "train"}
    if "validation" in evals and "test" in evals:  # given files: a test source is never validated on
        evals["validation"] = evals["validation"][~member(evals["validation"]["_key"], set(evals["test"]["_key"]))]
    train = given["train"].drop_duplicates("_key").sample(frac=1, random_state=seed)
    held = set().union(*(set(df["_key"]) for df in evals.values()))
    train = train[~member(train["_key"], held)]
    total = len(train)
    for split in [s for s in ("test", "validation") if s not in evals]:
        n = min(caps.get(split) or total, max(1, round(total * EVAL_FRACTIONS[split])))
        evals[split], train = train.iloc[:n], train.iloc[n:]
    frames = {"train": train, **evals}
    return {
        s: frames[s].head(caps.get(s) or len(frames[s]))[["source", "target"]].reset_index(drop=True) for s in SPLITS
    }
