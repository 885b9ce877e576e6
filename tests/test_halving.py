"""Successive halving (sweeper.search=halving): rungs, promotions on validation, continuation from
the rung's checkpoint on the final budget's schedule, and relaunches that decide as before."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.launch.halving import rung_budgets
from sweeper.records import RUNGS_NAME, read_record
from sweeper.train import run_point

# A tiny Llama pretraining on Austen: a sane lr lowers validation perplexity within 2 steps, lrs of
# 1e-7 / 1e-8 leave the random model where it was, so the promotion cannot be a coin toss.
LM = ["dataset=austen_lm", "model=tiny_llama", "train.max_length=32", "train.eval_size=8", "train.batch_size=4"]
GRID = ["train.lr=1e-2,1e-7,1e-8", "train.max_steps=6", "sweeper.search=halving", "sweeper.halving.min_steps=2"]


def test_rung_budgets():
    assert rung_budgets(10, 3, 100) == [10, 30, 100]  # not 90: a rung must leave room for a factor eta
    assert rung_budgets(10, 3, 270) == [10, 30, 90, 270]
    assert rung_budgets(2, 3, 6) == [2, 6]
    assert rung_budgets(2, 2, 8) == [2, 4, 8]


def scored(tmp_path: Path, name: str, dataset: str, config: str, seed: int, rung_scores: dict, failed=False):
    """A run folder as a halving point leaves it: rungs.jsonl lines (and a failed record)."""
    from sweeper.launch.halving import Entry
    from sweeper.records import append_rung, write_record

    run_dir = tmp_path / name
    run_dir.mkdir()
    for rung, accuracy in rung_scores.items():
        append_rung(run_dir, rung, [2, 6][rung], {"accuracy": accuracy, "loss": 1.0})
    if failed:
        write_record(run_dir, {"run_id": name, "status": "failed", "error": "boom", "error_type": "TrainingError"})
    return Entry([f"seed={seed}"], run_dir, (dataset, "m"), config, "classification", 6)


def test_promote_ranks_configurations_by_their_seeds_mean_per_group(tmp_path):
    from sweeper.launch.halving import promote

    entries = [
        scored(tmp_path, "a1", "d1", "lr=1", 0, {0: 0.9}),
        scored(tmp_path, "a2", "d1", "lr=1", 1, {0: 0.5}),  # mean 0.70
        scored(tmp_path, "b1", "d1", "lr=2", 0, {0: 0.8}),
        scored(tmp_path, "b2", "d1", "lr=2", 1, {0: 0.7}),  # mean 0.75: goes on, both seeds
        scored(tmp_path, "c1", "d1", "lr=3", 0, {}, failed=True),  # -inf
        scored(tmp_path, "e1", "d2", "lr=1", 0, {0: 0.6}),
        scored(tmp_path, "e2", "d2", "lr=2", 0, {0: 0.6}),  # a tie: the configuration text decides
        scored(tmp_path, "f1", "d3", "lr=1", 0, {0: 0.9}),
        scored(tmp_path, "f2", "d3", "lr=2", 0, {}),  # no score yet: d3 waits, d1 and d2 go on
    ]
    survivors, waiting = promote(entries, rung=0, budget=2, eta=3)
    assert [e.run_dir.name for e in survivors] == ["b1", "b2", "e1"]
    assert [e.run_dir.name for e in waiting] == ["f2"]
    survivors, _ = promote(entries[:5], rung=0, budget=2, eta=2)  # ceil(3 / 2) = 2 configurations
    assert [e.run_dir.name for e in survivors] == ["a1", "a2", "b1", "b2"]


def losses(record) -> list[float]:
    lines = (Path(record["record_path"]).parent / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def test_a_point_continued_from_its_rung_equals_an_uninterrupted_run(make_cfg, tmp_path):
    point = [*LM, "train.lr=1e-2", "train.max_steps=6", "train.log_every=1"]
    straight = run_point(make_cfg(*point, f"sweeper.results_dir={tmp_path}/straight"))
    halted = run_point(make_cfg(*point, "train.stop_at=2", "sweeper.halving.rung=0"))
    assert halted["status"] == "ok" and halted["train"]["steps"] == 2 and halted["train"]["stopped_at_rung"] == 0
    run_dir = Path(halted["record_path"]).parent
    assert (run_dir / "checkpoint" / "step.json").exists()  # what a promotion continues from
    assert run_point(make_cfg(*point, "train.stop_at=2"))["skipped"]  # the same rung again: nothing to do
    promoted = run_point(make_cfg(*point, "train.stop_at=6", "sweeper.halving.rung=1"))
    assert promoted["train"]["resumed_from_step"] == 2 and promoted["train"]["steps"] == 6
    assert promoted["train"]["stopped_at_rung"] is None and not (run_dir / "checkpoint").exists()
    assert losses(promoted) == pytest.approx(losses(straight), abs=1e-6)  # the lr schedule of 6 steps from step 0
    assert promoted["metrics"]["validation"]["loss"] == pytest.approx(straight["metrics"]["validation"]["loss"])
    assert promoted["metrics"]["test"]["perplexity"] == pytest.approx(straight["metrics"]["test"]["perplexity"])
    rungs = [json.loads(line) for line in (run_dir / RUNGS_NAME).read_text().splitlines()]
    assert [(r["rung"], r["steps"]) for r in rungs] == [(0, 2), (1, 6)]


def sweep(tmp_path, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sweeper", "-m", *LM, *GRID, f"sweeper.results_dir={tmp_path}/results"]
    cmd += [f"hydra.sweep.dir={tmp_path}/jobs", "train.threads=1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def records(tmp_path) -> dict[float, dict]:
    found = [read_record(p) for p in (tmp_path / "results" / "runs").glob("*/record.json")]
    return {r["lr"]: r for r in found}


def test_halving_promotes_the_clearly_best_configuration_and_a_relaunch_decides_the_same(tmp_path):
    # a point of rung 0 already done before the sweep starts (a sweep killed mid-rung): it is kept
    early = [*LM, "train.lr=1e-7", "train.max_steps=6", "train.stop_at=2", "sweeper.halving.rung=0"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper",
            *early,
            f"sweeper.results_dir={tmp_path}/results",
            "train.threads=1",
            f"hydra.run.dir={tmp_path}/single",
        ],  # fmt: skip
        check=True,
        capture_output=True,
        timeout=300,
    )
    kept = next((tmp_path / "results" / "runs").glob("*/record.json"))
    mtime = kept.stat().st_mtime_ns

    done = sweep(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "halving: 3 point(s), rungs at [2, 6] steps, eta 3" in done.stdout
    assert "halving rung 1: 1 point(s) to step 6" in done.stdout
    found = records(tmp_path)
    assert sorted(found) == [1e-8, 1e-7, 1e-2]
    best = found[1e-2]
    assert best["train"]["steps"] == 6 and best["train"]["stopped_at_rung"] is None
    assert best["train"]["resumed_from_step"] == 2  # continued from its rung-0 checkpoint
    for lr in (1e-7, 1e-8):
        assert found[lr]["status"] == "ok"
        assert found[lr]["train"]["steps"] == 2 and found[lr]["train"]["stopped_at_rung"] == 0
    assert kept.stat().st_mtime_ns == mtime  # the point done before the sweep was not trained again

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").glob("*/record.json")}
    again = sweep(tmp_path)  # relaunched: the same promotions from rungs.jsonl, nothing trains
    assert again.returncode == 0, again.stderr[-2000:]
    assert "halving rung 1: 1 point(s) to step 6" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    from sweeper.results.report import main as report

    assert report([str(tmp_path / "results"), "--out", str(tmp_path / "report")]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "Stopped at a halving rung" in summary and "Successive halving stopped 2 run(s)" in summary


def test_halving_settings_are_one_line_errors(tmp_path):
    bad = sweep(tmp_path, "sweeper.halving.eta=1")
    assert bad.returncode != 0 and "error: sweeper.halving.eta must be an integer >= 2, got 1" in bad.stderr
    early = sweep(tmp_path, "train.eval_every=1")
    assert early.returncode != 0 and "train.eval_every > 0" in early.stderr
