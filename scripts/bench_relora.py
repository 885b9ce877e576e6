"""Pretraining comparison of the ReLoRA paper at toy scale: full-rank vs LoRA vs LoRA + warm start vs ReLoRA.

    python scripts/bench_relora.py                 # ~10-15 min on 2 CPU cores (1 torch thread)
    python scripts/bench_relora.py --steps 60      # smoke run (~1 min)

A tiny Llama is pretrained from scratch on Austen (`dataset=austen_lm`: five novels, Persuasion held out)
with each method: same initial weights, same batches (they are a function of seed and step), same
train.lr; only ReLoRA runs its LoRA phase at lr * method.lr_multiplier, as in the paper. It prints a
markdown table of validation perplexity, the command and the shared config, and writes
<out>/results.json (perplexities, per-step LR schedules, loss logs) for plots.

Speed: the MiniLM tokenizer's 30,522-entry vocabulary would spend most of the compute in the LM head,
where all four methods are identical (embeddings and head stay full-rank). The bench therefore keeps
the --vocab most frequent training tokens and maps the rest to one UNK id (4096 covers ~97.6% of the
Austen tokens), so the compute goes to the transformer blocks where the methods differ. Perplexity is
over that compact vocabulary: compare rows of one table, not with other benchmarks.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per method (train.max_steps)")
    p.add_argument("--warm-start", type=float, default=0.25, help="fraction of steps trained full-rank first")
    p.add_argument("--merges", type=int, default=2, help="ReLoRA merges after the warm start (cycles - 1)")
    p.add_argument("--lr", type=float, default=2e-3, help="train.lr, shared by all methods")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (alpha = 2r)")
    p.add_argument("--vocab", type=int, default=4096, help="compact vocabulary size (most frequent tokens + UNK)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--out", default=str(REPO / "results" / "bench_relora"), help="run folders and results.json")
    return p.parse_args(argv)


# ---------------------------------------------------------------- configs
def shared_overrides(a) -> list[str]:
    warmup = max(1, a.steps // 20)
    return [
        "dataset=austen_lm",
        "model=tiny_llama",
        f"train.max_steps={a.steps}",
        f"train.lr={a.lr}",
        "train.batch_size=16",
        "train.max_length=64",
        f"train.warmup_steps={warmup}",
        "train.min_lr_ratio=0.1",
        "train.eval_size=400",
        "train.log_every=10",
        f"train.threads={a.threads}",
        "train.seed=0",
    ]


def method_overrides(a) -> dict[str, list[str]]:
    warm = int(a.steps * a.warm_start)
    merge_every = max(2, (a.steps - warm) // (a.merges + 1))
    lora = ["method=lora", f"method.r={a.r}", f"method.alpha={2 * a.r}"]
    return {
        "full": ["method=full"],
        "lora": lora,
        "lora + warm start": [*lora, f"method.warm_start_steps={warm}"],
        "relora": [
            "method=relora",
            f"method.r={a.r}",
            f"method.alpha={2 * a.r}",
            f"method.warm_start_steps={warm}",
            f"method.merge_every={merge_every}",
            f"method.restart_warmup_steps={max(1, merge_every // 10)}",
        ],
    }


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


# ---------------------------------------------------------------- data
def compact_vocab(train_enc, eval_enc, size: int) -> float:
    """Remap token ids in place to 0..size-1 by training frequency (size-1 = UNK); returns UNK share of eval."""
    counts = collections.Counter(t for row in train_enc.input_ids for t in row)
    new_id = {tok: i for i, (tok, _) in enumerate(counts.most_common(size - 1))}
    unk = size - 1
    for enc in (train_enc, eval_enc):
        enc.input_ids = [[new_id.get(t, unk) for t in row] for row in enc.input_ids]
    n_eval = sum(len(r) for r in eval_enc.input_ids)
    return sum(t == unk for r in eval_enc.input_ids for t in r) / max(1, n_eval)


def load_data(cfg, vocab: int):
    from sweeper.data import load_splits
    from sweeper.train.batches import encode_lm
    from sweeper.train.models import build_tokenizer

    splits = load_splits(cfg.dataset)
    tokenizer = build_tokenizer(cfg.model)
    block = int(cfg.train.max_length)
    train_enc = encode_lm(splits["train"], tokenizer, block)
    eval_enc = encode_lm(splits["validation"], tokenizer, block)
    eval_enc.input_ids = eval_enc.input_ids[: int(cfg.train.eval_size)]
    unk_share = compact_vocab(train_enc, eval_enc, vocab)
    return train_enc, eval_enc, unk_share


# ---------------------------------------------------------------- one method
def run_method(cfg, train_enc, eval_enc, vocab: int, run_dir: Path) -> dict:
    import torch

    from sweeper.tasks import get as get_task
    from sweeper.train.evaluate import evaluate
    from sweeper.train.loop import train
    from sweeper.train.methods import build_method
    from sweeper.train.models import build_model
    from sweeper.train.runtime import Runtime

    torch.set_num_threads(int(cfg.train.threads))
    torch.manual_seed(int(cfg.train.seed))  # same initial weights for every method
    model, _ = build_model(cfg.model, get_task("lm"))
    model.resize_token_embeddings(vocab)
    method = build_method(cfg.method, cfg.model, get_task("lm"))
    model = method.wrap(model)
    # Trainable in the low-rank phase: the LoRA factors plus the full-rank embeddings, norms and head.
    low_rank = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n)
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and "original_module" not in n)
    run_dir.mkdir(parents=True, exist_ok=True)
    cpu = Runtime(torch.device("cpu"), contextlib.nullcontext)
    result = train(
        model=model,
        method=method,
        train_enc=train_enc,
        task=get_task("lm"),
        pad_id=0,
        train_cfg=cfg.train,
        run_dir=run_dir,
        runtime=cpu,
    )
    metrics = evaluate(model, eval_enc, get_task("lm"), 0, int(cfg.train.eval_batch_size), cpu)
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = method.summary()
    return {
        "perplexity": metrics["perplexity"],
        "eval_loss": metrics["loss"],
        "train_loss": result.final_loss,
        "train_seconds": result.train_seconds,
        "trainable": total if cfg.method.name == "full" else low_rank,
        "params": total,
        "merges": summary.get("merges"),
        "lr_schedule": summary.get("lr_schedule"),
        "log": log,
    }


# ---------------------------------------------------------------- report
def table(results: dict[str, dict]) -> str:
    full = results["full"]["perplexity"]
    rows = [
        "| method | val perplexity | vs full | trainable params (low-rank phase) | merges | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        merges = "" if r["merges"] is None else str(r["merges"])
        rows.append(
            f"| {name} | {r['perplexity']:.2f} | {r['perplexity'] / full:.3f} | "
            f"{r['trainable']:,} / {r['params']:,} | {merges} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    shared = shared_overrides(a)
    per_method = method_overrides(a)
    train_enc, eval_enc, unk = load_data(compose(shared), a.vocab)
    results = {}
    for name, extra in per_method.items():
        t0 = time.time()
        cfg = compose([*shared, *extra])
        results[name] = run_method(cfg, train_enc, eval_enc, a.vocab, out / name.replace(" + ", "_").replace(" ", "_"))
        print(f"{name}: ppl {results[name]['perplexity']:.2f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    ratio = results["relora"]["perplexity"] / results["full"]["perplexity"]
    m = compose([*shared, *per_method["relora"]])
    args = argv if argv is not None else sys.argv[1:]
    print(f"Command: `{shlex.join(['python', 'scripts/bench_relora.py', *args])}`")
    print(
        f"\nShared config: `{' '.join(shared)}`; model tiny_llama (hidden {m.model.hidden_size}, "
        f"{m.model.num_hidden_layers} layers, ff {m.model.intermediate_size}); {len(train_enc.input_ids)} train "
        f"blocks of {m.train.max_length} tokens ({a.steps * 16 * int(m.train.max_length) / 1e3:.0f}k tokens seen), "
        f"{len(eval_enc.input_ids)} Persuasion blocks scored; vocabulary compacted to {a.vocab} "
        f"({unk:.1%} of eval tokens are UNK)."
    )
    for name, extra in per_method.items():
        print(f"- {name}: `{' '.join(extra)}`")
    print(
        f"\nAll rows start from the same weights and see the same batches at train.lr; ReLoRA's LoRA phase runs at "
        f"train.lr * method.lr_multiplier ({m.method.lr_multiplier}), as in the paper."
    )
    print(f"\n{table(results)}\n\nReLoRA / full perplexity ratio: {ratio:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"args": vars(a), "shared": shared, "methods": per_method, "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
