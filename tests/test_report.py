"""Summary numbers against hand-computed values, report files, and the results notebook."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeper.records import write_record
from sweeper.results import baselines, collect, plots, report, significance, tables

REPO = Path(__file__).resolve().parents[1]

# (dataset, method, r, seed) -> accuracy, or "failed". One model "m", majority per dataset below.
# Hand-computed expectations are in the tests; keep them in sync with this grid.
GRID = {
    ("d1", "full", None, 0): 0.80,
    ("d1", "full", None, 1): 0.82,
    ("d1", "lora", 4, 0): 0.70,
    ("d1", "lora", 4, 1): 0.74,
    ("d1", "lora", 8, 0): 0.813,
    ("d1", "lora", 8, 1): 0.809,
    ("d2", "full", None, 0): 0.60,
    ("d2", "full", None, 1): 0.62,
    ("d2", "lora", 4, 0): 0.70,
    ("d2", "lora", 4, 1): "failed",
    ("d2", "lora", 8, 0): "failed",
    ("d2", "lora", 8, 1): "failed",
    # d3 has no full run at all (missing baseline)
    ("d3", "lora", 4, 0): 0.50,
    ("d3", "lora", 4, 1): 0.50,
    ("d3", "lora", 8, 0): 0.55,
    ("d3", "lora", 8, 1): 0.57,
}
MAJORITY = {"d1": 0.60, "d2": 0.65, "d3": 0.503}
LM_GRID = {
    ("wiki", "full", None, 0): 20.0,
    ("wiki", "full", None, 1): 22.0,
    ("wiki", "lora", 4, 0): 25.0,
    ("wiki", "relora", 8, 0): 21.05,
}


def make_record(dataset, method, r, seed, value, task="classification", model="m", sweep="t"):
    run_id = f"{dataset}-{model}-{method}-r{r}-s{seed}"
    record = {
        "run_id": run_id,
        "sweep": sweep,
        "status": "ok",
        "error": None,
        "error_type": None,
        "dataset": dataset,
        "family": "fam",
        "task": task,
        "model": model,
        "method": method,
        "r": r,
        "alpha": None if r is None else 2 * r,
        "seed": seed,
        "lr": 1e-4 if method == "full" else 2e-3,
        "max_steps": 40,
        "config": {
            "dataset": {"name": dataset},
            "model": {"name": model, "lora_targets": ["q", "v"]},
            "method": {"name": method, "r": r},
            "train": {"batch_size": 8, "seed": seed},
        },
        "train": {"steps": 40, "resumed_from_step": 0, "merges": 2 if method == "relora" else 0},
        "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T00:01:00",
        "host": "h",
    }
    if value == "failed":
        record.update(
            status="failed", error=f"dataset '{dataset}': column 'label' missing (have: text, y)", error_type="KeyError"
        )
        return record
    if task == "classification":
        record["metrics"] = {
            "accuracy": value,
            "macro_f1": value - 0.1,
            "eval_loss": 1 - value,
            "majority_accuracy": MAJORITY[dataset],
            "n_test": 100,
        }
    else:
        record["metrics"] = {"eval_loss": math.log(value), "perplexity": value}
    record["params"] = {"trainable": 1_000_000 if r is None else 1000 * r, "total": 1_000_000}
    record["cost"] = {"train_seconds": 10.0 if r is None else 5.0, "peak_memory_mb": 100.0, "examples_per_second": 50.0}
    return record


def write_metrics(run_dir: Path, method: str) -> None:
    lines = [{"step": s, "loss": 3.0 - s / 20, "lr": 1e-3 * (1 - (s % 20) / 20)} for s in range(0, 41, 5)]
    if method == "relora":
        lines += [{"step": 20, "event": "merge"}, {"step": 40, "event": "merge"}]
    text = "\n".join(json.dumps(x) for x in lines) + "\n" + '{"step": 45, "lo'  # truncated: run still writing
    (run_dir / "metrics.jsonl").write_text(text)


def write_sweep(root: Path) -> Path:
    """The synthetic sweep above under root/runs/, plus one corrupt record file."""
    for grid, task in [(GRID, "classification"), (LM_GRID, "lm")]:
        for (dataset, method, r, seed), value in grid.items():
            record = make_record(dataset, method, r, seed, value, task)
            run_dir = root / "runs" / record["run_id"]
            write_record(run_dir, record)
            if value != "failed":
                write_metrics(run_dir, method)
    # what the worker writes for a config that does not resolve: no dataset, model or method
    write_record(
        root / "runs" / "unresolved-1",
        {
            "run_id": "unresolved-1",
            "sweep": "t",
            "status": "failed",
            "error": "cannot resolve",
            "error_type": "ConfigError",
        },
    )
    broken = root / "runs" / "broken-run"
    broken.mkdir(parents=True)
    (broken / "record.json").write_text('{"run_id": "broken", "status": "o')
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def df(sweep) -> pd.DataFrame:
    with pytest.warns(RuntimeWarning, match="broken-run"):
        return collect.load_records(sweep)


@pytest.fixture(scope="module")
def summary(df) -> pd.DataFrame:
    return tables.summarize(df)


def point(summary, dataset, config):
    rows = summary[(summary["dataset"] == dataset) & (summary["config"] == config)]
    assert len(rows) == 1, (dataset, config)
    return rows.iloc[0]


def test_seed_mean_std_and_counts(summary):
    p = point(summary, "d1", "m/full")
    assert p["mean"] == pytest.approx(0.81) and p["std"] == pytest.approx(math.sqrt(2 * 0.01**2))
    assert (p["n_seeds"], p["n_failed"], p["status"]) == (2, 0, "ok")
    p = point(summary, "d1", "m/lora/r4")
    assert p["mean"] == pytest.approx(0.72) and p["std"] == pytest.approx(0.02 * math.sqrt(2))
    p = point(summary, "d2", "m/lora/r4")  # one seed ok, one failed: std undefined, shown as partial
    assert p["mean"] == pytest.approx(0.70) and math.isnan(p["std"])
    assert (p["n_seeds"], p["n_failed"], p["status"]) == (1, 1, "partial")
    p = point(summary, "d2", "m/lora/r8")
    assert (p["n_seeds"], p["n_failed"], p["status"]) == (0, 2, "failed") and math.isnan(p["mean"])
    assert "column 'label' missing" in p["errors"]
    assert point(summary, "d1", "m/lora/r4")["trainable_params"] == 4000
    assert point(summary, "wiki", "m/full")["mean"] == pytest.approx(21.0)


def test_seed_table_shows_failed_and_missing(summary):
    table = tables.seed_table(summary, "classification")
    assert table.loc["d1", "m/full"] == "0.810 ± 0.014 (2)"
    assert table.loc["d2", "m/lora/r4"] == "0.700 (1) +1 failed"
    assert table.loc["d2", "m/lora/r8"] == "FAILED"
    assert table.loc["d3", "m/full"] == "missing"
    assert list(table.columns) == ["m/full", "m/lora/r4", "m/lora/r8"]


def test_best_config_per_dataset(summary):
    best = tables.best_configs(summary).set_index("dataset")
    assert best.loc["d1", "best_config"] == "m/lora/r8" and best.loc["d1", "runner_up"] == "m/full"
    assert best.loc["d1", "val_margin"] == pytest.approx(0.001)
    assert set(best["selected_on"]) == {"test"}  # schema-1 records: no validation scores to select on
    assert best.loc["d2", "best_config"] == "m/lora/r4"
    assert best.loc["d3", "best_config"] == "m/lora/r8"
    assert best.loc["wiki", "best_config"] == "m/full"  # lowest perplexity wins


def test_mean_rank(summary):
    ranks = tables.mean_ranks(summary).set_index(["task", "config"])
    # d1: r8 1, full 2, r4 3 | d2: r4 1, full 2 (r8 failed, unranked) | d3: r8 1, r4 2
    assert ranks.loc[("classification", "m/full"), "mean_rank"] == pytest.approx(2.0)
    assert ranks.loc[("classification", "m/lora/r4"), "mean_rank"] == pytest.approx(2.0)
    assert ranks.loc[("classification", "m/lora/r8"), "mean_rank"] == pytest.approx(1.0)
    assert ranks.loc[("classification", "m/lora/r8"), "n_datasets"] == 2
    assert ranks.loc[("lm", "m/lora/r4"), "mean_rank"] == pytest.approx(3.0)


def test_win_tie_loss_vs_full(summary):
    wtl = baselines.win_tie_loss(summary, "full")
    lm = wtl[wtl["task"] == "lm"].set_index("config")
    wtl = wtl[wtl["task"] == "classification"].set_index("config")
    # r4: d1 0.72 < 0.81 loss, d2 0.70 > 0.61 win, d3 no full run -> unmatched
    assert wtl.loc["m/lora/r4", ["win", "tie", "loss", "n_unmatched"]].tolist() == [1, 0, 1, 1]
    # r8: d1 0.811 vs 0.81 tie, d2 failed and d3 no baseline -> unmatched
    assert wtl.loc["m/lora/r8", ["win", "tie", "loss", "n_unmatched"]].tolist() == [0, 1, 0, 2]
    assert "m/full" not in wtl.index
    # lm: relora 21.05 vs 21.0 is within 0.5 % relative -> tie; lora 25 -> loss
    assert lm.loc["m/relora/r8", ["win", "tie", "loss"]].tolist() == [0, 1, 0]
    assert lm.loc["m/lora/r4", ["win", "tie", "loss"]].tolist() == [0, 0, 1]


def test_win_tie_loss_vs_majority(summary):
    wtl = baselines.win_tie_loss(summary, "majority").set_index("config")
    assert wtl.loc["m/full", ["win", "tie", "loss"]].tolist() == [1, 0, 1]  # 0.81>0.6, 0.61<0.65
    assert wtl.loc["m/lora/r4", ["win", "tie", "loss"]].tolist() == [2, 1, 0]  # 0.50 vs 0.503 ties
    assert wtl.loc["m/lora/r8", ["win", "tie", "loss", "n_unmatched"]].tolist() == [2, 0, 0, 1]


def test_tie_rule():
    rule = significance.tolerance_outcome
    assert rule(0.804, 0.80, True, 0.005) == "tie"
    assert rule(0.81, 0.80, True, 0.005) == "win"
    assert rule(0.79, 0.80, True, 0.005) == "loss"
    assert rule(20.09, 20.0, False, 0.005) == "tie"  # 0.45 % relative
    assert rule(19.0, 20.0, False, 0.005) == "win"  # lower perplexity is better
    assert rule(0.81, 0.80, True, 0.02) == "tie"


def test_config_table_has_cost_and_wtl(summary):
    configs = baselines.config_table(summary).set_index(["task", "config"])
    row = configs.loc[("classification", "m/lora/r4")]
    assert row["vs_full W/T/L"] == "1/0/1 (1 n/a)" and row["vs_majority W/T/L"] == "2/1/0"
    assert row["trainable_params"] == 4000 and row["train_seconds"] == pytest.approx(5.0)
    assert configs.loc[("classification", "m/lora/r8"), "failed_points"] == 1


def test_markdown_and_html_render_failures(df):
    named = report.named_tables(df)
    md, page = report.render_markdown(named), report.render_html(named)
    for text in (md, page):
        assert "FAILED" in text and "missing" in text and "0.810 ± 0.014 (2)" in text
        assert "column 'label' missing" in text  # the failed-runs listing keeps the error line
    assert '<td class="failed">FAILED</td>' in page


def test_plot_helpers(df, summary, tmp_path):
    metrics = plots.read_metrics(df.loc[df["method"] == "relora", "run_dir"].iloc[0])
    assert (metrics["event"] == "merge").sum() == 2 and metrics["step"].max() == 40  # truncated line skipped
    assert plots.score_vs_rank(summary, tmp_path / "one.png", dataset="d1").stat().st_size > 0
    runs = plots.default_curve_runs(df)
    assert len(runs) == 3 and all(r.startswith("d1-") for r in runs)


def test_report_on_empty_folder(tmp_path):
    df = collect.load_records(tmp_path)
    written = report.write_report(df, tmp_path / "report")
    assert all(p.stat().st_size > 0 for p in written.values())


def test_report_cli_writes_every_file(sweep, capsys):
    assert report.main([str(sweep)]) == 0
    out = capsys.readouterr()
    assert str(sweep / "report") in out.out and "broken-run" in out.err  # corrupt file reported
    expected = {
        "summary.md",
        "summary.html",
        "points.csv",
        "best.csv",
        "configs.csv",
        "failed.csv",
        "heatmap.png",
        "heatmap_lm.png",
        "score_vs_rank.png",
        "score_vs_cost.png",
        "loss_curves.png",
        "relora_timeline.png",
    }
    for name in expected:
        path = sweep / "report" / name
        assert path.exists() and path.stat().st_size > 0, name
        assert name in out.out
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    failed = pd.read_csv(sweep / "report" / "failed.csv")
    assert len(failed) == 4 and "unresolved-1" in failed["run_id"].tolist()
    assert "broken-run" in (sweep / "report" / "summary.md").read_text()


def test_notebook_executes(sweep, tmp_path, monkeypatch):
    import nbclient  # pinned dev dependencies: a missing one must fail, not skip
    import nbformat

    # The venv's kernelspec first, whatever a user-level "python3" kernel points at.
    monkeypatch.setenv("JUPYTER_PATH", os.path.join(sys.prefix, "share", "jupyter"))
    monkeypatch.setenv("SWEEPER_RESULTS", str(sweep))
    monkeypatch.setenv("SWEEPER_REPORT_DIR", str(tmp_path / "nb_report"))
    nb = nbformat.read(REPO / "notebooks" / "results.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "\n".join(
        str(o.get("text", ""))
        + str(o.get("data", {}).get("text/html", ""))
        + str(o.get("data", {}).get("text/plain", ""))
        for o in outputs
    )
    assert "0.810 ± 0.014 (2)" in text and "FAILED" in text and "m/lora/r8" in text
    assert sys.prefix in text  # the kernel ran the venv's python
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5
    assert (tmp_path / "nb_report" / "heatmap.png").stat().st_size > 0
