"""Packed adapters: K points on one base match K separate runs; failures stay alone; adapters reload."""

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from sweeper.records import read_record
from sweeper.runs import run_dir_of
from sweeper.tasks import get as get_task
from sweeper.train import Interrupted, run_point
from sweeper.train.context import PointContext
from sweeper.train.pack import can_pack, group_points, run_packed

SMALL = ("model=tiny_llama", "train.eval_size=48", "train.batch_size=8", "train.max_length=32", "train.log_every=1")
# Three datasets (one with 4 classes: heads of different sizes share a pack), different ranks and budgets.
POINTS = [("fortune_computers_vs_rest", 2, 6), ("fortune_cookie_vs_rest", 4, 4), ("wordnet_pos", 2, 5)]
# CPU float32: the packed base matmul runs over the concatenated batch, so sums may round differently.
# Measured: logged losses equal to their 6 decimals, eval losses within 1e-6. Bound: 1e-5 abs or rel.
LOSS_TOL = 1e-5


def point(make_cfg, where, dataset, r, steps, *extra):
    return make_cfg(
        *SMALL,
        f"dataset={dataset}",
        f"method.r={r}",
        f"train.max_steps={steps}",
        f"sweeper.results_dir={where}",
        *extra,
    )


def losses(record):
    path = Path(record["record_path"]).with_name("metrics.jsonl")
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if "loss" in json.loads(line)]


def assert_same_result(alone, packed):
    assert alone["status"] == packed["status"] == "ok", (alone.get("error"), packed.get("error"))
    la, lp = losses(alone), losses(packed)
    assert len(la) == len(lp) == alone["max_steps"]
    assert max(abs(a - b) for a, b in zip(la, lp)) <= LOSS_TOL, (la, lp)
    ma, mp = alone["metrics"], packed["metrics"]
    assert ma.keys() == mp.keys()
    for key in ma:
        assert ma[key] == pytest.approx(mp[key], abs=LOSS_TOL, rel=LOSS_TOL), key
    assert alone["params"] == packed["params"]


def test_packed_matches_separate_runs(make_cfg, tmp_path):
    torch.set_num_threads(1)
    alone = [run_point(point(make_cfg, tmp_path / "alone", *p)) for p in POINTS]
    packed = run_packed([point(make_cfg, tmp_path / "packed", *p) for p in POINTS])
    for a, p in zip(alone, packed):
        assert_same_result(a, p)
        assert a["run_id"] == p["run_id"], "packing is bookkeeping: the run id must not change"
        assert set(a) <= set(p) and p["pack"]["size"] == 3
        on_disk = read_record(Path(p["record_path"]))
        assert on_disk["status"] == "ok" and on_disk["train"]["steps"] == p["max_steps"]
        assert (Path(p["record_path"]).parent / "adapter" / "adapter_config.json").exists()
        assert not (Path(p["record_path"]).parent / "checkpoint").exists()


def test_failed_points_fail_alone(make_cfg, tmp_path):
    torch.set_num_threads(1)
    cfgs = [
        point(make_cfg, tmp_path, "fortune_computers_vs_rest", 2, 3),
        point(make_cfg, tmp_path, "fortune_cookie_vs_rest", 2, 3, "dataset.label_field=no_such_column"),
        point(make_cfg, tmp_path, "fortune_art_vs_rest", 1000, 3),  # rank above the 128-wide layers
        point(make_cfg, tmp_path, "fortune_food_vs_rest", 2, 3, "train.lr=1e30"),
    ]  # loss goes non-finite
    assert len(group_points(cfgs, size=4)) == 1, "all four share one pack"
    ok, bad_data, bad_rank, nan = run_packed(cfgs)
    assert ok["status"] == "ok", ok["error"]
    for record, words in ((bad_data, "no_such_column"), (bad_rank, "method.r=1000"), (nan, "non-finite")):
        assert record["status"] == "failed" and words in record["error"] and "\n" not in record["error"], record[
            "error"
        ]
        assert read_record(Path(record["record_path"]))["status"] == "failed"
    alone = run_point(point(make_cfg, tmp_path / "alone", "fortune_computers_vs_rest", 2, 3))
    assert_same_result(alone, ok)  # its neighbours' failures did not touch it


