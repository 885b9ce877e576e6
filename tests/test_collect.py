"""Collector: long table, pivot, failure/corruption handling, CLI outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from sweeper.records import write_record
from sweeper.results import collect


def record(
    dataset="d1",
    model="tiny",
    method="lora",
    r=4,
    seed=0,
    acc=0.8,
    status="ok",
    sweep="s1",
    task="classification",
    lr=2e-3,
    **extra,
):
    run_id = f"{sweep}-{dataset}-{model}-{method}-r{r}-s{seed}-lr{lr}"
    rec = {
        "run_id": run_id,
        "sweep": sweep,
        "status": status,
        "dataset": dataset,
        "family": "fam",
        "task": task,
        "model": model,
        "method": method,
        "r": r,
        "alpha": None if r is None else 2 * r,
        "seed": seed,
        "lr": lr,
        "max_steps": 10,
        "config": {
            "dataset": {"name": dataset, "columns": ["text", "label"]},
            "model": {"name": model},
            "method": {"name": method, "r": r},
            "train": {"batch_size": 8},
        },
        "error": None,
        "error_type": None,
        **extra,
    }
    if status == "ok":
        rec["metrics"] = (
            {"accuracy": acc, "macro_f1": acc - 0.1, "eval_loss": 0.5, "majority_accuracy": 0.5, "n_test": 20}
            if task == "classification"
            else {"eval_loss": 2.0, "perplexity": acc}
        )
        rec["params"] = {"trainable": 100, "total": 1000}
        rec["cost"] = {"train_seconds": 1.5, "peak_memory_mb": 10.0, "examples_per_second": 3.0}
        rec["train"] = {"steps": 10, "resumed_from_step": 0, "merges": 0}
    else:
        rec.update(error="dataset 'd2': column 'label' missing (have: text, y)", error_type="KeyError")
    return rec


def put(root: Path, rec: dict) -> Path:
    return write_record(root / "runs" / rec["run_id"], rec)


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "s1"
    for seed, acc in [(0, 0.8), (1, 0.9)]:
        put(root, record(seed=seed, acc=acc))
    put(root, record(method="full", r=None, acc=0.7))
    put(root, record(dataset="d2", seed=0, acc=0.6))
    put(root, record(dataset="d2", seed=1, status="failed"))
    put(root, record(dataset="d2", method="full", r=None, status="failed"))
    put(root, record(dataset="wiki", task="lm", acc=31.5))
    return root


def test_long_table_columns_and_values(sweep):
    df = collect.load_records(sweep)
    assert len(df) == 7
    for column in [
        "dataset",
        "family",
        "task",
        "model",
        "method",
        "r",
        "alpha",
        "seed",
        "lr",
        "max_steps",
        "accuracy",
        "macro_f1",
        "eval_loss",
        "perplexity",
        "majority_accuracy",
        "trainable_params",
        "total_params",
        "train_seconds",
        "peak_memory_mb",
        "status",
        "error",
        "run_id",
        "sweep",
        "record_path",
        "config",
        "score",
        "config.train.batch_size",
        "config.dataset.columns",
    ]:
        assert column in df.columns, column
    ok = df[(df["dataset"] == "d1") & (df["method"] == "lora")]
    assert sorted(ok["accuracy"]) == [0.8, 0.9] and set(ok["config"]) == {"tiny/lora/r4"}
    assert ok["trainable_params"].tolist() == [100, 100]
    assert json.loads(ok["config.dataset.columns"].iloc[0]) == ["text", "label"]
    assert df.loc[df["task"] == "lm", "score"].item() == 31.5  # perplexity is the lm headline
    failed = df[df["status"] == "failed"]
    assert len(failed) == 2 and failed["score"].isna().all()
    assert failed["error"].str.contains("column 'label' missing").all()
    assert Path(df["record_path"].iloc[0]).name == "record.json"


def test_corrupt_and_invalid_records_are_reported_and_skipped(sweep):
    truncated = sweep / "runs" / "truncated" / "record.json"
    truncated.parent.mkdir(parents=True)
    truncated.write_text('{"run_id": "x", "status": "ok", "metr')
    invalid = sweep / "runs" / "invalid" / "record.json"
    invalid.parent.mkdir(parents=True)
    invalid.write_text('["not", "a", "record"]')
    binary = sweep / "runs" / "binary" / "record.json"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.warns(RuntimeWarning) as caught:
        df = collect.load_records(sweep)
    message = str(caught[0].message)
    assert "3 unreadable" in message and str(truncated) in message and str(invalid) in message
    assert len(df) == 7 and {p for p, _ in df.attrs["skipped"]} == {str(truncated), str(invalid), str(binary)}


def test_partial_sweep_ignores_temp_files_and_unfinished_runs(sweep):
    running = sweep / "runs" / "still-running"
    (running / "checkpoint").mkdir(parents=True)
    (running / ".record.json.abc.tmp").write_text('{"run_id": "half')
    (running / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: an unfinished run is not corrupt
        df = collect.load_records(sweep)
    assert len(df) == 7


def test_several_sweeps_combined_and_overlaps_counted_once(sweep, tmp_path):
    other = tmp_path / "s2"
    put(other, record(sweep="s2", dataset="d3", acc=0.55))
    df = collect.load_records(sweep, other, tmp_path)  # tmp_path contains both again
    assert len(df) == 8 and set(df["sweep"]) == {"s1", "s2"}
    one = collect.load_records(sweep / "runs" / df["run_id"].iloc[0] / "record.json")
    assert len(one) == 1


def test_varied_hyperparameter_splits_configs(tmp_path):
    put(tmp_path, record(lr=1e-3, acc=0.6))
    put(tmp_path, record(lr=1e-2, acc=0.8))
    df = collect.load_records(tmp_path)
    assert sorted(df["config"]) == ["tiny/lora/r4 lr=0.001", "tiny/lora/r4 lr=0.01"]


def test_pivot_cells(sweep):
    df = collect.load_records(sweep)
    table = collect.pivot(df, "classification")
    assert list(table.columns) == ["tiny/full", "tiny/lora/r4"]
    assert table.loc["d1", "tiny/lora/r4"] == "0.850"
    assert table.loc["d2", "tiny/lora/r4"] == "0.600 (1/2 failed)"
    assert table.loc["d2", "tiny/full"] == "FAILED"
    lm = collect.pivot(df, "lm")
    assert lm.loc["wiki", "tiny/lora/r4"] == "31.50"
    assert collect.pivot(df[df["task"] == "lm"], "classification").empty


def test_pivot_marks_missing_points(tmp_path):
    put(tmp_path, record(dataset="d1", method="full", r=None))
    put(tmp_path, record(dataset="d2"))
    table = collect.pivot(collect.load_records(tmp_path))
    assert table.loc["d1", "tiny/lora/r4"] == collect.MISSING and table.loc["d2", "tiny/full"] == collect.MISSING


def test_cli_writes_outputs_and_shows_failures(sweep, capsys):
    bad = sweep / "runs" / "bad" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{")
    assert collect.main([str(sweep)]) == 0
    out = capsys.readouterr()
    assert "FAILED" in out.out and "column 'label' missing" in out.out and "0.600 (1/2 failed)" in out.out
    assert str(bad) in out.err
    for name in ["runs.parquet", "runs.csv", "pivot.md", "pivot.csv", "pivot_lm.csv"]:
        assert (sweep / name).stat().st_size > 0, name
    runs = pd.read_parquet(sweep / "runs.parquet")
    assert len(runs) == 7 and "config.train.batch_size" in runs
    assert "FAILED" in (sweep / "pivot.md").read_text()
    assert pd.read_csv(sweep / "pivot.csv", index_col=0).loc["d2", "tiny/full"] == "FAILED"


def test_cli_out_dir_and_mixed_types(sweep, tmp_path):
    put(sweep, record(dataset="d9", extra_field=None, config_note="x"))
    rec = record(dataset="d8")
    rec["config"]["train"]["batch_size"] = "auto"  # same key, other type: parquet must still work
    put(sweep, rec)
    out = tmp_path / "out"
    assert collect.main([str(sweep), "--out", str(out)]) == 0
    runs = pd.read_parquet(out / "runs.parquet")
    assert set(runs["config.train.batch_size"].dropna()) == {"8", "auto"}


def test_cli_empty_and_missing_paths(tmp_path, capsys):
    assert collect.main([str(tmp_path)]) == 1
    assert collect.main([str(tmp_path / "nope")]) == 2
    assert "no records" in capsys.readouterr().err


def test_empty_frame_has_schema(tmp_path):
    df = collect.load_records(tmp_path)
    assert df.empty and {"dataset", "accuracy", "config", "score"} <= set(df.columns)
    assert collect.pivot(df).empty and collect.failures(df).empty


def test_unresolved_config_record_is_listed_not_dropped(sweep, capsys):
    # The worker writes this when a config does not even resolve: no dataset, model or method.
    write_record(
        sweep / "runs" / "unresolved-abc",
        {
            "run_id": "unresolved-abc",
            "sweep": "s1",
            "status": "failed",
            "error": "InterpolationKeyError: x",
            "error_type": "X",
        },
    )
    df = collect.load_records(sweep)
    assert len(df) == 8 and df.loc[df["run_id"] == "unresolved-abc", "config"].item() == "?/?"
    assert "unresolved-abc" in collect.failures(df)["run_id"].tolist()
    assert collect.main([str(sweep), "--no-write"]) == 0
    assert "InterpolationKeyError: x" in capsys.readouterr().out


@pytest.mark.parametrize("slow", [False, True], ids=["serial", "thread pool"])
def test_read_many_keeps_order_and_tells_absent_from_unreadable(tmp_path, monkeypatch, slow):
    from sweeper import records

    if slow:  # as on NFS: the first reads look slow, the rest go through the thread pool
        monkeypatch.setattr(records, "SLOW_READ_S", -1.0)
    paths = []
    for k in range(150):
        run_dir = tmp_path / f"r{k}"  # a record names its folder
        if k % 3 == 0:
            records.write_record(run_dir, {"run_id": f"r{k}", "status": "ok"})
        elif k % 3 == 1:
            run_dir.mkdir()
            (run_dir / records.RECORD_NAME).write_text('{"run_id": "cut')  # a truncated copy
        paths.append(str(run_dir / records.RECORD_NAME))  # k % 3 == 2: no record at all
    got = records.read_many(paths)
    assert [p for p, _, _ in got] == paths
    for k, (_, record, reason) in enumerate(got):
        if k % 3 == 0:
            assert record["run_id"] == f"r{k}" and reason is None
        elif k % 3 == 1:
            assert record is None and "JSONDecodeError" in reason
        else:
            assert record is None and reason is None
