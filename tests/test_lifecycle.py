"""A sweep you can leave: relaunch skips what is done, resumes what was cut, re-runs failures on request,
adds only new points; detach + status; chunking. Local queue (and Hydra's basic launcher) on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.config import compose
from sweeper.records import find_records, read_record, write_record
from sweeper.results.status import render, sweep_status
from sweeper.runs import decide, make_run_id

REPO = Path(__file__).resolve().parents[1]
LSTM = ["model=lstm", "train.max_steps=5", "train.eval_size=50"]
TWO = "dataset=fortune_computers_vs_rest,fortune_art_vs_rest"
LOCAL = ["hydra/launcher=local", "hydra.launcher.workers=2", "hydra.launcher.threads=1", "hydra.launcher.poll_s=0.5"]


def sweep_cmd(root: Path, *overrides: str, launcher=LOCAL) -> list[str]:
    stamp = time.strftime("%H%M%S") + f"{time.time() % 1:.6f}"[2:]
    return [
        sys.executable,
        "-m",
        "sweeper",
        "-m",
        *LSTM,
        *launcher,
        f"sweeper.results_dir={root / 'results'}",
        f"hydra.sweep.dir={root / 'jobs' / stamp}",
        *overrides,
    ]


def run(cmd, timeout=400):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def records(root: Path) -> dict[str, dict]:
    """run id -> record, with the file's mtime."""
    out = {}
    for path in find_records(root / "results"):
        record = read_record(path)
        out[record["run_id"]] = {**record, "mtime_ns": os.stat(path).st_mtime_ns}
    return out


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """2 datasets x r in {0, 2}: r=0 fails at once (one-line error), r=2 trains. 2 ok + 2 failed."""
    root = tmp_path_factory.mktemp("grid")
    proc = run(sweep_cmd(root, TWO, "method.r=0,2", "sweeper.chunk=2"))
    recs = records(root)
    assert sorted(r["status"] for r in recs.values()) == ["failed", "failed", "ok", "ok"], proc.stdout
    assert proc.stdout.count("[FAILED]") == 2  # printed as they happened, with their one-line errors
    assert "method.r must be an integer >= 1, got 0" in proc.stdout
    return root, recs


def test_rerun_runs_nothing_and_says_what_it_skipped(grid):
    root, before = grid
    proc = run(sweep_cmd(root, TWO, "method.r=0,2"))
    assert "grid of 4: skipping 2 already ok, 2 failed earlier" in proc.stdout
    assert "nothing to run" in proc.stdout
    after = records(root)
    for run_id, rec in before.items():
        if rec["status"] == "ok":
            assert after[run_id]["mtime_ns"] == rec["mtime_ns"] and after[run_id]["finished_at"] == rec["finished_at"]
    launches = json.loads((root / "results" / "sweep.json").read_text())["launches"]
    assert launches[-1]["counts"] == {"grid": 4, "skip-ok": 2, "skip-failed": 2, "to_run": 0}
    assert launches[-1]["command"].startswith("python -m sweeper -m") and launches[-1]["git_sha"]


def test_retry_failed_reruns_exactly_the_failed_points(grid):
    root, before = grid
    proc = run(sweep_cmd(root, TWO, "method.r=0,2", "sweeper.retry_failed=true", "sweeper.chunk=2"))
    assert "running 2 (2 retry a failure)" in proc.stdout
    after = records(root)
    for run_id, rec in before.items():
        changed = after[run_id]["mtime_ns"] != rec["mtime_ns"]
        assert changed == (rec["status"] == "failed"), run_id
        assert after[run_id]["status"] == rec["status"]  # r=0 fails again, deterministically


def test_adding_a_rank_runs_only_the_new_points(grid):
    root, before = grid
    proc = run(sweep_cmd(root, TWO, "method.r=0,2,4", "sweeper.chunk=2"))
    assert "grid of 6: skipping 2 already ok, 2 failed earlier" in proc.stdout and "running 2" in proc.stdout
    after = records(root)
    new = set(after) - set(before)
    assert len(new) == 2 and all(after[k]["r"] == 4 and after[k]["status"] == "ok" for k in new)
    assert all(after[k]["mtime_ns"] == before[k]["mtime_ns"] for k in before if before[k]["status"] == "ok")


def test_basic_launcher_skips_a_recorded_point_without_rewriting_it(grid):
    root, before = grid
    ok = next(r for r in before.values() if r["status"] == "ok")
    proc = run(sweep_cmd(root, f"dataset={ok['dataset']}", "method.r=2", launcher=["train.threads=1"]))
    assert "[skipped: recorded before] [ok]" in proc.stdout
    assert records(root)[ok["run_id"]]["mtime_ns"] == ok["mtime_ns"]


def test_run_ids_stable_for_equal_configs_and_differ_for_result_fields(tmp_path):
    base = ["dataset=fortune_computers_vs_rest", "model=lstm", "method.r=2"]
    a = make_run_id(compose(*base))
    # launching and bookkeeping knobs do not change what a point computes
    assert a == make_run_id(
        compose(
            *base,
            "sweeper.chunk=8",
            "sweeper.retry_failed=true",
            "sweeper.detach=true",
            f"sweeper.results_dir={tmp_path}",
            "train.log_every=1",
            "train.threads=3",
        )
    )
    for changed in ("method.r=4", "train.lr=1e-3", "train.seed=1", "train.max_steps=7", "dataset=fortune_art_vs_rest"):
        assert make_run_id(compose(*base, changed)) != a, changed