def test_a_member_failing_after_its_step_fails_alone(make_cfg, tmp_path, monkeypatch):
    """A point whose metrics.jsonl write fails at step 2 (after its own optimizer step) fails; the
    points packed with it finish exactly as they would have alone."""
    from sweeper.train.loop import MetricsLog

    torch.set_num_threads(1)
    real_step = MetricsLog.step

    def step(self, done, *args):
        if "fortune_art_vs_rest" in self.file.name and done == 2:
            raise OSError(28, "No space left on device")
        return real_step(self, done, *args)

    monkeypatch.setattr(MetricsLog, "step", step)
    names = ["fortune_computers_vs_rest", "fortune_art_vs_rest", "fortune_food_vs_rest"]
    first, broken, last = run_packed([point(make_cfg, tmp_path / "packed", n, 2, 4) for n in names])
    assert broken["status"] == "failed" and "No space left on device" in broken["error"]
    monkeypatch.setattr(MetricsLog, "step", real_step)
    for name, packed in ((names[0], first), (names[2], last)):
        assert_same_result(run_point(point(make_cfg, tmp_path / "alone", name, 2, 4)), packed)


def test_members_hold_the_bases_own_tensors_on_its_device(make_cfg, tmp_path):
    """After setup (the base on the runtime's device, each member moved there too), every frozen
    weight of every member is the base's tensor: one base in memory, not K+1. On a GPU this is
    where a CPU-side share followed by .to(device) would have made copies."""
    from sweeper.train.pack.layers import PackContext
    from sweeper.train.pack.members import Pack
    from sweeper.train.runtime import setup_runtime

    names = ["fortune_computers_vs_rest", "fortune_art_vs_rest"]
    pack = Pack([point(make_cfg, tmp_path, n, 2, 3) for n in names])
    try:
        pack.runtime, pack.layers = setup_runtime(pack.members[0].cfg.train), PackContext()
        for m in pack.members:
            pack.load_data(m)
        pack.build_base(pack.members[0])
        base = {name: p.data_ptr() for name, p in pack.base_params.items()}
        for m in pack.members:
            pack.add_member(m)
            shared = [
                (name, p)
                for name, p in m.peft.base_model.model.named_parameters()
                if not p.requires_grad and "lora_" not in name and "modules_to_save" not in name
                and "original_module" not in name
            ]  # fmt: skip
            assert len(shared) > 10
            for name, p in shared:
                assert p.device == pack.runtime.device
                assert p.data_ptr() == base[name.replace(".base_layer", "")], name
    finally:
        pack.release()


def test_packed_adapter_reloads_with_peft(make_cfg, tmp_path):
    from peft import PeftModel

    from sweeper.data import load_splits
    from sweeper.train.batches import encode_splits
    from sweeper.train.evaluate import evaluate
    from sweeper.train.models import build_model
    from sweeper.train.runtime import Runtime

    torch.set_num_threads(1)
    cfgs = [point(make_cfg, tmp_path, *p) for p in POINTS[:2]]
    records = run_packed(cfgs)
    cfg, record = cfgs[1], records[1]
    assert record["status"] == "ok", record["error"]
    adapter = Path(record["record_path"]).parent / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    torch.manual_seed(int(cfg.train.seed))  # the base as run_point builds it
    base, tokenizer = build_model(cfg.model, get_task("classification"), 2)
    model = PeftModel.from_pretrained(base, adapter)
    _, evals = encode_splits(load_splits(cfg.dataset), tokenizer, cfg, get_task("classification"))
    metrics = evaluate(
        model,
        evals["test"],
        get_task("classification"),
        tokenizer.pad_token_id,
        64,
        Runtime(torch.device("cpu"), nullcontext),
    )
    assert metrics["accuracy"] == record["metrics"]["accuracy"]
    assert metrics["loss"] == pytest.approx(record["metrics"]["test"]["loss"], abs=LOSS_TOL)


