"""A shared results folder that no one can turn against its owner: planted symbolic links, names that
climb out of results/, file modes a colleague can read, records copied or mangled by hand.

Each case is built the way a careless or hostile co-user would build it; a victim folder outside the
results folder must be byte for byte unchanged afterwards."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.ledger import log_launch
from sweeper.records import read_existing, write_record
from sweeper.results import collect
from sweeper.results.status import render, sweep_status
from sweeper.runs import Decision, decide, run_dir_of
from sweeper.train import run_point

REPO = Path(__file__).resolve().parents[1]
TINY = (
    "model=tiny_llama",
    "dataset=fortune_computers_vs_rest",
    "train.max_steps=4",
    "train.eval_size=32",
    "train.batch_size=8",
    "train.max_length=32",
    "method.r=2",
)


@pytest.fixture
def victim(tmp_path):
    """A folder of someone's own files outside the results folder, with a checkpoint/ to delete."""
    folder = tmp_path / "victim"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "weights.safetensors").write_bytes(b"precious weights")
    (folder / "notes.txt").write_text("precious notes\n")
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 9, "loss": 0.5}\n')
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_naming(record, *words):
    assert record["status"] == "failed", record
    assert "\n" not in record["error"], record["error"]
    for word in words:
        assert word in record["error"], (word, record["error"])


def test_a_run_folder_planted_as_a_link_is_refused(make_cfg, victim):
    cfg = make_cfg(*TINY)
    run_dir = run_dir_of(cfg)
    before = snapshot(victim)
    run_dir.parent.mkdir(parents=True)
    run_dir.symlink_to(victim)
    record = run_point(cfg)
    assert_one_line_naming(record, "symbolic link", run_dir.name)
    assert snapshot(victim) == before, "the point wrote into (or deleted from) the linked folder"
    assert decide(run_dir, retry_failed=False)[0] == Decision.RUN  # nothing in it is read as ours


@pytest.mark.parametrize("entry", ["metrics.jsonl", "adapter", ".lock", "checkpoint"])
def test_an_entry_planted_as_a_link_is_refused_and_its_target_untouched(entry, make_cfg, victim):
    cfg = make_cfg(*TINY, "train.checkpoint_every=2")
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True)
    target = victim / (
        "metrics.jsonl" if entry == "metrics.jsonl" else "checkpoint" if entry != ".lock" else "notes.txt"
    )
    (run_dir / entry).symlink_to(target)
    before = snapshot(victim)
    record = run_point(cfg)
    assert_one_line_naming(record, entry, "symbolic link")
    assert snapshot(victim) == before
    assert json.loads((run_dir / "record.json").read_text())["error"] == record["error"]


def test_a_planted_temporary_name_is_never_written_through(make_cfg, victim):
    """The predictions' temporary file had a fixed name (.predictions.parquet.tmp): a link planted
    there made the point overwrite its target. Temporaries now have unique names."""
    cfg = make_cfg(*TINY)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True)
    for name in (".predictions.parquet.tmp", ".record.json.tmp", ".checkpoint.tmp-1"):
        (run_dir / name).symlink_to(victim / "notes.txt")
    before = snapshot(victim)
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    assert snapshot(victim) == before


def test_a_sweep_name_cannot_leave_the_results_folder(tmp_path):
    outside = tmp_path / "outside"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", *TINY, "sweeper.name=../../outside/x", f"hydra.run.dir={tmp_path / 'jobs'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # results/<name> is relative: ../../outside climbs to tmp_path/outside
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sweeper.name" in lines[0] and "../../outside/x" in lines[0], proc.stderr
    assert not outside.exists()


def test_a_sweep_name_from_a_composed_config_writes_nowhere(make_cfg, tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # results/../../escaped from a/b is a/escaped
    cfg = make_cfg(*TINY, "sweeper.name=../../escaped", "sweeper.results_dir=results/${sweeper.name}")
    record = run_point(cfg)
    assert_one_line_naming(record, "sweeper.name", "../../escaped")
    assert "record_path" not in record
    assert not (tmp_path / "a" / "escaped").exists() and not (work / "results").exists()


def test_files_honour_the_umask(make_cfg, tmp_path):
    old = os.umask(0o022)
    try:
        record = run_point(make_cfg(*TINY))
        log_launch(tmp_path / "results", {"started_at": "now", "points": {}})
    finally:
        os.umask(old)
    assert record["status"] == "ok", record["error"]
    run_dir = Path(record["record_path"]).parent
    files = [p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    files += [tmp_path / "results" / "sweep.json"]
    names = {p.name for p in files}
    assert {"record.json", "job.json", "metrics.jsonl", "predictions.parquet", "adapter_model.safetensors"} <= names
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))
    for folder in [run_dir, run_dir / "adapter"]:
        assert folder.stat().st_mode & 0o777 == 0o755, folder


# ---------------------------------------------------------------- records checked on read
def fake_record(run_id: str, seed: int, accuracy: float) -> dict:
    return {
        "run_id": run_id,
        "sweep": "s",
        "status": "ok",
        "task": "classification",
        "dataset": "d",
        "family": "d",
        "model": "m",
        "method": "lora",
        "r": 8,
        "seed": seed,
        "metrics": {"accuracy": accuracy, "validation": {"accuracy": accuracy}, "test": {"accuracy": accuracy}},
        "cost": {"train_seconds": 1.0},
        "train": {"steps": 10},
        "config": {"method": {"name": "lora", "r": 8}, "train": {"seed": seed}},
    }


def test_a_record_copied_from_another_run_folder_is_not_counted(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs / "point-s0", fake_record("point-s0", 0, 0.8))
    write_record(runs / "point-s1", fake_record("point-s1", 1, 0.7))
    (runs / "point-s2").mkdir()
    shutil.copy(runs / "point-s0" / "record.json", runs / "point-s2" / "record.json")  # "a third seed"
    assert read_existing(runs / "point-s2") is None
    assert decide(runs / "point-s2", retry_failed=False)[0] == Decision.RUN  # the point is re-run
    rows, skipped = collect.read_records(tmp_path)
    assert sorted(r["run_id"] for r in rows) == ["point-s0", "point-s1"]
    [(path, reason)] = skipped
    assert "point-s2" in path and "copied from another run folder" in reason


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("metrics", "oops", ["metrics", "str"]),
        ("train", [1, 2], ["train", "list"]),
        ("seed", "zero", ["seed", "str"]),
        ("seed", 1.5, ["seed", "float"]),
        ("status", "great", ["status", "great"]),
    ],
)
def test_a_record_with_fields_of_the_wrong_type_is_unreadable_everywhere(field, value, words, tmp_path, capsys):
    runs = tmp_path / "runs"
    write_record(runs / "good", fake_record("good", 0, 0.8))
    write_record(runs / "bad", {**fake_record("bad", 1, 0.9), field: value})
    log_launch(tmp_path, {"started_at": "t", "launcher": "local", "points": {"good": {}, "bad": {}}})
    rows, skipped = collect.read_records(tmp_path)
    assert [r["run_id"] for r in rows] == ["good"]
    assert all(word in skipped[0][1] for word in words), skipped
    status = sweep_status(tmp_path)  # crashed on a list-valued train section
    assert status["done"] == 1 and [u["run_id"] for u in status["unreadable_records"]] == ["bad"]
    assert "unreadable records" in render(status)
    from sweeper.results.report import main as report_main

    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0  # crashed on a str seed
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "1 unreadable record file(s) skipped" in summary and "bad" in summary
