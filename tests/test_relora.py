"""ReLoRA: merge + re-init is exact, the jagged schedule, the optimizer reset, training across restarts,
other model families, a Hydra grid beside lora/full, and checkpoint/resume mid-run.

Everything runs on CPU with 1 thread on tiny models and a synthetic corpus (a seeded toy grammar),
so no test depends on a dataset build except the grid test (dataset=fortune_computers_vs_rest).
"""

import contextlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sweeper.paths import REPO_ROOT as REPO
from sweeper.tasks import get as get_task
from sweeper.train import Interrupted
from sweeper.train.batches import encode_classification, encode_lm
from sweeper.train.evaluate import evaluate
from sweeper.train.loop import train
from sweeper.train.methods import MethodError, build_method
from sweeper.train.methods.relora import jagged_scale, merge_and_reinit, reset_optimizer_state, restart_at_or_before
from sweeper.train.models import build_model, build_tokenizer
from sweeper.train.runtime import Runtime

torch.set_num_threads(1)

TINY_LLAMA = (
    "model=tiny_llama",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
)
CPU = Runtime(torch.device("cpu"), contextlib.nullcontext)
MERGE_TOL = 1e-5  # max |logit change| from a merge + re-init (float32; measured ~6e-7)


# ---------------------------------------------------------------- data and helpers
def toy_corpus(n: int, seed: int) -> list[str]:
    """Sentences of a small seeded grammar: structure a tiny model learns within a few dozen steps."""
    rng = np.random.default_rng(seed)
    adj = ["red", "small", "old", "quiet", "bright", "heavy"]
    noun = ["cat", "house", "river", "letter", "garden", "window", "horse"]
    verb = ["sees", "finds", "likes", "follows", "paints"]
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return [f"the {pick(adj)} {pick(noun)} {pick(verb)} the {pick(adj)} {pick(noun)} ." for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    from sweeper.config import compose

    return build_tokenizer(compose("model=tiny_llama").model)


@pytest.fixture(scope="module")
def lm_data(tokenizer):
    train_enc = encode_lm({"text": toy_corpus(600, 0)}, tokenizer, 32)
    eval_enc = encode_lm({"text": toy_corpus(60, 1)}, tokenizer, 32)
    return train_enc, eval_enc


def build(cfg, task: str, num_labels: int = 2):
    torch.manual_seed(int(cfg.train.seed))
    model, tokenizer = build_model(cfg.model, get_task(task), num_labels)
    method = build_method(cfg.method, cfg.model, get_task(task))
    return method.wrap(model), method, tokenizer


def fit(cfg, enc, task: str, run_dir, should_stop=lambda: False):
    model, method, tokenizer = build(cfg, task)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = train(
        model=model,
        method=method,
        train_enc=enc,
        task=get_task(task),
        pad_id=tokenizer.pad_token_id,
        train_cfg=cfg.train,
        run_dir=run_dir,
        runtime=CPU,
        should_stop=should_stop,
    )
    return model, method, result


@torch.no_grad()
def logits(model, ids):
    model.eval()
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    model.train()
    return out


def adam_step(model, optimizer, batch):
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- merge
def test_merge_and_reinit_keeps_logits_and_parameter_objects(make_cfg, lm_data):
    cfg = make_cfg(*TINY_LLAMA, "method=relora")
    model, method, _ = build(cfg, "lm")
    optimizer = torch.optim.AdamW(method.optimizer_parameters(model), lr=1e-2)
    params_before = [id(p) for g in optimizer.param_groups for p in g["params"]]
    ids = torch.tensor(lm_data[0].input_ids[:4])
    for restart in range(3):
        for _ in range(3):  # make B non-zero, so the merge has something to move
            adam_step(model, optimizer, {"input_ids": ids, "labels": ids})
        a_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}
        before = logits(model, ids)
        merge_and_reinit(model)
        after = logits(model, ids)
        assert (after - before).abs().max().item() <= MERGE_TOL, f"restart {restart}"
        for name, p in model.named_parameters():
            if "lora_B" in name:
                assert torch.count_nonzero(p) == 0, name
            if "lora_A" in name:  # random again (the reference code's bug zeroes A: no gradient reaches B)
                assert p.abs().sum() > 0 and not torch.equal(p, a_before[name]), name
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == params_before
    from sweeper.train.methods.lora import lora_layers

    assert not any(layer.merged for layer in lora_layers(model))


