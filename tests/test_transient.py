"""Failures that heal: what the environment broke (a full disk, a corrupt checkpoint or cache file)
is re-run by a plain relaunch, a bounded number of times; what the researcher must fix stays failed."""

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from sweeper.data.cache import load_splits, materialise
from sweeper.records import read_existing
from sweeper.runs import TRANSIENT_ATTEMPTS, Decision, decide, resolved, run_dir_of
from sweeper.train import checkpoint, run_point

from .test_bad_input import byo
from .test_shared_folder import TINY  # a tiny_llama LoRA point of 4 steps


def disk_full_save_file(tensors, filename, *args, **kwargs):
    """safetensors.save_file on a full disk: half the file lands, then ENOSPC."""
    Path(filename).write_bytes(b"\0" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device", filename)


def test_disk_full_mid_checkpoint_is_transient_and_leaves_no_partial_checkpoint(make_cfg, monkeypatch):
    cfg = make_cfg(*TINY, "train.checkpoint_every=2")
    run_dir = run_dir_of(cfg)
    monkeypatch.setattr(checkpoint, "save_file", disk_full_save_file)
    record = run_point(cfg)
    assert record["status"] == "failed" and "No space left" in record["error"], record["error"]
    assert record["failure"] == "transient" and record["transient_failures"] == 1
    assert not [p.name for p in run_dir.iterdir() if "checkpoint" in p.name], "a partial checkpoint stayed"
    assert decide(run_dir, retry_failed=False)[0] == Decision.RERUN_TRANSIENT  # a plain relaunch re-runs it
    monkeypatch.undo()  # space freed
    again = run_point(cfg)
    assert again["status"] == "ok", again["error"]


def test_transient_failures_are_bounded(make_cfg, monkeypatch):
    cfg = make_cfg(*TINY, "train.checkpoint_every=2")
    run_dir = run_dir_of(cfg)
    monkeypatch.setattr(checkpoint, "save_file", disk_full_save_file)
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        record = run_point(cfg)
        assert record["transient_failures"] == attempt
    decision, error = decide(run_dir, retry_failed=False)
    assert decision == Decision.SKIP_FAILED and "No space left" in error  # reported, not looped on
    assert run_point(cfg)["skipped"]
    assert decide(run_dir, retry_failed=True)[0] == Decision.RETRY


def test_a_deterministic_failure_stays_failed(make_cfg, tmp_path):
    cfg = make_cfg(*TINY)
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a b c"] * 40, "category": ["x", "y"] * 20}).to_csv(path, index=False)
    cfg.dataset = OmegaConf.create(byo(path))  # bad data: no `label` column
    record = run_point(cfg)
    assert record["failure"] == "deterministic" and "transient_failures" not in record
    assert decide(run_dir_of(cfg), retry_failed=False)[0] == Decision.SKIP_FAILED


def test_a_corrected_setting_runs_where_its_bad_value_failed(make_cfg):
    """train.log_every is bookkeeping (no part of the run id): the failed record of log_every=0 sits
    at the run id of the corrected command, which must run, not skip it as failed; the same bad
    command relaunched is skipped as any failure is."""
    bad, good = make_cfg(*TINY, "train.log_every=0"), make_cfg(*TINY, "train.log_every=2")
    run_dir = run_dir_of(bad)
    assert run_dir == run_dir_of(good)
    record = run_point(bad)
    assert (record["failure"], record["setting"]) == ("setting", "train.log_every")
    assert decide(run_dir, retry_failed=False, config=resolved(bad))[0] == Decision.SKIP_FAILED
    assert decide(run_dir, retry_failed=False, config=resolved(good))[0] == Decision.RUN
    assert run_point(good)["status"] == "ok"


def rung_point(make_cfg):
    """A point paused at step 2 of 4 (train.stop_at): its checkpoint stays for the next launch."""
    cfg = make_cfg(*TINY, "train.stop_at=2")
    first = run_point(cfg)
    assert first["status"] == "ok" and first["train"]["steps"] == 2, first.get("error")
    return cfg, run_dir_of(cfg), first


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "step.json cut"])
def test_a_corrupt_checkpoint_is_set_aside_and_the_point_restarts(damage, make_cfg):
    cfg, run_dir, first = rung_point(make_cfg)
    (run_dir / "record.json").unlink()  # as if the job had died after its checkpoint
    folder = run_dir / "checkpoint"
    weights = folder / "weights.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "overwritten":
        data = bytearray(weights.read_bytes())
        data[-8:] = b"\xff" * 8
        weights.write_bytes(bytes(data))
    else:
        (folder / "step.json").write_text('{"step": 2, "sha2')
    assert decide(run_dir, retry_failed=False)[0] == Decision.RESUME
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["train"]["resumed_from_step"] == 0  # no sound checkpoint left: from step 0
    [aside] = record["train"]["set_aside_checkpoints"]
    assert aside.startswith("checkpoint.corrupt-") and (run_dir / aside).is_dir()
    assert record["metrics"]["test"] == first["metrics"]["test"]  # the same run, trained again


def test_a_sound_checkpoint_carries_digests_and_resumes(make_cfg):
    cfg, run_dir, _ = rung_point(make_cfg)
    digests = json.loads((run_dir / "checkpoint" / "step.json").read_text())["sha256"]
    assert {"weights.safetensors", "trainer.pt", "loop.json"} <= set(digests)
    (run_dir / "record.json").unlink()
    record = run_point(cfg)
    assert record["train"]["resumed_from_step"] == 2 and "set_aside_checkpoints" not in record["train"]


def cache_spec(tmp_path):
    rows = [(f"text number {i} about {'cats' if i % 2 else 'dogs'}", "cat" if i % 2 else "dog") for i in range(80)]
    path = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return OmegaConf.create(byo(path, name="byo_cache"))


@pytest.mark.parametrize("damage", ["truncated", "train replaced by test"])
def test_a_corrupt_cache_file_is_rebuilt(damage, tmp_path, capsys):
    spec, cache = cache_spec(tmp_path), tmp_path / "cache"
    folder = materialise(spec, cache)
    before = {s: d.to_pandas() for s, d in load_splits(spec, cache).items()}
    train = folder / "train.parquet"
    if damage == "truncated":
        train.write_bytes(train.read_bytes()[:200])
    else:
        train.write_bytes((folder / "test.parquet").read_bytes())
    after = load_splits(spec, cache)
    assert "rebuilding it" in capsys.readouterr().err
    for split, frame in before.items():
        pd.testing.assert_frame_equal(after[split].to_pandas(), frame)


def test_a_corrupt_cache_under_a_point_is_rebuilt_not_failed(make_cfg, tmp_path, monkeypatch):
    from sweeper import paths

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    cfg = make_cfg(*TINY, "train.max_steps=2")
    folder = materialise(cfg.dataset)
    (folder / "train.parquet").write_bytes(b"PAR1 cut")
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    assert read_existing(run_dir_of(cfg))["status"] == "ok"
