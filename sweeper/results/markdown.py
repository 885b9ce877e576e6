"""GitHub markdown tables, without the tabulate dependency."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """GitHub markdown without the tabulate dependency; "|" in cells is escaped."""
    if df.empty:
        return "_(none)_\n"
    frame = df.reset_index() if index else df
    header = [str(c) for c in frame.columns]
    body = [[_md_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _md_cell(value: Any) -> str:
    if is_missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
