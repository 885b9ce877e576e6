"""The worker end to end on real data and tiny models: records, failures, resume, learning."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeper.records import PREDICTIONS_NAME, atomic_write_text, find_records, read_record
from sweeper.runs import LOCK_NAME, make_run_id, run_dir_of
from sweeper.tasks import get as get_task
from sweeper.train import Interrupted, run_point
from sweeper.train.context import PointContext

TINY = (
    "dataset=fortune_computers_vs_rest",
    "model=tiny_llama",
    "train.max_steps=4",
    "train.eval_size=64",
    "train.batch_size=8",
    "train.max_length=32",
)


def test_record_schema(make_cfg):
    record = run_point(make_cfg(*TINY, "method.r=2"))
    assert record["status"] == "ok", record["error"]
    on_disk = read_record(Path(record["record_path"]))
    for key in (
        "run_id",
        "sweep",
        "status",
        "error",
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
        "config",
        "metrics",
        "params",
        "cost",
        "train",
        "started_at",
        "finished_at",
        "host",
        "schema_version",
    ):
        assert key in on_disk, key
    assert on_disk["family"] == "fortune" and on_disk["r"] == 2 and on_disk["method"] == "lora"
    metrics = on_disk["metrics"]
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1 and metrics["eval_loss"] > 0
    assert metrics["n_test"] == 64 and 0 < metrics["majority_accuracy"] < 1
    assert on_disk["schema_version"] == 2
    for split in ("validation", "test"):  # schema 2: both splits scored; the top level is test
        assert set(metrics[split]) >= {"accuracy", "macro_f1", "loss", "n", "majority_accuracy"}, split
        assert metrics[split]["n"] == 64 and 0 <= metrics[split]["accuracy"] <= 1
    assert (metrics["test"]["accuracy"], metrics["test"]["loss"]) == (metrics["accuracy"], metrics["eval_loss"])
    assert 0 < on_disk["params"]["trainable"] < on_disk["params"]["total"]
    assert on_disk["cost"]["train_seconds"] > 0 and on_disk["cost"]["peak_memory_mb"] > 0
    run_dir = Path(record["record_path"]).parent
    assert (run_dir / "adapter" / "adapter_config.json").exists()
    predictions = pd.read_parquet(run_dir / PREDICTIONS_NAME)  # the report's paired tests read these
    assert list(predictions.columns) == ["row", "label", "pred"] and len(predictions) == 64
    assert (predictions["label"] == predictions["pred"]).mean() == pytest.approx(metrics["accuracy"])
    assert not (run_dir / "checkpoint").exists(), "a finished run keeps no checkpoint"
    # .lock stays (unlinking a flock-ed file lets a third process lock a new inode beside the holder)
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == [LOCK_NAME], "temp files left behind"
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 4


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    atomic_write_text(path, '{"old": true}')

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, '{"new": true}')
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_bad_point_is_recorded_as_failed_in_one_line(make_cfg):
    record = run_point(make_cfg(*TINY, "method.r=0"))
    assert record["status"] == "failed"
    assert "method.r" in record["error"] and "\n" not in record["error"]
    assert read_record(Path(record["record_path"]))["status"] == "failed"


def test_run_id_stable_and_sensitive(make_cfg):
    a, b = make_cfg(*TINY, "method.r=2"), make_cfg(*TINY, "method.r=2", "train.log_every=1", "train.threads=2")
    assert make_run_id(a) == make_run_id(b), "bookkeeping fields must not change the run id"
    assert make_run_id(a) != make_run_id(make_cfg(*TINY, "method.r=4"))
    assert make_run_id(a) != make_run_id(make_cfg(*TINY, "method.r=2", "train.lr=1e-3"))


def test_resume_from_checkpoint_matches_uninterrupted_run(make_cfg, tmp_path):
    straight = run_point(
        make_cfg(*TINY, "method.r=2", "train.max_steps=6", "sweeper.name=a", f"sweeper.results_dir={tmp_path}/a")
    )
    cfg = make_cfg(*TINY, "method.r=2", "train.max_steps=6", "sweeper.name=b", f"sweeper.results_dir={tmp_path}/b")
    calls = iter(range(100))
    with pytest.raises(Interrupted):
        run_point(cfg, PointContext(should_stop=lambda: next(calls) == 2))  # stop after the 3rd step
    folder = run_dir_of(cfg) / "checkpoint"
    assert (folder / "weights.safetensors").exists()
    first_segment = json.loads((folder / "loop.json").read_text())
    assert first_segment["examples"] == 3 * cfg.train.batch_size and first_segment["train_seconds"] > 0
    resumed = run_point(cfg)
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["train"]["resumed_from_step"] == 3
    assert resumed["metrics"] == straight["metrics"]  # train_loss_final included
    assert resumed["train"]["events"] == straight["train"]["events"]
    assert resumed["cost"]["train_seconds"] > first_segment["train_seconds"]  # both segments
    examples = 6 * cfg.train.batch_size
    assert resumed["cost"]["examples_per_second"] == pytest.approx(
        examples / resumed["cost"]["train_seconds"], rel=0.01
    )


def test_a_stop_on_the_last_step_finishes_the_point(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "method.r=2", "train.max_steps=3")
    calls = iter(range(100))
    record = run_point(cfg, PointContext(should_stop=lambda: next(calls) == 2))  # the stop comes with step 3 of 3
    assert record["status"] == "ok", record.get("error")
    assert record["train"]["steps"] == 3 and record["train"]["resumed_from_step"] == 0
    assert math.isfinite(record["metrics"]["train_loss_final"]) and record["cost"]["examples_per_second"] > 0


def test_a_kill_between_the_checkpoint_renames_resumes_from_the_last_complete_one(make_cfg, tmp_path):
    """publish_dir sets the old checkpoint aside, then renames the new one in: killed in between,
    only the old one is left, aside. The next attempt resumes from it, and cleans up after itself."""
    straight = run_point(
        make_cfg(*TINY, "method.r=2", "train.max_steps=6", "sweeper.name=a", f"sweeper.results_dir={tmp_path}/a")
    )
    cfg = make_cfg(*TINY, "method.r=2", "train.max_steps=6", "sweeper.name=b", f"sweeper.results_dir={tmp_path}/b")
    calls = iter(range(100))
    with pytest.raises(Interrupted):
        run_point(cfg, PointContext(should_stop=lambda: next(calls) == 2))
    run_dir = run_dir_of(cfg)
    os.rename(run_dir / "checkpoint", run_dir / ".checkpoint.old-99999")  # the old one, set aside
    (run_dir / ".checkpoint.tmp-88888").mkdir()  # the new one, half written
    resumed = run_point(cfg)
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["train"]["resumed_from_step"] == 3
    assert resumed["metrics"] == straight["metrics"]
    assert not list(run_dir.glob("*checkpoint*")), "checkpoint folders left behind"


def test_the_latest_complete_checkpoint_wins_after_a_kill_between_the_renames(make_cfg, tmp_path):
    """Killed between the renames: the old checkpoint (step 3) set aside, the new one (step 5)
    complete beside it. The new one is the checkpoint the next attempt resumes from."""
    import shutil

    cfg = make_cfg(*TINY, "method.r=2", "train.max_steps=6")
    run_dir = run_dir_of(cfg)
    for stop_at in (2, 1):  # a checkpoint at step 3, then (resumed) at step 5
        calls = iter(range(100))
        with pytest.raises(Interrupted):
            run_point(cfg, PointContext(should_stop=lambda stop_at=stop_at, calls=calls: next(calls) == stop_at))
        if stop_at == 2:
            shutil.copytree(run_dir / "checkpoint", tmp_path / "step3")
    os.rename(run_dir / "checkpoint", run_dir / ".checkpoint.tmp-2")  # the new one, complete
    shutil.copytree(tmp_path / "step3", run_dir / ".checkpoint.old-1")  # the old one, set aside
    resumed = run_point(cfg)
    assert resumed["status"] == "ok" and resumed["train"]["resumed_from_step"] == 5


def test_multirun_sweep_goes_on_past_a_failed_point(tmp_path):
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "sweeper",
        "-m",
        "dataset=glob(fortune_computers_vs_*)",
        "model=tiny_llama",
        "method.r=0,2",
        "train.max_steps=2",
        "train.eval_size=32",
        "train.threads=1",
        f"sweeper.results_dir={results}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [read_record(p) for p in find_records(results)]
    assert len(records) == 4  # 2 datasets x 2 ranks
    assert sorted(r["status"] for r in records) == ["failed", "failed", "ok", "ok"]
    assert all(r["r"] == 0 for r in records if r["status"] == "failed")
    assert proc.stdout.count("[FAILED]") == 2 and proc.stdout.count("[ok]") == 2

    collect = subprocess.run(
        [sys.executable, "-m", "sweeper.collect", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    assert collect.returncode == 0, collect.stderr[-3000:]
    assert "fortune_computers_vs_rest" in collect.stdout and "fortune_computers_vs_linux" in collect.stdout
    assert (results / "runs.parquet").exists()


@pytest.mark.slow
def test_minilm_lora_learns_beyond_majority(make_cfg):
    """A real pretrained model + LoRA learns a real task within a CPU budget."""
    record = run_point(
        make_cfg(
            "dataset=wordnet_noun_animal_vs_rest",
            "model=minilm",
            "method=lora",
            "method.r=8",
            "train.max_steps=40",
            "train.batch_size=16",
            "train.max_length=32",
            "train.eval_size=200",
            "train.threads=2",
        )
    )
    assert record["status"] == "ok", record["error"]
    m = record["metrics"]
    assert m["accuracy"] >= m["majority_accuracy"] + 0.15, m


@pytest.mark.parametrize("method", ["relora", "full"])
def test_methods_without_an_adapter_keep_loadable_final_weights(make_cfg, method):
    """The final model of relora (every merge, and the last cycle) and of full fine-tuning loads
    with from_pretrained and scores the test split exactly as the record says."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sweeper.train.batches import encode_splits
    from sweeper.train.evaluate import evaluate
    from sweeper.train.point import load_point_data
    from sweeper.train.runtime import setup_runtime

    extra = ["method.merge_every=4"] if method == "relora" else []
    cfg = make_cfg(*TINY, f"method={method}", "train.max_steps=8", *extra)
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["weights"] == "model"
    if method == "relora":
        assert record["train"]["merges"] == 1
    folder = run_dir_of(cfg) / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    splits = load_point_data(cfg.dataset)
    task = get_task("classification")
    _, evals = encode_splits(splits, tokenizer, cfg, task)
    runtime = setup_runtime(cfg.train)
    scores = evaluate(
        model,
        evals["test"],
        task,
        tokenizer.pad_token_id,
        16,
        runtime,
        task.num_labels(splits),
    )
    assert scores["accuracy"] == record["metrics"]["accuracy"]
    assert scores["loss"] == pytest.approx(record["metrics"]["eval_loss"], rel=1e-5)