def test_lm_keeps_embeddings_norms_and_head_full_rank(make_cfg):
    model, _, _ = build(make_cfg(*TINY_LLAMA, "method=relora"), "lm")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for part in ["embed_tokens", "lm_head", "input_layernorm", "post_attention_layernorm", "model.norm"]:
        assert any(part in n and "modules_to_save" in n for n in trainable), part
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all("base_layer" in n or "original_module" in n for n in frozen), frozen[:5]


# ---------------------------------------------------------------- schedule
def test_jagged_schedule_shape():
    kw = dict(warm_start=20, merge_every=25, restart_warmup=5, lr_multiplier=2.0, warmup=10, total=120, min_ratio=0.1)
    env = lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 110))  # noqa: E731
    scale = [jagged_scale(s, **kw) for s in range(kw["total"])]
    restarts = [20, 45, 70, 95]
    assert [s for s in range(120) if restart_at_or_before(s, 20, 25) == s] == restarts
    assert scale[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # first warmup
    assert scale[10:20] == pytest.approx([env(s) for s in range(10, 20)])  # full-rank phase: no multiplier
    for r in restarts:
        assert scale[r] == 0.0
        top = 2.0 * env(r + 5)  # each warmup is linear over restart_warmup steps onto the envelope
        assert scale[r : r + 5] == pytest.approx([top * k / 5 for k in range(5)])
        assert scale[r + 5] == pytest.approx(top)
    outside = [s for s in range(20, 120) if all(not r <= s < r + 5 for r in restarts)]
    assert [scale[s] for s in outside] == pytest.approx([2.0 * env(s) for s in outside])
    assert scale[-1] == pytest.approx(2.0 * env(119))  # the cosine envelope reaches ~min_lr_ratio
    assert env(120) == pytest.approx(0.1)


def test_no_warm_start_keeps_the_first_warmup():
    kw = dict(warm_start=0, merge_every=10, restart_warmup=3, lr_multiplier=1.0, warmup=4, total=40, min_ratio=0.1)
    scale = [jagged_scale(s, **kw) for s in range(40)]
    assert scale[0] == pytest.approx(0.25) and scale[3] == pytest.approx(1.0)  # no restart at step 0
    assert [s for s in range(40) if scale[s] == 0.0] == [10, 20, 30]


# ---------------------------------------------------------------- optimizer reset
@pytest.mark.parametrize("mode,ratio", [("magnitude", 0.9), ("magnitude", 0.99), ("random", 0.8), ("full", 0.0)])
def test_optimizer_reset_prunes_only_lora_state(make_cfg, lm_data, mode, ratio):
    cfg = make_cfg(*TINY_LLAMA, "method=relora")
    model, method, _ = build(cfg, "lm")
    optimizer = torch.optim.AdamW(method.optimizer_parameters(model), lr=1e-3)
    ids = torch.tensor(lm_data[0].input_ids[:4])
    for _ in range(3):
        adam_step(model, optimizer, {"input_ids": ids, "labels": ids})
    lora = {id(p) for p in method._lora_params}
    before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    kept = reset_optimizer_state(optimizer, method._lora_params, mode, ratio)

    expected = 0.0 if mode == "full" else 1.0 - ratio
    assert kept == pytest.approx(expected, abs=0.01)
    if mode == "full":  # dropped: the next step is a fresh AdamW's first
        assert not lora & {id(p) for p in optimizer.state}
        assert all(torch.equal(s[k], before[id(p)][k]) for p, s in optimizer.state.items() for k in s)
        return
    n_kept = n_total = 0
    for p, state in optimizer.state.items():
        old = before[id(p)]
        if id(p) not in lora:  # embeddings, norms, head: bitwise untouched
            assert all(torch.equal(state[k], old[k]) for k in state), "non-LoRA state changed"
            continue
        keep = state["exp_avg_sq"] != 0
        # ONE mask for both moments: no entry keeps exp_avg while its exp_avg_sq was zeroed.
        assert not torch.any((state["exp_avg"] != 0) & ~keep)
        assert torch.equal(state["exp_avg_sq"][keep], old["exp_avg_sq"][keep])
        if mode == "magnitude" and keep.any() and (~keep).any():  # the largest |exp_avg_sq| survive
            assert old["exp_avg_sq"][keep].min() >= old["exp_avg_sq"][~keep].max()
        n_kept, n_total = n_kept + int(keep.sum()), n_total + keep.numel()
    assert n_kept / n_total == pytest.approx(expected, abs=0.01)


def test_full_optimizer_reset_equals_a_fresh_adamw():
    p = torch.nn.Parameter(torch.randn(4, 6))
    optimizer = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
    for _ in range(3):
        p.grad = torch.randn(4, 6)
        optimizer.step()
    reset_optimizer_state(optimizer, [p], "full", 0.0)
    q = torch.nn.Parameter(p.detach().clone())
    fresh = torch.optim.AdamW([q], lr=0.1, weight_decay=0.01)
    for _ in range(2):
        grad = torch.randn(4, 6)
        p.grad, q.grad = grad.clone(), grad.clone()
        optimizer.step()
        fresh.step()
    assert torch.equal(p, q)
    assert all(torch.equal(optimizer.state[p][k], fresh.state[q][k]) for k in fresh.state[q])


def test_a_warm_start_frees_the_base_weights_adam_state(make_cfg, lm_data, tmp_path):
    cfg = make_cfg(*TINY_LLAMA, "method=relora", "method.warm_start_steps=3", "method.merge_every=4")
    model, method, _ = build(cfg, "lm")
    optimizer = torch.optim.AdamW(method.optimizer_parameters(model), lr=1e-3)
    ids = torch.tensor(lm_data[0].input_ids[:4])
    base = {id(p) for p in method._base_params}
    for step in range(5):
        method.before_step(step, model)
        adam_step(model, optimizer, {"input_ids": ids, "labels": ids})
        method.after_step(step, model, optimizer)
        held = base & {id(p) for p in optimizer.state}
        assert bool(held) == (step < 2), f"step {step}: base weights' Adam state {'missing' if step < 2 else 'kept'}"


def test_restart_warmup_defaults_to_a_tenth_of_the_cycle(make_cfg):
    cfg = make_cfg(*TINY_LLAMA, "method=relora", "method.merge_every=300")
    assert build_method(cfg.method, cfg.model, get_task("lm")).restart_warmup_steps == 30
    cfg = make_cfg(*TINY_LLAMA, "method=relora", "method.merge_every=1")  # below the cycle, always
    assert build_method(cfg.method, cfg.model, get_task("lm")).restart_warmup_steps == 0


# ---------------------------------------------------------------- training
def test_loss_keeps_falling_across_three_restarts(make_cfg, lm_data, tmp_path):
    cfg = make_cfg(
        *TINY_LLAMA,
        "method=relora",
        "method.merge_every=12",
        "method.restart_warmup_steps=3",
        "train.max_steps=48",
        "train.warmup_steps=3",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.log_every=1",
    )
    train_enc, eval_enc = lm_data
    model, method, result = fit(cfg, train_enc, "lm", tmp_path / "run")
    merges = [e for e in result.events if e["event"] == "merge"]
    assert [e["step"] for e in merges] == [12, 24, 36] and method.merges == 3
    losses = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [(row["step"], row["loss"]) for row in losses if "loss" in row]
    cycle_means = [np.mean([loss for s, loss in losses if lo < s <= lo + 12]) for lo in (0, 12, 24, 36)]
    assert all(b < a for a, b in zip(cycle_means, cycle_means[1:])), cycle_means
    ppl = evaluate(model, eval_enc, get_task("lm"), 0, 16, CPU)["perplexity"]
    assert ppl < 0.5 * len(build_tokenizer(cfg.model)), ppl  # far below uniform over the vocabulary
    summary = method.summary()
    assert summary["merges"] == 3 and len(summary["lr_schedule"]) == 48
    assert summary["lr_schedule"][12] == 0.0 and summary["lr_schedule"][24] == 0.0
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and "original_module" not in n)
    assert 0 < summary["low_rank_trainable"] < base


