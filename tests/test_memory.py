"""Memory: the estimate's parts against the real model, a refusal at planning, the dry run's
estimates, bf16 loading, quantise-while-loading vs after the build, gradient checkpointing."""

import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sweeper.memory import estimate_point
from sweeper.memory.inventory import model_shape
from sweeper.results.collect import flatten_record
from sweeper.runs import make_run_id
from sweeper.tasks import get as get_task
from sweeper.train import run_point
from sweeper.train.methods import build_method
from sweeper.train.models import build_model, count_parameters
from sweeper.train.point import float32_trainable
from sweeper.train.runtime import Runtime

REPO = Path(__file__).resolve().parents[1]
SMALL = ("dataset=fortune_computers_vs_rest", "train.eval_size=32", "train.batch_size=8", "train.max_length=32")


def plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(
    "model, task, dataset",
    [
        ("tiny_llama", "classification", "fortune_computers_vs_rest"),
        ("tiny_llama", "lm", "austen_lm"),
        ("tiny_t5", "generation", "gettext_en_to_de"),
        ("lstm", "classification", "fortune_computers_vs_rest"),
        ("minilm", "classification", "fortune_computers_vs_rest"),
        ("smollm2", "classification", "fortune_computers_vs_rest"),
    ],
)
def test_the_inventory_counts_what_the_model_holds(make_cfg, model, task, dataset):
    """From files and config alone (no torch), the parameters the built model has; and LoRA's and
    full fine-tuning's trainable counts as PEFT makes them."""
    cfg = make_cfg(f"model={model}", f"dataset={dataset}")
    built, _ = build_model(cfg.model, get_task(task), 2)
    shape = model_shape(plain(cfg)["model"], get_task(task))
    real = count_parameters(built)[1]
    assert abs(shape.parameters - real) <= 0.001 * real, (shape.parameters, real)
    for method in ("lora", "full"):
        cfg = make_cfg(f"model={model}", f"dataset={dataset}", f"method={method}")
        trainable = count_parameters(
            build_method(cfg.method, cfg.model, get_task(task)).wrap(build_model(cfg.model, get_task(task), 2)[0])
        )[0]
        estimated = estimate_point(plain(cfg)).trainable
        assert abs(estimated - trainable) <= 0.01 * trainable, (method, estimated, trainable)


