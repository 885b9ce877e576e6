"""Memory: how a base loads (float32, bfloat16, 4-bit after the build or while loading) and the
planner's estimate against the measured peak (BENCHMARKS.md "Memory").

    python scripts/bench_memory.py                 # both parts (~25 min on 2 cores; the 1B Llama needs ~20 GB)
    python scripts/bench_memory.py --part loading  # or --part estimate; --no-1b leaves the 1B Llama out

A ~1.1B-parameter Llama (TinyLlama's shape, SmolLM2's vocabulary) is built from a config with random
weights and saved once as sharded safetensors under .cache/bench/llama-1b (nothing downloaded).
Every measurement is a fresh process: peak RSS (VmHWM) of loading, or the record of a real
`python -m sweeper` point (cost.peak_memory_mb beside cost.memory_estimate.total_mb).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.paths import CACHE_DIR  # noqa: E402

LLAMA_1B = CACHE_DIR / "bench" / "llama-1b"  # float32 safetensors
LLAMA_1B_BF16 = CACHE_DIR / "bench" / "llama-1b-bf16"  # the same weights in bfloat16, as the hub ships big models
LLAMA_1B_SHAPE = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4
)
MODEL_1B = ["model=smollm2", "model.name=llama1b", "model.source=path"]


def model_1b_overrides(folder: Path = LLAMA_1B) -> list[str]:
    return MODEL_1B + [f"model.name_or_path={folder}", f"model.tokenizer={folder}"]


def make_llama_1b_bf16() -> Path:
    """The 1.1B Llama's checkpoint in bfloat16 (2.3 GB): what a hub model of this size ships as."""
    if (LLAMA_1B_BF16 / "config.json").exists():
        return LLAMA_1B_BF16
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(make_llama_1b(), dtype=torch.bfloat16)
    tmp = LLAMA_1B_BF16.with_name(LLAMA_1B_BF16.name + ".partial")
    model.save_pretrained(tmp, max_shard_size="500MB")
    AutoTokenizer.from_pretrained(LLAMA_1B).save_pretrained(tmp)
    os.replace(tmp, LLAMA_1B_BF16)
    return LLAMA_1B_BF16