CLASSIFY_TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "stocks fell sharply today",
    "the market rallied at noon",
    "my cat sleeps all day",
    "bonds and shares rose",
]


@pytest.mark.parametrize("family", ["lstm", "tiny_t5"])
def test_relora_on_other_families(make_cfg, tmp_path, family, tokenizer):
    cfg = make_cfg(
        f"model={family}",
        "method=relora",
        "method.r=4",
        "method.merge_every=3",
        "method.restart_warmup_steps=1",
        "train.max_steps=8",
        "train.batch_size=4",
        "train.warmup_steps=1",
    )
    split = {"text": CLASSIFY_TEXTS * 4, "label": [0, 0, 1, 1, 0, 1] * 4}
    enc = encode_classification(split, tokenizer, 16)
    model, method, result = fit(cfg, enc, "classification", tmp_path / family)
    assert method.merges == 2 and math.isfinite(result.final_loss)
    optimizer = torch.optim.AdamW(method.optimizer_parameters(model), lr=1e-2)
    from sweeper.train.batches import collate

    batch = collate(enc, range(6), tokenizer.pad_token_id, get_task("classification"))
    adam_step(model, optimizer, batch)  # B != 0 again before the check
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        merge_and_reinit(model)
        after = model(**batch).logits
    assert (after - before).abs().max().item() <= MERGE_TOL


