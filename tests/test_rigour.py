"""Numbers a reviewer accepts: validation selection, the tfidf baseline, significance, run identity,
config labels, macro-F1 and early stopping (issue: rigour)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.launch.planner import plan
from sweeper.records import PREDICTIONS_NAME, find_records, read_record, write_record
from sweeper.results import baselines, collect, report, significance, tables
from sweeper.runs import Decision, make_run_id, run_dir_of
from sweeper.train.context import PointContext
from sweeper.train.evaluate import classification_metrics

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- synthetic schema-2 sweeps
def schema2_record(dataset, model, method, seed, val, test, config_extra=None, r=None):
    run_id = f"{dataset}-{model}-{method}-r{r}-s{seed}-{abs(hash(json.dumps(config_extra or {}))) % 10**6}"
    return {
        "schema_version": 2,
        "run_id": run_id,
        "sweep": "s",
        "status": "ok",
        "error": None,
        "dataset": dataset,
        "family": "d",
        "task": "classification",
        "model": model,
        "method": method,
        "r": r,
        "seed": seed,
        "lr": 1e-3,
        "max_steps": 10,
        "config": {"method": {"name": method, "r": r}, "train": {"seed": seed, "lr": 1e-3, **(config_extra or {})}},
        "metrics": {
            "validation": {"accuracy": val, "macro_f1": val, "loss": 1 - val, "n": 200},
            "test": {"accuracy": test, "macro_f1": test, "loss": 1 - test, "n": 200},
            "accuracy": test,
            "macro_f1": test,
            "eval_loss": 1 - test,
            "majority_accuracy": 0.5,
            "majority_class": 0,
            "n_test": 200,
        },
        "params": {"trainable": 10, "total": 100},
        "cost": {"train_seconds": 1.0},
    }


def write_point(root: Path, record: dict, correct: np.ndarray | None = None) -> Path:
    run_dir = root / "runs" / record["run_id"]
    write_record(run_dir, record)
    if correct is not None:  # test predictions: label 1 everywhere, right where `correct`
        labels = np.ones(len(correct), dtype="int32")
        preds = np.where(correct, 1, 0).astype("int32")
        pd.DataFrame({"row": np.arange(len(labels)), "label": labels, "pred": preds}).to_parquet(
            run_dir / PREDICTIONS_NAME
        )
    return run_dir


def correct_rows(n_right: int, n: int = 200, offset: int = 0) -> np.ndarray:
    right = np.zeros(n, dtype=bool)
    right[(np.arange(n_right) + offset) % n] = True
    return right


def test_report_selects_on_validation_and_reports_test(tmp_path):
    # lora r4 is best on validation (0.90) but worst on test (0.70); r8 is the test-best (0.85).
    write_point(tmp_path, schema2_record("d1", "m", "lora", 0, 0.90, 0.70, r=4), correct_rows(140))
    write_point(tmp_path, schema2_record("d1", "m", "lora", 0, 0.80, 0.85, r=8), correct_rows(170))
    write_point(tmp_path, schema2_record("d1", "m", "full", 0, 0.85, 0.80), correct_rows(160))
    write_point(tmp_path, schema2_record("d1", "none", "tfidf", 0, 0.70, 0.60), correct_rows(120))
    df = collect.load_records(tmp_path)
    summary = tables.summarize(df)
    best = tables.best_configs(summary).set_index("dataset")
    assert best.loc["d1", "best_config"] == "m/lora/r4" and best.loc["d1", "selected_on"] == "validation"
    assert best.loc["d1", "mean"] == pytest.approx(0.70)  # its test score, not the test-best 0.85

    methods = baselines.method_table(summary).set_index("unit")
    assert methods.loc["m/lora", "mean_score"] == pytest.approx(0.70)  # lora's pick: r4, on validation
    # vs tfidf (0.60, 120 of 200 right): lora's 140 rights overlap tfidf's 120 -> 20 discordant, p < 0.05
    assert methods.loc["m/lora", "vs_tfidf W/T/L"] == "1/0/0"
    # vs full (validation-selected: the only full config, 160 right): lora 140 -> 20 discordant -> loss
    assert methods.loc["m/lora", "vs_full W/T/L"] == "0/0/1"

    written = report.write_report(df, tmp_path / "report")
    text = written["summary.md"].read_text()
    assert "selected on validation" in text and "| validation |" in text and "0.7000" in text
    assert "vs_tfidf W/T/L" in text and "tested comparisons significant at alpha=0.05" in text


def test_significance_mcnemar_and_welch(tmp_path):
    a = write_point(tmp_path, schema2_record("d", "m", "lora", 0, 0.8, 0.52), correct_rows(104))
    b = write_point(tmp_path, schema2_record("d", "m", "full", 0, 0.8, 0.50), correct_rows(100))
    side_a = significance.Side(0.52, (0.52,), (0,), (str(a),))
    side_b = significance.Side(0.50, (0.50,), (0,), (str(b),))
    close = significance.compare_points(side_a, side_b, True, 0.005)
    assert (close.outcome, close.test) == ("tie", "mcnemar") and close.p_value > 0.05  # 4 discordant rows
    # three seeds each: Welch's t on the seed scores, against scipy
    x, y = (0.80, 0.81, 0.82), (0.70, 0.71, 0.69)
    result = significance.compare_points(significance.Side(0.81, x), significance.Side(0.70, y), True, 0.005)
    from scipy import stats

    assert result.test == "welch" and result.outcome == "win"
    assert result.p_value == pytest.approx(stats.ttest_ind(x, y, equal_var=False).pvalue)
    # against the majority class (a constant prediction), paired on the same rows
    majority = significance.Side(0.5, constant=0)
    assert significance.compare_points(side_a, majority, True, 0.005).outcome == "win"  # 104 vs 0 right


def test_a_truncated_predictions_file_is_said_not_silently_tolerated(tmp_path):
    a = write_point(tmp_path, schema2_record("d", "m", "lora", 0, 0.9, 0.90), correct_rows(180))
    write_point(tmp_path, schema2_record("d", "m", "full", 0, 0.8, 0.50), correct_rows(100))
    predictions = a / PREDICTIONS_NAME
    predictions.write_bytes(predictions.read_bytes()[:300])  # a copy cut short

    summary = tables.summarize(collect.load_records(tmp_path))
    comparison = baselines.comparisons(tables.method_points(summary), summary, "full")
    assert comparison["test"].tolist() == [significance.UNREADABLE]
    text = baselines.significance_summary(summary)
    assert "paired test was skipped for 1 comparison(s)" in text and "0 of 0 tested" in text


def test_macro_f1_over_all_labels_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 3, 50)  # label 3 never predicted, 4 never anywhere
    ours = classification_metrics(y.tolist(), p.tolist(), range(5))["macro_f1"]
    assert ours == pytest.approx(f1_score(y, p, average="macro", labels=range(5), zero_division=0))


def test_combined_sweeps_with_the_same_seed_are_flagged(tmp_path):
    for sweep, fingerprint in [("a", "data-v1"), ("b", "data-v2")]:
        record = schema2_record("d", "m", "lora", 0, 0.8, 0.8, r=4)
        record.update(run_id=f"{record['run_id']}-{sweep}", data_fingerprint=fingerprint)
        write_point(tmp_path / sweep, record)
    with pytest.warns(RuntimeWarning, match="2 ok runs share a dataset, config and seed.*differ in 1 of 1 such groups"):
        df = collect.load_records(tmp_path / "a", tmp_path / "b")
    assert "averaged as if they were seeds" in report.intro_text(df)


def test_batch_size_sweep_is_two_configurations(tmp_path):
    for batch_size in (8, 16):
        for seed in (0, 1):
            extra = {"batch_size": batch_size}
            write_point(tmp_path, schema2_record("d", "m", "lora", seed, 0.8, 0.8, extra, r=4))
    df = collect.load_records(tmp_path)
    assert sorted(df["config"].unique()) == ["m/lora/r4 batch_size=16", "m/lora/r4 batch_size=8"]
    summary = tables.summarize(df)
    assert summary["n_seeds"].tolist() == [2, 2]  # not one config with four "seeds"


# ---------------------------------------------------------------- run identity
def test_run_id_follows_the_data_not_the_description(make_cfg, tmp_path):
    csv = tmp_path / "reviews.csv"
    rows = [f"{'good' if i % 2 else 'bad'} film number {i},{'pos' if i % 2 else 'neg'}" for i in range(60)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")
    # a dataset of your own, as overrides of the dataset group (a conf/dataset/*.yaml works alike)
    keys = ["dataset.name=custom_reviews", "dataset.source=files", f"+dataset.path={csv}", "dataset.family=custom"]

    def run_id(*extra):
        return make_run_id(make_cfg(*keys, *extra))

    first = run_id("dataset.description=film reviews")
    assert run_id("dataset.description='reviews of films; reworded'") == first  # wording: same point
    assert run_id("train.batch_size=16.0") == run_id("train.batch_size=16")  # 16 == 16.0
    assert run_id("method.r=8.0", "train.seed=0.0") == run_id("method.r=8", "train.seed=0")  # prefix too
    assert run_id("train.device=cpu", "train.dtype=bfloat16") == run_id("train.device=cpu")  # no bf16 on CPU
    assert run_id("train.device=cuda", "train.dtype=bfloat16") != run_id("train.device=cuda")
    csv.write_text(csv.read_text().replace("film number 7,", "movie number 7,"))  # an edited file
    assert run_id("dataset.description=film reviews") != first


def test_the_worker_writes_where_the_planner_planned(make_cfg):
    cfg = make_cfg("+sweeper.run_id=planned-abc")  # what launch/job.py sets from the planner's Point
    assert run_dir_of(cfg).name == "planned-abc"


def test_tfidf_label_ignores_the_model(tmp_path):
    for seed, path in [(0, "minilm"), (1, "tiny")]:  # two launches with different `model=`
        record = schema2_record("d", "none", "tfidf", seed, 0.7, 0.7, {"max_steps": 60 + seed})
        record["config"]["model"] = {"name": path, "name_or_path": path, "trust_remote_code": False}
        record["config"]["method"].update(uses_model=False, train_keys=["seed", "eval_size"])
        write_point(tmp_path, record)
    assert collect.load_records(tmp_path)["config"].unique().tolist() == ["none/tfidf"]


def test_tfidf_ignores_the_model_and_runs_once(make_cfg):
    cfgs = [make_cfg("method=tfidf", f"model={m}") for m in ("minilm", "tiny_llama")]
    assert make_run_id(cfgs[0]) == make_run_id(cfgs[1]) and "-none-tfidf-" in make_run_id(cfgs[0])
    from sweeper.launch.grid import PointConfig
    from sweeper.runs import resolved

    items = [
        (i, [f"model={m}"], PointConfig(resolved(c), {}))
        for i, (m, c) in enumerate(zip(("minilm", "tiny_llama"), cfgs))
    ]
    points = plan(items, retry_failed=False)
    assert [p.decision for p in points] == [Decision.RUN, Decision.DUPLICATE]


def test_tfidf_on_an_lm_dataset_is_one_line(make_cfg):
    from sweeper.train import run_point

    record = run_point(make_cfg("method=tfidf", "dataset=austen_lm"))
    assert record["status"] == "failed"
    assert record["error"] == "method 'tfidf' needs a classification or multilabel dataset, not task 'lm'"


# ---------------------------------------------------------------- real sweeps
def test_sweep_lora_full_tfidf_has_both_splits_and_a_validation_report(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", "-m", "dataset=fortune_art_vs_rest,wordnet_verb_supersense",
         "model=tiny_llama", "method=lora,full,tfidf", "train.max_steps=3", "train.eval_size=48",
         "train.threads=1", f"sweeper.results_dir={results}"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = find_records(results)
    records = [read_record(p) for p in paths]
    assert len(records) == 6 and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    for path, record in zip(paths, records):
        assert record["schema_version"] == 2
        for split in ("validation", "test"):
            assert {"accuracy", "macro_f1", "loss"} <= set(record["metrics"][split]), (record["run_id"], split)
        predictions = pd.read_parquet(Path(path).parent / PREDICTIONS_NAME)
        assert len(predictions) == record["metrics"]["test"]["n"]
    assert {r["model"] for r in records if r["method"] == "tfidf"} == {"none"}
    assert report.main([str(results), "--out", str(tmp_path / "report")]) == 0
    best = pd.read_csv(tmp_path / "report" / "best.csv")
    assert set(best["selected_on"]) == {"validation"} and len(best) == 2
    methods = pd.read_csv(tmp_path / "report" / "methods.csv")
    assert "vs_tfidf W/T/L" in methods and "none/tfidf" in set(methods["unit"])


def test_early_stopping_scores_the_best_validation_step(make_cfg):
    from sweeper.train import run_point

    cfg = make_cfg("model=tiny_llama", "train.max_steps=12", "train.warmup_steps=2", "train.eval_every=2",
                   "train.early_stopping=2", "train.eval_size=48", "method.lr=3e-2")  # fmt: skip
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    checks = [e for e in record["train"]["events"] if e.get("event") == "validation"]
    best = max(checks, key=lambda e: e["score"])  # the first of equal scores is the best step
    assert record["train"]["best_step"] == next(e["step"] for e in checks if e["score"] == best["score"])
    # the restored model is the best step's: its validation accuracy is the best one seen
    assert record["metrics"]["validation"]["accuracy"] == pytest.approx(best["score"], abs=1e-6)  # logged: 6 digits
    # this lr peaks early: the last step is not the best one, so the restore is what is tested
    assert record["train"]["best_step"] < record["train"]["steps"]
    assert record["train"]["stopped_early"] == (record["train"]["steps"] < 12)


def test_early_stopping_resumes_to_the_same_result(tmp_path):
    from sweeper.config import compose
    from sweeper.train import Interrupted, run_point

    args = ("model=tiny_llama", "train.max_steps=12", "train.warmup_steps=2", "train.eval_every=2",
            "train.eval_size=48", "method.lr=3e-2")  # fmt: skip
    plain = run_point(compose(f"sweeper.results_dir={tmp_path / 'plain'}", "train.threads=1", *args))
    best = plain["train"]["best_step"]
    assert best < 12  # this lr peaks early: a cut after the best step, before the end, is possible
    cut = compose(f"sweeper.results_dir={tmp_path / 'cut'}", "train.threads=1", *args)
    calls = iter(range(100))
    with pytest.raises(Interrupted):  # stopped after step best + 1: the checkpoint must keep the best
        run_point(cut, PointContext(should_stop=lambda: next(calls) == best))
    resumed = run_point(cut)
    assert resumed["train"]["resumed_from_step"] == best + 1
    assert resumed["train"]["best_step"] == plain["train"]["best_step"]
    assert resumed["metrics"]["test"] == pytest.approx(plain["metrics"]["test"])


def test_early_stopping_needs_eval_every(make_cfg):
    from sweeper.train import run_point

    record = run_point(make_cfg("model=tiny_llama", "train.max_steps=2", "train.early_stopping=3"))
    assert record["status"] == "failed"
    assert record["error"] == "train.early_stopping=3 needs train.eval_every > 0 (steps between scores)"
