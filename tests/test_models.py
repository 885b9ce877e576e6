"""Every model family: builds, runs forward, takes a LoRA step, and LoRA trains a small fraction."""

import pytest
import torch

from sweeper.config import compose
from sweeper.tasks import get as get_task
from sweeper.train.methods import MethodError, build_method
from sweeper.train.models import build_model, count_parameters

FAMILIES = ["tiny_llama", "tiny_mistral", "tiny_t5", "lstm", "minilm"]


def _batch(tokenizer, task, n_labels=3):
    enc = tokenizer(["the cat sat on the mat", "a quick brown fox jumps"], padding=True, return_tensors="pt")
    labels = (
        enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        if task == "lm"
        else torch.tensor([0, n_labels - 1])
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


@pytest.mark.parametrize("model_name", FAMILIES)
def test_lora_step_trains_only_a_fraction(model_name):
    cfg = compose(f"model={model_name}", "method=lora", "method.r=4")
    torch.manual_seed(0)
    full_model, _ = build_model(cfg.model, get_task("classification"), 3)
    _, full_total = count_parameters(full_model)
    model, tokenizer = build_model(cfg.model, get_task("classification"), 3)
    model = build_method(cfg.method, cfg.model, get_task("classification")).wrap(model)
    trainable, _ = count_parameters(model)
    assert 0 < trainable < 0.25 * full_total, (trainable, full_total)

    lora_params = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_params, "no LoRA layers were attached"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(**_batch(tokenizer, "classification"))
    assert out.logits.shape == (2, 3)
    out.loss.backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if n in lora_params and not torch.equal(p, lora_params[n])]
    assert changed, "a LoRA step left every lora_B unchanged"


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_mistral", "lstm"])
def test_causal_lm_forward(model_name):
    cfg = compose(f"model={model_name}")
    model, tokenizer = build_model(cfg.model, get_task("lm"))
    out = model(**_batch(tokenizer, "lm"))
    assert out.logits.shape[-1] == len(tokenizer)
    assert torch.isfinite(out.loss) and out.loss > 0


def test_lstm_lora_uses_target_parameters():
    from peft.tuners.lora import ParamWrapper

    cfg = compose("model=lstm", "method=lora")
    model, _ = build_model(cfg.model, get_task("classification"), 2)
    model = build_method(cfg.method, cfg.model, get_task("classification")).wrap(model)
    assert any(isinstance(m, ParamWrapper) for m in model.modules())


def test_dropout_cannot_silently_vanish_when_linear_and_parameter_targets_mix():
    cfg = compose("model=lstm", "method=lora", "method.target_modules=[head]", "method.dropout=0.1")
    model, _ = build_model(cfg.model, get_task("classification"), 2)
    with pytest.raises(MethodError, match=r"method\.dropout=0\.1 cannot apply"):
        build_method(cfg.method, cfg.model, get_task("classification")).wrap(model)
    cfg = compose("model=lstm", "method=lora", "method.target_modules=[head]", "method.dropout=0")
    model, _ = build_model(cfg.model, get_task("classification"), 2)
    build_method(cfg.method, cfg.model, get_task("classification")).wrap(model)  # explicit 0: fine


@pytest.mark.parametrize("r", [0, -2, 100000])
def test_bad_rank_is_a_one_line_error(r):
    cfg = compose("model=tiny_llama", "method=lora", f"method.r={r}")
    model, _ = build_model(cfg.model, get_task("classification"), 2)
    with pytest.raises(MethodError, match="method.r"):
        build_method(cfg.method, cfg.model, get_task("classification")).wrap(model)


def test_full_trains_everything():
    cfg = compose("model=tiny_llama", "method=full")
    model, _ = build_model(cfg.model, get_task("classification"), 2)
    model = build_method(cfg.method, cfg.model, get_task("classification")).wrap(model)
    trainable, total = count_parameters(model)
    assert trainable == total


def test_lora_warm_start_switches_phase_and_counts_the_adapter():
    cfg = compose("model=tiny_llama", "method=lora", "method.warm_start_steps=2")
    model, _ = build_model(cfg.model, get_task("classification"), 2)
    method = build_method(cfg.method, cfg.model, get_task("classification"))
    model = method.wrap(model)
    low_rank, total = count_parameters(model)
    assert low_rank < 0.25 * total and not method.saves_adapter  # the adapter alone would miss the warm start
    method.before_step(0, model)
    assert count_parameters(model)[0] > 0.9 * total - low_rank
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    method.before_step(2, model)
    assert count_parameters(model)[0] == low_rank
