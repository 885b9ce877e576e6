"""PEFT's methods as grid options: each trains through PEFT's own classes, saves an adapter that
PeftModel.from_pretrained reloads to the record's test metric, and refuses what it cannot do in one line."""

import json

import pytest
import torch

from sweeper.runs import make_run_id as run_id
from sweeper.runs import run_dir_of
from sweeper.tasks import get as get_task
from sweeper.train import run_point
from sweeper.train.methods import METHODS, MethodError, build_method
from sweeper.train.pack.grouping import group_points, pack_key

ART = "dataset=fortune_art_vs_rest"
TINY = ("model=tiny_llama", "train.max_steps=3", "train.eval_size=32", "train.batch_size=8", "train.max_length=32")
GEN = ("dataset=debian_package_name_games", "model=tiny_llama", "train.max_steps=2", "train.eval_size=8")
GEN += ("train.batch_size=4", "train.max_length=24")
# Every named PEFT method of conf/method (lora and qlora have their own tests).
CLASSIFIERS = ["dora", "pissa", "olora", "lora_plus", "vera", "ia3", "loha", "lokr", "adalora", "oft"]
TEXT_ONLY = ["prompt_tuning", "prefix_tuning"]


def reloaded_scores(cfg, task_name: str) -> dict:
    """The point's test scores recomputed from a fresh base (same seed) + its saved adapter."""
    from peft import PeftModel

    from sweeper.data import load_splits
    from sweeper.train.batches import encode_splits
    from sweeper.train.evaluate import evaluate
    from sweeper.train.models import build_model
    from sweeper.train.runtime import setup_runtime

    task = get_task(task_name)
    splits = load_splits(cfg.dataset)
    torch.manual_seed(int(cfg.train.seed))  # a config-built base: the seed rebuilds its weights
    base, tokenizer = build_model(cfg.model, task, task.num_labels(splits))
    folder = run_dir_of(cfg) / "adapter"
    adalora = json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "ADALORA"
    # AdaLoRA's forward reads its trainable adapter's name (PEFT sets it in training mode only), and its
    # orthogonality penalty is a training loss: no part of a score (the run leaves it out too).
    model = PeftModel.from_pretrained(base, folder, is_trainable=adalora)
    if adalora:
        model.peft_config["default"].orth_reg_weight = 0.0
    _, evals = encode_splits(splits, tokenizer, cfg, task)
    runtime = setup_runtime(cfg.train)
    return evaluate(model, evals["test"], task, tokenizer.pad_token_id, 32, runtime, task.num_labels(splits))


@pytest.mark.parametrize("method", CLASSIFIERS)
def test_method_trains_a_classifier_and_its_adapter_reloads(make_cfg, method):
    torch.set_num_threads(1)
    cfg = make_cfg(ART, *TINY, f"method={method}")
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    adapter = record["adapter"]
    assert adapter["peft_type"] == getattr(METHODS[method], "PEFT_TYPE", "LORA")  # the LoRA variants: LORA
    assert adapter["size_bytes"] > 0 and adapter["config"]["task_type"] == "SEQ_CLS"
    assert 0 < record["params"]["trainable"] < record["params"]["total"]
    scores = reloaded_scores(cfg, "classification")
    assert scores["accuracy"] == record["metrics"]["accuracy"]
    assert scores["loss"] == pytest.approx(record["metrics"]["test"]["loss"], abs=1e-4)


@pytest.mark.parametrize("method", [*TEXT_ONLY, "dora", "vera", "ia3", "loha", "adalora", "oft"])
def test_method_trains_a_generator_and_its_adapter_reloads(make_cfg, method):
    torch.set_num_threads(1)
    cfg = make_cfg(*GEN, f"method={method}")
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["adapter"]["config"]["task_type"] == "CAUSAL_LM"
    scores = reloaded_scores(cfg, "generation")
    assert scores["chrf"] == pytest.approx(record["metrics"]["test"]["chrf"], abs=1e-6)


