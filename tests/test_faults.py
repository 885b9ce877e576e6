"""Faults: a worker SIGKILLed mid-training resumes from its last on-disk checkpoint when relaunched."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeper.records import find_records, read_record

REPO = Path(__file__).resolve().parents[1]
POINT = [
    "dataset=fortune_computers_vs_rest",
    "model=tiny_llama",
    "method.r=2",
    "train.max_steps=30",
    "train.eval_size=32",
    "train.batch_size=8",
    "train.max_length=32",
    "train.threads=1",
    "train.checkpoint_every=4",
]


def run(results: Path, tmp: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper", *POINT, f"sweeper.results_dir={results}", f"hydra.run.dir={tmp / 'jobs'}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def checkpoint_step(results: Path) -> int:
    for path in results.rglob("checkpoint/step.json"):
        return json.loads(path.read_text())["step"]
    return 0


def test_sigkill_mid_training_then_relaunch_resumes(tmp_path):
    results = tmp_path / "killed"
    proc = run(results, tmp_path)
    deadline = time.time() + 300
    while checkpoint_step(results) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed: raise train.max_steps"
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: only what is on disk survives
    proc.wait(timeout=30)
    killed_at = checkpoint_step(results)
    assert killed_at >= 8 and not list(find_records(results))

    assert run(results, tmp_path).wait(timeout=600) == 0
    [resumed] = [read_record(p) for p in find_records(results)]
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["train"]["resumed_from_step"] >= killed_at

    straight_dir = tmp_path / "straight"
    assert run(straight_dir, tmp_path).wait(timeout=600) == 0
    [straight] = [read_record(p) for p in find_records(straight_dir)]
    assert straight["train"]["resumed_from_step"] == 0
    assert resumed["metrics"] == straight["metrics"]
