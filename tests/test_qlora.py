"""QLoRA: a 4-bit NF4 base (bitsandbytes, CPU), LoRA on top; trains, saves, reloads, packs."""

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from sweeper.tasks import get as get_task
from sweeper.train import run_point
from sweeper.train.methods import MethodError, build_method
from sweeper.train.models import build_model
from sweeper.train.pack import run_packed

SMALL = (
    "model=tiny_llama",
    "method=qlora",
    "dataset=fortune_computers_vs_rest",
    "train.eval_size=48",
    "train.batch_size=8",
    "train.max_length=32",
    "train.log_every=1",
)


def qlora_model(cfg, num_labels=2):
    torch.manual_seed(int(cfg.train.seed))
    model, tokenizer = build_model(cfg.model, get_task("classification"), num_labels)
    method = build_method(cfg.method, cfg.model, get_task("classification"))
    return method, method.wrap(model), tokenizer


def test_base_is_4bit_nf4_and_heads_stay_float(make_cfg):
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    torch.set_num_threads(1)
    method, model, _ = qlora_model(make_cfg(*SMALL))
    lora = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(lora) == 4 * 7  # every target of the 4 layers
    for layer in lora:
        base = layer.get_base_layer()
        assert isinstance(base, bnb.nn.Linear4bit), type(base)
        assert base.weight.dtype == torch.uint8 and base.weight.quant_state is not None
        assert base.weight.quant_state.quant_type == "nf4" and not base.weight.requires_grad
        assert base.weight.numel() * 2 == base.in_features * base.out_features  # two 4-bit codes per byte
    assert method.summary()["quantized_layers"] == 28
    head = model.base_model.model.score.modules_to_save["default"]
    assert type(head) is nn.Linear and head.weight.dtype == torch.float32 and head.weight.requires_grad
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)


def test_what_peft_trains_in_full_is_never_quantised():
    """PEFT's modules_to_save rule is a plain suffix match: `score` also names `out_score`."""
    from sweeper.train.methods.qlora import linear_layers_to_quantize

    model = nn.Module()
    model.body, model.out_score, model.scores = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(4, 2)
    assert linear_layers_to_quantize(model, "all_linear", [], ["score"]) == ["body", "scores"]


def test_the_bitsandbytes_and_peft_hooks_qlora_relies_on_exist(make_cfg):
    """An upgrade that renames them would otherwise go unnoticed: bnb's switch off its CPU bf16
    repack, and PEFT's dispatch of a 4-bit base layer to its own 4-bit LoRA layer."""
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit as PeftLoraLinear4bit

    assert hasattr(bnb.nn.Linear4bit(4, 4, device="meta"), "support_avx512bf16_for_cpu")
    _, model, _ = qlora_model(make_cfg(*SMALL))
    assert any(isinstance(m, PeftLoraLinear4bit) for m in model.modules())


def test_qlora_trains_loss_falls(make_cfg):
    """Gradients reach the adapters through the 4-bit base: a fixed batch is fitted."""
    torch.set_num_threads(1)
    _, model, tokenizer = qlora_model(make_cfg(*SMALL))
    texts = [
        "the cat sat on the mat",
        "stocks fell sharply today",
        "a dog ran in the park",
        "bonds rallied at noon",
    ] * 2
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 0, 1] * 2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    history = []
    for _ in range(15):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(float(loss.detach()))
    assert history[-1] < 0.5 * history[0], history
    lora_a = next(p for n, p in model.named_parameters() if "lora_A" in n)
    assert lora_a.grad is None or torch.isfinite(lora_a.grad).all()


def test_qlora_point_saves_an_adapter_that_reloads(make_cfg):
    from peft import PeftModel

    from sweeper.data import load_splits
    from sweeper.train.batches import encode_splits
    from sweeper.train.evaluate import evaluate
    from sweeper.train.runtime import Runtime

    torch.set_num_threads(1)
    cfg = make_cfg(*SMALL, "train.max_steps=5")
    record = run_point(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["train"]["quant_type"] == "nf4" and record["train"]["quantized_layers"] == 28
    adapter = Path(record["record_path"]).parent / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    # A freshly built base (same seed), quantised the same way, plus the saved adapter = the same metrics.
    torch.manual_seed(int(cfg.train.seed))
    base, tokenizer = build_model(cfg.model, get_task("classification"), 2)
    build_method(cfg.method, cfg.model, get_task("classification")).quantize_base(base)
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
    assert metrics["loss"] == pytest.approx(record["metrics"]["test"]["loss"], abs=1e-6)


def test_qlora_points_pack_like_they_run_alone(make_cfg, tmp_path):
    torch.set_num_threads(1)
    points = [("fortune_computers_vs_rest", 4), ("fortune_cookie_vs_rest", 3)]

    def cfg(where, dataset, steps):
        return make_cfg(
            *SMALL, f"dataset={dataset}", f"train.max_steps={steps}", f"sweeper.results_dir={tmp_path / where}"
        )

    alone = [run_point(cfg("alone", *p)) for p in points]
    packed = run_packed([cfg("packed", *p) for p in points])
    for a, p in zip(alone, packed):
        assert a["status"] == p["status"] == "ok", (a["error"], p["error"])
        la, lp = (
            [json.loads(x)["loss"] for x in Path(r["record_path"]).with_name("metrics.jsonl").read_text().splitlines()]
            for r in (a, p)
        )
        assert la == pytest.approx(lp, abs=1e-5)
        assert a["metrics"]["accuracy"] == p["metrics"]["accuracy"]
        assert a["metrics"]["eval_loss"] == pytest.approx(p["metrics"]["eval_loss"], abs=1e-5)


def test_qlora_with_gradient_checkpointing_matches_without(make_cfg, tmp_path):
    """Recomputing activations in backward changes memory, not the result (dropout RNG is restored)."""
    torch.set_num_threads(1)
    plain = run_point(make_cfg(*SMALL, "train.max_steps=3", f"sweeper.results_dir={tmp_path}/a"))
    ckpt = run_point(
        make_cfg(*SMALL, "train.max_steps=3", "method.gradient_checkpointing=true", f"sweeper.results_dir={tmp_path}/b")
    )
    assert plain["status"] == ckpt["status"] == "ok", (plain["error"], ckpt["error"])
    assert ckpt["metrics"]["eval_loss"] == pytest.approx(plain["metrics"]["eval_loss"], abs=1e-5)


def test_qlora_config_errors(make_cfg):
    with pytest.raises(MethodError, match="warm_start_steps"):
        build_method(
            make_cfg(*SMALL, "method.warm_start_steps=3").method, make_cfg(*SMALL).model, get_task("classification")
        )
    with pytest.raises(MethodError, match="quant_type"):
        build_method(
            make_cfg(*SMALL, "method.quant_type=int3").method, make_cfg(*SMALL).model, get_task("classification")
        )


@pytest.mark.slow
def test_qlora_on_smollm2(make_cfg):
    """The pretrained SmolLM2-135M (local cache) with every Linear of its 30 layers in NF4."""
    record = run_point(
        make_cfg(
            "model=smollm2",
            "method=qlora",
            "dataset=fortune_computers_vs_rest",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.max_length=16",
            "train.eval_size=16",
        )
    )
    assert record["status"] == "ok", record["error"]
    assert record["train"]["quantized_layers"] == 30 * 7
    assert record["params"]["trainable"] == 461_952  # LoRA r=8 on q,v (460,800) + the 576x2 score head