def test_variant_presets_reach_peft_and_record_what_they_set(make_cfg):
    dora = build_method(make_cfg(ART, *TINY, "method=dora").method, make_cfg(*TINY).model, get_task("classification"))
    assert dora.variant == {"use_dora": True} and dora.saves_adapter
    # Any LoraConfig field through method.config, on lora itself: rank_pattern, layers_to_transform.
    cfg = make_cfg(ART, *TINY, "+method.config.layers_to_transform=[0,1]", "+method.config.rank_pattern={q_proj: 2}")
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    config = record["adapter"]["config"]
    assert config["layers_to_transform"] == [0, 1] and config["rank_pattern"] == {"q_proj": 2}
    assert record["params"]["trainable"] < run_point(make_cfg(ART, *TINY))["params"]["trainable"]


def test_lora_plus_keeps_b_faster_than_a_through_the_schedule(make_cfg):
    from sweeper.train.loop import make_optimizer, set_lr
    from sweeper.train.models import build_model

    cfg = make_cfg(ART, *TINY, "method=lora_plus", "method.loraplus_lr_ratio=4")
    task = get_task("classification")
    method = build_method(cfg.method, cfg.model, task)
    model = method.wrap(build_model(cfg.model, task, 2)[0])
    optimizer = make_optimizer(method, model, cfg.train)
    lr = set_lr(optimizer, method, model, 5, cfg.train)
    ratios = sorted({round(g["lr"] / lr, 6) for g in optimizer.param_groups if g["params"]})
    assert ratios == [1.0, 4.0]  # A (and the head) at the schedule's lr, B at 4x it


def test_adalora_allocates_its_budget_after_every_step(make_cfg, monkeypatch):
    from peft.tuners.adalora import AdaLoraModel

    steps = []
    original = AdaLoraModel.update_and_allocate

    def spy(self, global_step):
        grads = [p.grad is not None for n, p in self.model.named_parameters() if "lora_E" in n]
        steps.append((global_step, any(grads)))
        return original(self, global_step)

    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", spy)
    record = run_point(make_cfg(ART, *TINY, "method=adalora", "method.r=4"))
    assert record["status"] == "ok", record["error"]
    assert steps == [(0, True), (1, True), (2, True)]  # after optimizer.step, while the gradients are there
    assert record["train"]["target_r"] == 4 and record["train"]["init_r"] == 6
    assert record["adapter"]["config"]["total_step"] == 3


def test_method_peft_trains_an_adapter_config_json_and_its_content_is_the_run_id(make_cfg, tmp_path):
    config = {"peft_type": "LOHA", "r": 4, "alpha": 4, "target_modules": ["q_proj", "v_proj"], "task_type": None}
    first, second = tmp_path / "a" / "adapter_config.json", tmp_path / "b" / "adapter_config.json"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text(json.dumps(config))
    cfg = make_cfg(ART, *TINY, "method=peft", f"method.adapter_config={first}")
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["adapter"]["peft_type"] == "LOHA" and record["adapter"]["config"]["r"] == 4
    assert sorted(record["adapter"]["config"]["target_modules"]) == ["q_proj", "v_proj"]
    assert run_id(make_cfg(ART, *TINY, "method=peft", f"method.adapter_config={second}")) == record["run_id"]
    second.write_text(json.dumps({**config, "r": 2}))
    assert run_id(make_cfg(ART, *TINY, "method=peft", f"method.adapter_config={second}")) != record["run_id"]