def test_decisions_from_what_lies_in_the_run_folder(tmp_path):
    run_dir = tmp_path / "runs" / "x"
    assert decide(run_dir, retry_failed=False) == ("run", None)
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "step.json").write_text('{"step": 3}')
    assert decide(run_dir, retry_failed=False) == ("resume", None)  # checkpoint, no record: resume
    write_record(run_dir, {"run_id": "x", "status": "failed", "error": "boom"})
    assert decide(run_dir, retry_failed=False) == ("skip-failed", "boom")
    assert decide(run_dir, retry_failed=True) == ("retry", "boom")
    write_record(run_dir, {"run_id": "x", "status": "ok"})
    assert decide(run_dir, retry_failed=True) == ("skip-ok", None)


def test_killed_sweep_relaunched_completes_only_the_missing_points(tmp_path):
    three = "dataset=fortune_computers_vs_rest,fortune_art_vs_rest,fortune_law_vs_rest"
    cmd = sweep_cmd(tmp_path, three, "method.r=2", "hydra.launcher.workers=1", "sweeper.chunk=3")
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not records(tmp_path) and time.time() < deadline and first.poll() is None:
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the launcher, its job controllers and workers
        first.wait(timeout=30)
    done = records(tmp_path)
    assert 0 < len(done) < 3, (tmp_path / "first.log").read_text()[-2000:]
    proc = run(sweep_cmd(tmp_path, three, "method.r=2", "hydra.launcher.workers=1", "sweeper.chunk=3"))
    assert f"skipping {len(done)} already ok" in proc.stdout and f"running {3 - len(done)}" in proc.stdout
    after = records(tmp_path)
    assert len(after) == 3 and all(r["status"] == "ok" for r in after.values())
    assert all(after[k]["mtime_ns"] == v["mtime_ns"] for k, v in done.items())


def test_detached_sweep_returns_at_once_and_status_follows_it(tmp_path):
    from sweeper.results.collect import load_records

    three = "dataset=fortune_computers_vs_rest,fortune_art_vs_rest,fortune_law_vs_rest"
    t0 = time.time()
    proc = run(
        sweep_cmd(tmp_path, three, "method.r=2", "sweeper.detach=true", "sweeper.chunk=2", "hydra.launcher.workers=1"),
        timeout=120,
    )
    returned_after = time.time() - t0
    results = tmp_path / "results"
    assert f"python -m sweeper.status {results}" in proc.stdout
    monitor = json.loads((results / "sweep.json").read_text())["launches"][-1]["monitor"]
    try:
        first = sweep_status(results)
        assert first["total"] == 3 and first["done"] < 3, f"returned after {returned_after:.0f}s with all done"
        seen, mid_rows = [first["done"]], None
        deadline = time.time() + 300
        while time.time() < deadline:
            status = sweep_status(results)
            seen.append(status["done"])
            if 0 < status["done"] < 3 and mid_rows is None:
                mid_rows = load_records(results, warn=False)  # collect while the sweep runs
                assert len(mid_rows) >= status["done"] and set(mid_rows["status"]) == {"ok"}
            if status["done"] == 3:
                break
            time.sleep(0.5)
        assert seen[-1] == 3 and seen == sorted(seen), seen
        assert mid_rows is not None, f"never saw the sweep half done: {seen}"
        assert "finished" in render(status) and "done 3" in render(status)
        recs = records(tmp_path)
        jobs = [r["worker"]["job_id"] for r in sorted(recs.values(), key=lambda r: r["worker"]["started_unix"])]
        assert len(set(jobs)) == 2 and jobs[0] == jobs[1]  # chunk=2: two points in the first job's process
    finally:
        deadline = time.time() + 60
        while time.time() < deadline and Path(f"/proc/{monitor['pid']}").exists():
            time.sleep(0.5)
        if Path(f"/proc/{monitor['pid']}").exists():
            os.killpg(monitor["pid"], signal.SIGKILL)


def test_status_lists_failures_and_progress(tmp_path):
    results = tmp_path / "results"
    write_record(results / "runs" / "a", {"run_id": "a", "status": "ok", "finished_at": "2026-01-01T00:00:00+00:00"})
    write_record(results / "runs" / "b", {"run_id": "b", "status": "failed", "error": "method.r must be > 0"})
    launch = {
        "started_at": "2026-01-01T00:00:00+00:00",
        "launcher": "local",
        "command": "python -m sweeper -m x",
        "points": {k: {"overrides": k} for k in "abc"},
        "jobs": [],
        "monitor": None,
    }
    (results / "sweep.json").write_text(json.dumps({"launches": [launch]}))
    status = sweep_status(results)
    assert (status["total"], status["done"], status["failed"], status["pending"]) == (3, 1, 1, 1)
    text = render(status)
    assert "2/3" in text and "b: method.r must be > 0" in text and "ETA" in text
    cli = subprocess.run(
        [sys.executable, "-m", "sweeper.status", str(results)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert cli.returncode == 0 and "pending 1" in cli.stdout