def sweep(tmp_path, *overrides):
    cmd = [sys.executable, "-m", "sweeper", "-m", "hydra/launcher=local", f"sweeper.results_dir={tmp_path / 'results'}"]
    cmd += [f"hydra.sweep.dir={tmp_path / 'jobs'}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_a_point_over_max_memory_is_refused_at_planning_in_one_line(tmp_path):
    proc = sweep(tmp_path, "dataset=fortune_computers_vs_rest", "model=tiny_llama,smollm2", "train.max_memory_gb=2.5")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "smollm2 lora" in errors[0] or "model=smollm2" in errors[0]
    assert "estimated peak" in errors[0] and "exceeds train.max_memory_gb=2.5" in errors[0]
    assert "would fit: method.gradient_checkpointing=true" in errors[0] and "train.batch_size=" in errors[0]
    assert not (tmp_path / "results" / "runs").exists()  # nothing ran, nothing recorded
    jobs = [p for p in (tmp_path / "jobs").rglob("*.pkl") if not p.name.startswith("context-")]
    assert not jobs  # nothing submitted (the launch's context is saved before planning)


def test_dry_run_prints_the_estimate_per_configuration(tmp_path):
    proc = sweep(
        tmp_path, "dataset=glob(fortune_computers_vs_*)", "model=tiny_llama", "method=lora,full", "sweeper.dry_run=true"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    start = lines.index("memory estimate per configuration (docs/memory.md):")
    rows = lines[start + 1 : start + 3]
    assert rows[0].startswith("  tiny_llama lora batch 16 x 64: 0.") and rows[0].endswith("; 2 point(s)"), rows
    assert rows[1].startswith("  tiny_llama full batch 16 x 64: ") and "optimizer" in rows[1], rows
    assert not (tmp_path / "results" / "runs").exists()


def test_a_frozen_base_loads_in_bf16_where_the_point_computes_in_it(make_cfg):
    """Runtime.bf16 is what a CUDA device with bf16 gives a train.dtype=bfloat16 point; the load
    rule and the model it builds are the same on any device (CPU here, autocast standing in)."""
    cpu = torch.device("cpu")
    in_bf16, in_fp32 = Runtime(cpu, nullcontext, bf16=True), Runtime(cpu, nullcontext)
    task = get_task("classification")
    cfg = make_cfg("model=tiny_llama", *SMALL)
    lora = build_method(cfg.method, cfg.model, task)
    assert lora.loading(in_bf16).dtype == torch.bfloat16 and lora.loading(in_fp32).dtype == torch.float32
    full = make_cfg("model=tiny_llama", "method=full", *SMALL)
    assert build_method(full.method, full.model, task).loading(in_bf16).dtype == torch.float32  # trains its weights
    model, _ = build_model(cfg.model, task, 2, lora.loading(in_bf16))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model = lora.wrap(model)
    float32_trainable(model)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}
    ids = torch.randint(5, 1000, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    estimate = {"method": plain(cfg)["method"], "train": {**plain(cfg)["train"], "dtype": "bfloat16", "device": "cuda"}}
    assert estimate_point({**plain(cfg), **estimate}).weights_dtype == "bfloat16"


def test_quantising_while_loading_records_what_quantising_after_the_build_does(make_cfg, tmp_path):
    task = get_task("classification")
    cfg = make_cfg("model=tiny_llama", *SMALL)
    model, tokenizer = build_model(cfg.model, task, 2)
    model.save_pretrained(tmp_path / "tiny", max_shard_size="2MB")  # sharded, as big checkpoints are
    tokenizer.save_pretrained(tmp_path / "tiny")
    assert len(list((tmp_path / "tiny").glob("*.safetensors"))) > 1
    folder = ("model.source=path", f"model.name_or_path={tmp_path / 'tiny'}", "method=qlora", "train.max_steps=3")
    records = {}
    for at in ("load", "build"):
        cfg = make_cfg(
            "model=tiny_llama", *SMALL, *folder, f"method.quantize_at={at}", f"sweeper.results_dir={tmp_path / at}"
        )
        loading = build_method(cfg.method, cfg.model, task).loading(Runtime(torch.device("cpu"), nullcontext))
        assert (loading.quantization is not None) == (at == "load")
        records[at] = run_point(cfg)
    load, build = records["load"], records["build"]
    assert load["status"] == build["status"] == "ok", (load.get("error"), build.get("error"))
    assert load["run_id"] == build["run_id"]  # where it quantises is no part of the result
    assert load["train"]["quantized_layers"] == build["train"]["quantized_layers"] == 28
    for split in ("validation", "test"):
        assert load["metrics"][split]["loss"] == pytest.approx(build["metrics"][split]["loss"], abs=1e-5)
        assert load["metrics"][split]["accuracy"] == build["metrics"][split]["accuracy"]


def test_gradient_checkpointing_changes_memory_not_results(make_cfg, tmp_path):
    on = make_cfg("model=tiny_llama", *SMALL, "train.max_steps=3", "method.gradient_checkpointing=true")
    off = make_cfg("model=tiny_llama", *SMALL, "train.max_steps=3", f"sweeper.results_dir={tmp_path / 'off'}")
    with_it, without = run_point(on), run_point(off)
    assert with_it["status"] == without["status"] == "ok", with_it.get("error")
    assert with_it["metrics"]["test"]["loss"] == pytest.approx(without["metrics"]["test"]["loss"], abs=1e-5)
    assert estimate_point(plain(on)).parts["activations"] < estimate_point(plain(off)).parts["activations"]
    for record in (with_it, without):  # the estimate travels beside the measured peak, into the tables
        estimate = record["cost"]["memory_estimate"]
        assert (
            estimate["total_mb"] == estimate_point(record["config"]).total_mb and record["cost"]["peak_memory_mb"] > 0
        )
        assert flatten_record(record, "record.json")["estimated_memory_mb"] == estimate["total_mb"]
    lstm = run_point(make_cfg("model=lstm", *SMALL, "method.gradient_checkpointing=true"))
    assert lstm["status"] == "failed" and "has no gradient checkpointing" in lstm["error"]


def test_new_method_keys_keep_finished_points_run_ids(make_cfg):
    """gradient_checkpointing=false (the default) and the bookkeeping keys are no part of the id."""
    config = plain(make_cfg("model=tiny_llama"))
    before = {**config, "method": {k: v for k, v in config["method"].items() if k != "gradient_checkpointing"}}
    assert make_run_id(config) == make_run_id(before)
    assert make_run_id({**config, "method": {**config["method"], "gradient_checkpointing": True}}) != make_run_id(
        config
    )
    full = plain(make_cfg("method=full"))
    assert make_run_id(full) == make_run_id(
        {**full, "method": {k: v for k, v in full["method"].items() if k != "trains_base"}}
    )


def test_quantising_minilm_while_loading_leaves_what_trains_in_float32(make_cfg):
    """transformers matches a skipped name as a path prefix or suffix; PEFT trains `pooler` at any
    depth (bert.pooler.dense): the skip list names it by path, as quantising after the build does."""
    import bitsandbytes as bnb

    task = get_task("classification")
    cfg = make_cfg("model=minilm", "method=qlora", *SMALL)
    method = build_method(cfg.method, cfg.model, task)
    loading = method.loading(Runtime(torch.device("cpu"), nullcontext))
    assert loading.quantization is not None and "pooler.dense" in loading.quantization.llm_int8_skip_modules
    model = method.wrap(build_model(cfg.model, task, 2, loading)[0])
    quantized = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert quantized and not any("pooler" in name or "classifier" in name for name in quantized)
    assert all(".encoder.layer." in name for name in quantized)


def test_the_estimate_is_float32_for_a_base_that_changes_and_unknown_for_bad_values(make_cfg):
    on_gpu = ("train.dtype=bfloat16", "train.device=cuda")
    assert estimate_point(plain(make_cfg("model=tiny_llama", *on_gpu))).weights_dtype == "bfloat16"
    for method in ("relora", "full", "qlora"):  # merges into it, trains it, quantises it (the rest float32)
        assert (
            estimate_point(plain(make_cfg("model=tiny_llama", f"method={method}", *on_gpu))).weights_dtype == "float32"
        )
    assert (
        estimate_point(plain(make_cfg("model=tiny_llama", "train.dtype=bfloat16"))).weights_dtype == "float32"
    )  # auto
    bad = plain(make_cfg("model=tiny_llama"))
    bad["train"]["batch_size"] = "abc"  # the worker's setting check says so in one line; the estimate stays out of it
    assert estimate_point(bad) is None