def test_method_peft_reaches_a_method_without_a_preset_and_the_collector_has_its_columns(make_cfg, tmp_path):
    from sweeper.results import collect

    record = run_point(make_cfg(ART, *TINY, "method=peft", "method.peft_type=hra", "method.r=2"))
    assert record["status"] == "ok", record["error"]
    assert record["adapter"]["peft_type"] == "HRA" and record["adapter"]["config"]["r"] == 2
    [row] = collect.load_records(tmp_path / "results").to_dict("records")
    assert (row["method"], row["peft_type"], row["adapter_bytes"]) == ("peft", "HRA", record["adapter"]["size_bytes"])
    assert row["seconds_per_step"] == pytest.approx(record["cost"]["train_seconds"] / 3, abs=2e-4)  # 3 decimals


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["method=dora", "+method.config.use_dorra=true"], "method.config.use_dorra is no field of PEFT's LoraConfig"),
        (["method=dora", "+method.config.vera_dropout=0.1"], "(a field of VeraConfig)"),
        (["method=loha", "+method.config.alpah=2"], "did you mean alpha"),
        (["method=peft", "method.peft_type=LORAA"], "method.peft_type='LORAA' is no PEFT method; did you mean LORA"),
        (["method=vera", "method.r=0"], "method.r must be an integer >= 1 or null, got 0"),
        (["method=prompt_tuning"], "method=prompt_tuning prepends virtual tokens to generated text"),
        (["method=dora", "+method.config.r=4"], "method.config.r: set by method.r"),
        (["method=dora", "method.warm_start_steps=2"], "a warm start is plain LoRA's"),
        (["method=relora", "+method.config.use_dora=true"], "method=relora merges plain LoRA by hand"),
    ],
)
def test_bad_method_settings_fail_in_one_line(make_cfg, overrides, expected):
    record = run_point(make_cfg(ART, *TINY, *overrides))
    assert record["status"] == "failed"
    assert expected in record["error"] and "\n" not in record["error"], record["error"]


def test_a_packed_dora_request_trains_alone_and_says_why(make_cfg, capsys):
    cfgs = [make_cfg(ART, *TINY, "method=dora", f"method.r={r}") for r in (4, 8)]
    cfgs += [make_cfg(ART, *TINY, "method=lora", f"method.r={r}") for r in (4, 8)]  # a pack of two
    assert pack_key(cfgs[0]) is None and pack_key(cfgs[2]) is not None
    assert group_points(cfgs, size=4) == [[0], [1], [2, 3]]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sweeper.pack=4: 2 point(s) train alone: method=dora sets LoraConfig fields (use_dora) and the packed "
        "forward is plain LoRA (docs/packing.md)"
    ]


def test_the_packed_forward_refuses_a_lora_variant_layer(make_cfg):
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    from sweeper.train.methods.lora import lora_config
    from sweeper.train.models import build_model
    from sweeper.train.pack.layers import check_plain_lora

    cfg = make_cfg(ART, *TINY, "method=dora")
    task = get_task("classification")
    model = get_peft_model(
        build_model(cfg.model, task, 2)[0], lora_config(cfg.method, cfg.model, task, {"use_dora": True})
    )
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    with pytest.raises(ValueError, match=r"DoraLinearVariant is no plain LoRA"):
        check_plain_lora("q_proj", layer)


def test_capabilities_are_declared_by_each_method(make_cfg):
    task = get_task("classification")

    def method(*overrides):
        cfg = make_cfg(ART, *TINY, *overrides)
        return build_method(cfg.method, cfg.model, task)

    assert method("method=lora").fsdp_refusal() is None and method("method=full").fsdp_refusal() is None
    assert "warm_start_steps" in method("method=lora", "method.warm_start_steps=2").fsdp_refusal()
    assert method("method=qlora").base_in_4bit and not method("method=dora").base_in_4bit
    assert method("method=pissa").saves_adapter and not method("method=relora").saves_adapter
    for name in ("vera", "adalora", "relora", "dora"):
        assert method(f"method={name}").fsdp_refusal(), name
    with pytest.raises(MethodError, match="task classification is not supported"):
        method("method=prefix_tuning")


def test_qdora_trains_a_lora_variant_on_a_4bit_base(make_cfg):
    """QLoRA's 4-bit base takes a LoRA variant where PEFT supports it: DoRA on bitsandbytes Linear4bit."""
    record = run_point(make_cfg(ART, *TINY, "method=qlora", "+method.config.use_dora=true"))
    assert record["status"] == "ok", record["error"]
    assert record["adapter"]["config"]["use_dora"] is True and record["train"]["quantized_layers"] == 28
