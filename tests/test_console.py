"""The main job reads clean: a model that cannot do a dataset's task is planned as "not applicable"
(one line, the count and the fix; no record, no failure; counted apart by the dry run and status),
and the terminal shows one line per point while Hydra's and transformers' chatter goes to the
job's log files (sweeper.verbose=true brings it back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from sweeper import tasks
from sweeper.paths import CONF_DIR
from sweeper.results.status import render, sweep_status

TINY = ("train.max_steps=2", "train.eval_size=16", "train.batch_size=4", "train.max_length=32")
FORTUNES = "fortune_computers_vs_rest,fortune_art_vs_rest,fortune_law_vs_rest"


def sweeper(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m sweeper ...` as a user runs it, stdout and stderr together as a terminal shows them."""
    # CI=true as on CI, where transformers also hands its log lines to the root logger (Hydra's console)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "CI": "true"}
    out = subprocess.run(
        [sys.executable, "-m", "sweeper", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=600,
    )  # fmt: skip
    out.stdout = out.stdout.decode()  # bytes first: text mode would turn a progress bar's \r into \n
    return out


def shown_lines(output: str) -> list[str]:
    """The lines a terminal ends up showing: a carriage return overwrites (a finished progress bar
    clears itself), blank lines dropped."""
    lines = [line.split("\r")[-1].rstrip() for line in output.split("\n")]
    return [line for line in lines if line.strip()]


def default_model_mismatches() -> int:
    """Catalogue datasets whose task the default model (config.yaml) cannot do, read from the files."""
    default = next(d["model"] for d in yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
                   if isinstance(d, dict) and "model" in d)  # fmt: skip
    model = yaml.safe_load((CONF_DIR / "model" / f"{default}.yaml").read_text())
    count = 0
    for path in (CONF_DIR / "dataset").glob("*.yaml"):
        task = tasks.find(yaml.safe_load(path.read_text()).get("task"))
        count += task is not None and task.model_mismatch(model) is not None
    return count


def test_main_job_dry_run_counts_not_applicable_points_apart(tmp_path):
    expected = default_model_mismatches()
    assert expected > 0  # the catalogue has lm / generation datasets that MiniLM cannot do
    out = sweeper(
        "-m", "dataset=glob(*)", "sweeper.dry_run=true", f"sweeper.results_dir={tmp_path / 'r'}", cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout[-3000:]
    lines = [line for line in shown_lines(out.stdout) if "not applicable" in line]
    assert len(lines) == 2, lines  # the explanation, and the count in the plan line
    assert lines[0].startswith(f"{expected} point(s) not applicable, not run and not recorded (minilm x generation:")
    assert "e.g. model=minilm,smollm2" in lines[0]
    assert f"{expected} not applicable (model x task)" in lines[1]
    assert not (tmp_path / "r" / "runs").exists()  # a dry run writes no record, and nothing failed


def test_a_launch_plans_them_apart_and_status_counts_them_apart(tmp_path):
    results = tmp_path / "r"
    out = sweeper("-m", "dataset=fortune_computers_vs_rest,austen_lm", "model=minilm", "hydra/launcher=local",
                  f"sweeper.results_dir={results}", *TINY, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert "1 point(s) not applicable, not run and not recorded (minilm x lm: 1)" in out.stdout
    records = [json.loads(p.read_text()) for p in results.glob("runs/*/record.json")]
    assert [(r["dataset"], r["status"]) for r in records] == [("fortune_computers_vs_rest", "ok")]
    status = sweep_status(results)
    assert (status["total"], status["done"], status["failed"], status["not_applicable"]) == (1, 1, 0, 1)
    assert "not applicable: 1 point(s)" in render(status)


def test_the_terminal_shows_one_line_per_point(tmp_path):
    out = sweeper("-m", f"dataset={FORTUNES},austen_lm", "model=minilm", f"sweeper.results_dir={tmp_path / 'r'}",
                  *TINY, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    lines = shown_lines(out.stdout)
    assert lines[0].startswith("1 point(s) not applicable"), lines  # the planning line
    assert len(lines) == 4, lines  # then exactly one line per point
    assert [line.split()[:2] for line in lines[1:]] == [["[ok]", d] for d in FORTUNES.split(",")]
    logs = "".join(p.read_text() for p in (tmp_path / "jobs").rglob("*.log"))
    assert "LOAD REPORT" in logs and "#2 : dataset=fortune_law_vs_rest" in logs  # kept in the log files

    loud = sweeper("-m", "dataset=fortune_computers_vs_rest", "model=minilm", "sweeper.verbose=true",
                   f"sweeper.results_dir={tmp_path / 'r'}", "sweeper.retry_failed=true", "train.seed=1", *TINY,
                   cwd=tmp_path)  # fmt: skip
    assert loud.returncode == 0, loud.stdout[-3000:]
    assert "LOAD REPORT" in loud.stdout and "#0 : dataset=fortune_computers_vs_rest" in loud.stdout


def test_halving_leaves_not_applicable_points_out_of_its_groups(tmp_path):
    out = sweeper("-m", "dataset=fortune_computers_vs_rest,austen_lm", "model=minilm", "method.lr=1e-3,2e-3",
                  "sweeper.search=halving", "sweeper.dry_run=true", f"sweeper.results_dir={tmp_path / 'r'}",
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    lines = shown_lines(out.stdout)
    assert lines[0].startswith("2 point(s) not applicable, not run and not recorded (minilm x lm: 2)")
    assert "halving: 2 point(s)" in lines[1]  # an lm group of MiniLM points would wait for records forever