def test_interrupted_pack_resumes_to_the_same_result(make_cfg, tmp_path):
    torch.set_num_threads(1)
    points = [("fortune_computers_vs_rest", 2, 5), ("fortune_cookie_vs_rest", 2, 3)]
    straight = run_packed([point(make_cfg, tmp_path / "a", *p) for p in points])
    cfgs = [point(make_cfg, tmp_path / "b", *p) for p in points]
    calls = iter(range(100))
    with pytest.raises(Interrupted):
        run_packed(cfgs, PointContext(should_stop=lambda: next(calls) == 1))  # stop after the 2nd packed step
    first = [json.loads((run_dir_of(c) / "checkpoint" / "loop.json").read_text()) for c in cfgs]
    resumed = run_packed(cfgs)
    for a, b, before in zip(straight, resumed, first):
        assert b["train"]["resumed_from_step"] == 2
        assert_same_result(a, b)
        assert b["train"]["events"] == a["train"]["events"]
        assert b["cost"]["train_seconds"] > before["train_seconds"] > 0  # both segments counted
        examples = b["max_steps"] * 8
        assert b["cost"]["examples_per_second"] == pytest.approx(examples / b["cost"]["train_seconds"], rel=0.01)


def test_can_pack_and_grouping(make_cfg):
    base = make_cfg(*SMALL, "dataset=fortune_computers_vs_rest")
    assert can_pack(base, make_cfg(*SMALL, "dataset=wordnet_pos", "method.r=4", "train.lr=1e-3", "train.max_steps=9"))
    assert not can_pack(base, make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "train.seed=1")), (
        "a randomly initialised base depends on the seed"
    )
    assert not can_pack(base, make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "train.max_length=64"))
    assert not can_pack(base, make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "model=tiny_mistral"))
    assert not can_pack(base, make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "method=relora"))
    assert not can_pack(base, make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "method.warm_start_steps=2"))
    assert not can_pack(base, make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "method=qlora"))
    qlora = make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "method=qlora")
    assert can_pack(qlora, make_cfg(*SMALL, "dataset=wordnet_pos", "method=qlora", "method.target_modules=[q_proj]"))
    assert not can_pack(
        make_cfg(*SMALL, "dataset=wordnet_pos", "method=qlora", "method.quantize=targets"),
        make_cfg(
            *SMALL, "dataset=wordnet_pos", "method=qlora", "method.quantize=targets", "method.target_modules=[q_proj]"
        ),
    ), "targets decide which base layers are 4-bit"
    assert not can_pack(
        qlora,
        make_cfg(*SMALL, "dataset=fortune_computers_vs_rest", "method=qlora", "method.gradient_checkpointing=true"),
    )
    smol = ("model=smollm2", "dataset=fortune_computers_vs_rest")
    assert can_pack(make_cfg(*smol), make_cfg(*smol, "train.seed=3")), "a pretrained base does not depend on the seed"
    cfgs = [
        make_cfg(*SMALL, f"dataset={d}") for d in ("fortune_art_vs_rest", "fortune_law_vs_rest", "fortune_kids_vs_rest")
    ]
    cfgs.insert(1, make_cfg(*SMALL, "dataset=fortune_art_vs_rest", "method=relora"))
    assert group_points(cfgs, size=2) == [[0, 2], [1], [3]]
    assert group_points(cfgs, size=1) == [[0], [1], [2], [3]]


def test_packed_lm_matches_separate_runs(make_cfg, tmp_path):
    """Language modelling: embeddings, norms and LM head train in full per point (sliced copies)."""
    torch.set_num_threads(1)

    def cfg(where, r, steps):
        return make_cfg(
            "model=tiny_llama",
            "dataset=austen_lm",
            "+dataset.caps={train:300,validation:40}",
            f"method.r={r}",
            f"train.max_steps={steps}",
            "train.batch_size=4",
            "train.max_length=32",
            "train.eval_size=8",
            "train.log_every=1",
            "train.lr=1e-3",
            f"sweeper.results_dir={tmp_path / where}",
        )

    points = [(2, 4), (4, 3)]
    alone = [run_point(cfg("alone", *p)) for p in points]
    packed = run_packed([cfg("packed", *p) for p in points])
    for a, p in zip(alone, packed):
        assert_same_result(a, p)  # perplexity = exp(eval_loss): compared to a relative 1e-5