# ---------------------------------------------------------------- checkpoint / resume
def test_resume_mid_run_matches_uninterrupted(make_cfg, lm_data, tmp_path):
    # Stop at step 17: after two merges (10, 15) and inside a restart warmup (15-17).
    cfg = make_cfg(
        *TINY_LLAMA,
        "method=relora",
        "method.warm_start_steps=5",
        "method.merge_every=5",
        "method.restart_warmup_steps=3",
        "train.max_steps=24",
        "train.warmup_steps=2",
        "train.batch_size=4",
        "train.log_every=1",
    )
    train_enc, eval_enc = lm_data
    full_model, full_method, full = fit(cfg, train_enc, "lm", tmp_path / "straight")

    calls = iter(range(1, 1000))
    with pytest.raises(Interrupted):
        fit(cfg, train_enc, "lm", tmp_path / "resumed", should_stop=lambda: next(calls) == 17)
    model, method, resumed = fit(cfg, train_enc, "lm", tmp_path / "resumed")

    assert resumed.resumed_from_step == 17 and method.merges == full_method.merges == 3
    assert resumed.final_loss == full.final_loss
    assert resumed.events == full.events and len(resumed.events) == 3  # the merges before the stop too
    assert resumed.examples_seen == full.examples_seen
    read = lambda run: (tmp_path / run / "metrics.jsonl").read_text()  # noqa: E731
    assert read("resumed") == read("straight")  # every logged loss, lr and merge event
    a = evaluate(full_model, eval_enc, get_task("lm"), 0, 16, CPU)
    b = evaluate(model, eval_enc, get_task("lm"), 0, 16, CPU)
    assert a == b


# ---------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    "override,field",
    [
        ("method.merge_every=0", "method.merge_every"),
        ("method.restart_warmup_steps=30", "method.restart_warmup_steps"),
        ("method.optimizer_reset=zero", "method.optimizer_reset"),
        ("method.prune_ratio=1.5", "method.prune_ratio"),
        ("method.lr_multiplier=0", "method.lr_multiplier"),
        ("method.warm_start_steps=-1", "method.warm_start_steps"),
    ],
)
def test_bad_config_is_a_one_line_error(make_cfg, override, field):
    cfg = make_cfg(*TINY_LLAMA, "method=relora", override)
    with pytest.raises(MethodError, match=field.replace(".", r"\.")):
        build_method(cfg.method, cfg.model, get_task("lm"))


# ---------------------------------------------------------------- a Hydra grid beside lora and full
def test_relora_in_a_hydra_grid_beside_lora_and_full(tmp_path):
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "sweeper",
        "-m",
        "dataset=fortune_computers_vs_rest",
        *TINY_LLAMA,
        "method=lora,relora,full",
        "train.max_steps=24",
        "train.batch_size=4",
        "train.eval_size=32",
        "train.threads=1",
        "train.save_adapter=false",
        f"sweeper.results_dir={results}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/record.json"))]
    assert sorted(r["method"] for r in records) == ["full", "lora", "relora"]
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    relora = next(r for r in records if r["method"] == "relora")
    assert relora["train"]["merges"] == 1  # default merge_every=20 in a 24-step run
