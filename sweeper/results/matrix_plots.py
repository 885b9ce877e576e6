"""Dataset x method views of a sweep: score heatmaps (per dataset, or per family past
MAX_HEATMAP_ROWS datasets with a page per family) and the critical-difference diagram of each
across-datasets study (sweeper.results.across)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from .. import tasks
from ..records import Status
from . import tables
from .figure import new_figure, placeholder, save

# ---------------------------------------------------------------- heatmap


MAX_HEATMAP_ROWS = 60  # past this a heatmap row is unreadable: families overview + a page per family


def heatmap(summary: pd.DataFrame, path: str | os.PathLike, task: str = tasks.DEFAULT) -> Path:
    """datasets x configurations, colour = seed-mean score; failed points hatched red, missing blank.
    Past MAX_HEATMAP_ROWS datasets: families x configurations (mean over the family's datasets)."""
    scores = tables.score_matrix(summary, task)
    if scores.empty:
        return placeholder(path, f"no {task} results yet")
    sub = summary[summary["task"] == task]
    if len(scores) > MAX_HEATMAP_ROWS:
        by_family = sub.groupby(["family", "config"])["mean"].mean().unstack().reindex(columns=scores.columns)
        by_family.index = [f"{f} ({n})" for f, n in zip(by_family.index, sub.groupby("family")["dataset"].nunique())]
        note = f"mean over each family's datasets (count in brackets); per dataset: {_family_file(path, '*').name}"
        return _heatmap(by_family, None, path, task, note)
    status = sub.pivot(index="dataset", columns="config", values="status").reindex(
        index=scores.index, columns=scores.columns
    )
    return _heatmap(scores, status, path, task, "red hatched = all seeds failed, blank = missing")


def family_heatmaps(summary: pd.DataFrame, path: str | os.PathLike, task: str = tasks.DEFAULT) -> dict[str, Path]:
    """One heatmap page per dataset family, for tasks with more datasets than one heatmap shows."""
    sub = summary[summary["task"] == task]
    if sub["dataset"].nunique() <= MAX_HEATMAP_ROWS:
        return {}
    written = {}
    for family, members in sub.groupby("family"):
        page = _family_file(path, family)
        written[page.name] = heatmap(members, page, task)
    return written


def _family_file(path: str | os.PathLike, family: str) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}_{family}{path.suffix}")


def _heatmap(scores: pd.DataFrame, status: pd.DataFrame | None, path, task: str, note: str) -> Path:
    n_rows, n_cols = scores.shape
    fig = new_figure(min(4 + 0.55 * n_cols, 40), min(2.5 + 0.28 * n_rows, 40))
    ax = fig.add_subplot()
    found = tasks.get(task)
    metric, higher = found.primary, found.higher_is_better
    values = scores.to_numpy(dtype=float)
    if not higher:  # perplexities span orders of magnitude
        values = np.log10(values)
    image = ax.imshow(
        np.ma.masked_invalid(values), aspect="auto", cmap="viridis" if higher else "viridis_r", interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label=metric if higher else f"log10 {metric}", shrink=0.8)
    failed = np.zeros(scores.shape, bool) if status is None else status.to_numpy() == Status.FAILED.value
    missing = np.zeros(scores.shape, bool) if status is None else status.isna().to_numpy()
    for i, j in zip(*np.nonzero(failed)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#f4c4c4", hatch="xx", edgecolor="red", lw=0))
    if n_rows * n_cols <= 600:  # numbers only where they stay legible
        _annotate(ax, image, scores.to_numpy(dtype=float), failed, missing, higher)
    ax.set_xticks(range(n_cols), scores.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), scores.index, fontsize=7 if n_rows > 40 else 9)
    ax.set_title(f"{task}: test {metric} (seed mean); {note}", fontsize=9)
    return save(fig, path)


def _annotate(ax, image, values: np.ndarray, failed: np.ndarray, missing: np.ndarray, higher: bool) -> None:
    shown = image.get_array()
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            color = "black"
            if failed[i, j]:
                text = "FAIL"
            elif missing[i, j]:
                text, color = "missing", "gray"
            elif math.isnan(values[i, j]):
                text, color = "n/a", "gray"
            else:
                text = f"{values[i, j]:.2f}" if higher else f"{values[i, j]:.3g}"
                color = _text_color(image.cmap(image.norm(shown[i, j])))
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)


def _text_color(rgba) -> str:
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "black" if luminance > 0.5 else "white"


# ---------------------------------------------------------------- critical-difference diagram


def cd_diagram(study, path: str | os.PathLike) -> Path:
    """Methods on their mean-rank axis; a bar joins methods whose difference is not significant
    (pairwise Wilcoxon signed-rank, Holm-adjusted): scikit-posthocs draws it."""
    from .across import MIN_DATASETS

    if study.n_datasets < MIN_DATASETS or study.scores.shape[1] < 2:
        return placeholder(path, f"{study.task}: {study.n_datasets} dataset(s) with every method scored; "
                                 f"a critical-difference diagram needs {MIN_DATASETS}")  # fmt: skip
    import scikit_posthocs

    ranks = study.ranks
    fig = new_figure(8, 1.2 + 0.3 * len(ranks))
    ax = fig.add_subplot()
    scikit_posthocs.critical_difference_diagram(ranks, study.p_matrix(), ax=ax, label_props={"fontsize": 8})
    ax.set_title(f"{study.task}, {study.scope}: mean rank over {study.n_datasets} datasets (1 = best); "
                 "bars join methods not significantly different (Wilcoxon-Holm, alpha 0.05)", fontsize=8)  # fmt: skip
    return save(fig, path)