def make_llama_1b() -> Path:
    """The 1.1B Llama as sharded safetensors (built once: ~2 min, 4.6 GB on disk)."""
    if (LLAMA_1B / "config.json").exists():
        return LLAMA_1B
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sweeper.train.models import build_tokenizer, smollm2_dir

    tokenizer = build_tokenizer(
        type("M", (), {"tokenizer": "smollm2", "name_or_path": None, "trust_remote_code": False})()
    )
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=False, **LLAMA_1B_SHAPE)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config)
    print(f"built a Llama of {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    tmp = LLAMA_1B.with_name(LLAMA_1B.name + ".partial")
    model.save_pretrained(tmp, max_shard_size="500MB")
    tokenizer.save_pretrained(tmp)
    smollm2_dir()
    os.replace(tmp, LLAMA_1B)
    return LLAMA_1B


# ---------------------------------------------------------------- part 1: loading
LOAD_CHILD = r"""
import json, sys, threading, torch
from sweeper.config import compose
from sweeper.tasks import get
from sweeper.train.methods import build_method
from sweeper.train.models import Loading, build_model
from sweeper.train.runtime import setup_runtime

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

peak_anon = 0.0
def sample(stop):  # anonymous memory (not the checkpoint's file pages, which the kernel may drop)
    global peak_anon
    while not stop.wait(0.01):
        peak_anon = max(peak_anon, status("RssAnon"))

way, overrides = sys.argv[1], sys.argv[2:]
cfg = compose(*overrides)
task = get("classification")
method = build_method(cfg.method, cfg.model, task)
before, anon_before = status("VmHWM"), status("RssAnon")
stop = threading.Event()
threading.Thread(target=sample, args=(stop,), daemon=True).start()
if way == "float32":
    model, _ = build_model(cfg.model, task, 2, Loading(dtype=torch.float32))
elif way == "bfloat16":
    model, _ = build_model(cfg.model, task, 2, Loading(dtype=torch.bfloat16))
elif way == "4bit-after-build":
    model, _ = build_model(cfg.model, task, 2, Loading(dtype=torch.float32))
    method.quantize_base(model)
else:  # 4bit-while-loading
    loading = method.loading(setup_runtime(cfg.train))
    assert loading.quantization is not None, "quantize_at=load did not quantise while loading"
    model, _ = build_model(cfg.model, task, 2, loading)
    method.quantize_base(model)
touched = sum(float(p.data.view(-1)[:: 4096 // p.element_size()].float().sum()) for p in model.parameters())  # every page read: a lazily mapped weight counts too
stop.set()
peak_anon = max(peak_anon, status("RssAnon"))
print(json.dumps({"imports_mb": before, "peak_mb": status("VmHWM"), "anon_before_mb": anon_before, "peak_anon_mb": peak_anon}))
"""

LOAD_WAYS = ("float32", "bfloat16", "4bit-after-build", "4bit-while-loading")


def measure_load(way: str, overrides: list[str]) -> dict:
    at = "load" if way == "4bit-while-loading" else "build"
    args = [sys.executable, "-c", LOAD_CHILD, way, *overrides, "method=qlora", f"method.quantize_at={at}"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{way} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loading_part(with_1b: bool) -> None:
    models = [("SmolLM2-135M", ["model=smollm2"])]
    if with_1b:
        models.append(("Llama 1.1B, float32 checkpoint", model_1b_overrides(make_llama_1b())))
        models.append(("Llama 1.1B, bfloat16 checkpoint", model_1b_overrides(make_llama_1b_bf16())))
    print(
        "\n| model | load | peak RSS MB | above the imports | vs float32 | peak anonymous MB | above the imports | vs float32 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, overrides in models:
        rows = {way: measure_load(way, overrides) for way in LOAD_WAYS}
        rss = {way: row["peak_mb"] - row["imports_mb"] for way, row in rows.items()}
        anon = {way: row["peak_anon_mb"] - row["anon_before_mb"] for way, row in rows.items()}
        for way, row in rows.items():
            cells = [f"{row['peak_mb']:.0f}", f"{rss[way]:.0f}", f"{rss[way] / rss['float32']:.2f}"]
            cells += [f"{row['peak_anon_mb']:.0f}", f"{anon[way]:.0f}", f"{anon[way] / anon['float32']:.2f}"]
            print(f"| {name} | {way} | " + " | ".join(cells) + " |", flush=True)


# ---------------------------------------------------------------- part 2: estimate vs measured
COMMON = ["dataset=fortune_computers_vs_rest", "train.max_steps=2", "train.eval_size=16", "train.warmup_steps=1"]
CONFIGS = [
    ("tiny_llama", "lora", 16, False),
    ("tiny_llama", "lora", 64, False),
    ("tiny_llama", "full", 64, False),
    ("tiny_llama", "lora", 64, True),
    ("minilm", "lora", 16, False),
    ("minilm", "lora", 64, False),
    ("minilm", "full", 64, False),
    ("minilm", "lora", 64, True),
    ("smollm2", "lora", 8, False),
    ("smollm2", "lora", 32, False),
    ("smollm2", "qlora", 32, False),
    ("smollm2", "full", 8, False),
    ("smollm2", "lora", 32, True),
    ("llama1b", "lora", 4, False),
    ("llama1b", "qlora", 4, False),
    ("llama1b", "lora", 8, True),
]


def run_point(model: str, method: str, batch: int, checkpointing: bool, results: Path) -> dict:
    model_args = model_1b_overrides(LLAMA_1B_BF16) if model == "llama1b" else [f"model={model}"]
    args = [
        sys.executable, "-m", "sweeper", *COMMON, *model_args, f"method={method}",
        f"train.batch_size={batch}", f"train.eval_batch_size={batch}", "train.max_length=128",
        f"method.gradient_checkpointing={str(checkpointing).lower()}", f"sweeper.results_dir={results}",
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    records = sorted(results.glob("runs/*/record.json"), key=lambda p: p.stat().st_mtime)
    if out.returncode or not records:
        raise SystemExit(f"{model} {method} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    record = json.loads(records[-1].read_text())
    if record["status"] != "ok":
        raise SystemExit(f"{model} {method}: {record['error']}")
    return record


def estimate_part(with_1b: bool) -> None:
    configs = [c for c in CONFIGS if with_1b or c[0] != "llama1b"]
    if with_1b:
        make_llama_1b_bf16()
    print("\n| model | method | batch x 128 | checkpointing | estimate MB | measured peak MB | estimate / measured |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, method, batch, checkpointing) in enumerate(configs):
            record = run_point(model, method, batch, checkpointing, Path(tmp) / str(i))
            estimate = record["cost"]["memory_estimate"]["total_mb"]
            peak = record["cost"]["peak_memory_mb"]
            worst = max(worst, abs(estimate / peak - 1))
            cells = [model, method, batch, "yes" if checkpointing else "no", f"{estimate:.0f}", f"{peak:.0f}"]
            print("| " + " | ".join(map(str, cells)) + f" | {estimate / peak:.2f} |", flush=True)
    print(f"\nlargest gap: {100 * worst:.0f}% of the measured peak")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("loading", "estimate", "both"), default="both")
    parser.add_argument("--no-1b", action="store_true", help="leave the 1.1B Llama out (needs ~20 GB and ~15 min)")
    args = parser.parse_args()
    if args.part in ("loading", "both"):
        loading_part(not args.no_1b)
    if args.part in ("estimate", "both"):
        estimate_part(not args.no_1b)


if __name__ == "__main__":
    main()
