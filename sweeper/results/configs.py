"""Configurations: which settings tell the runs of one dataset apart, as the label seeds are
averaged over (e.g. "tiny_llama/lora/r8 batch_size=16"), and their canonical order."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ..runs import BOOKKEEPING_TRAIN_KEYS
from .markdown import is_missing


def hyper_columns(df: pd.DataFrame) -> list[str]:
    """Result-determining settings beyond model/method/r that tell runs of one dataset apart.

    Every model.*, method.* and train.* key (but the seed and bookkeeping keys) that takes two values
    within one dataset/model/method/r: a sweep over lr or batch_size must not average different
    settings as if they were seeds, and a sweep with one lr should not repeat it in every label.
    A column that only mirrors one already chosen (train.lr is ${method.lr}) is left out.
    """
    skip = {"config.model.name", "config.method.name", "config.method.r", "config.train.seed"}
    skip |= {f"config.train.{k}" for k in BOOKKEEPING_TRAIN_KEYS}
    sections = ("config.method.", "config.model.", "config.train.")
    candidates = ["alpha", "lr", "max_steps"] + sorted(
        c for c in df.columns if c.startswith(sections) and c not in skip
    )
    base = ["dataset", "model", "method", "r"]
    out: list[str] = []
    for column in candidates:
        if column not in df or df[column].isna().all():
            continue
        text = identity_values(df, column).astype(str)
        if any(text.equals(df[chosen].astype(str)) for chosen in out):
            continue
        spread = df[base].assign(_v=text).groupby(base, dropna=False)["_v"].nunique()
        if (spread > 1).any():
            out.append(column)
    return out


def identity_values(df: pd.DataFrame, column: str) -> pd.Series:
    """A config column as it enters the run identity (sweeper.runs.result_config): missing where
    the method ignores it (tfidf: the model, train keys outside its train_keys); devices by type."""
    values = df[column].astype(object)  # object: a bool or int column can hold the None below
    if column.startswith("config.model.") and "config.method.uses_model" in df:
        values = values.where(~df["config.method.uses_model"].eq(False), None)
    if column.startswith("config.train.") and "config.method.train_keys" in df:
        key = column.removeprefix("config.train.")
        kept = df["config.method.train_keys"].map(lambda v: None if is_missing(v) else json.loads(v))
        ignored = kept.map(lambda keys: keys is not None and key not in keys).astype(bool)
        values = values.where(~ignored, None)
    if column == "config.train.device":
        values = values.map(lambda v: v if is_missing(v) else str(v).split(":")[0])
    return values


def label_names(columns: list[str]) -> dict[str, str]:
    """Short names in config labels: the last key, or section.key where two sections share it."""
    leaves = [c.rsplit(".", 1)[-1] for c in columns]
    return {c: leaf if leaves.count(leaf) == 1 else ".".join(c.split(".")[-2:]) for c, leaf in zip(columns, leaves)}


def add_config_column(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``config``: model/method[/rN][ key=value ...], the unit that seeds are averaged over."""
    if df.empty:
        df["config"] = pd.Series(dtype=str)
        return df
    names = label_names(hyper_columns(df))
    # A config that never resolved has no model/method: "?" keeps it visible in the failure listing.
    labels = df["model"].fillna("?").astype(str) + "/" + df["method"].fillna("?").astype(str)
    labels = labels + df["r"].map(lambda r: "" if pd.isna(r) else f"/r{int(r)}")
    for column, name in names.items():
        labels = labels + df[column].map(lambda v, n=name: "" if is_missing(v) else f" {n}={_fmt(v)}")
    df["config"] = labels
    return df


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_order(df: pd.DataFrame) -> list[str]:
    """Configs sorted by model, method, rank (numeric), then label: stable column order everywhere."""
    keys = df[["config", "model", "method", "r"]].drop_duplicates("config")
    keys = keys.assign(_r=keys["r"].astype("Float64").fillna(float("inf")))
    return keys.sort_values(["model", "method", "_r", "config"])["config"].tolist()
