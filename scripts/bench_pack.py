"""Benchmark: K LoRA points packed on one base vs one after another vs one process each; and the
peak memory of QLoRA vs LoRA vs full fine-tuning on SmolLM2-135M. CPU; prints a markdown snippet.

    .venv/bin/python scripts/bench_pack.py                # ~25 min on 2 busy cores
    .venv/bin/python scripts/bench_pack.py --quick        # smoke run, ~3 min

Throughput = training examples (K x steps x batch) / wall seconds of the whole mode, each mode in
fresh processes (imports, model builds, data loading and evaluation included: what a sweep pays),
and / training-loop seconds only (records' cost.train_seconds). Memory runs each method in its own
process: peak RSS of the training phase (after the model is built), and the whole point's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import run_benchmarks  # scripts/ is sys.path[0] when run as a script

from sweeper.config import compose
from sweeper.tasks import get as get_task

REPO = Path(__file__).resolve().parents[1]

# fmt: off
DATASETS = ["fortune_art_vs_rest", "fortune_computers_vs_rest", "fortune_cookie_vs_rest", "fortune_food_vs_rest",
            "fortune_kids_vs_rest", "fortune_law_vs_rest", "fortune_linux_vs_rest", "fortune_love_vs_rest"]
# fmt: on


# ---------------------------------------------------------------- configs
def point_overrides(args, model: str, i: int, results: str) -> list[str]:
    steps, length = (args.smol_steps, args.smol_length) if model == "smollm2" else (args.tiny_steps, args.tiny_length)
    return [
        f"dataset={DATASETS[i % len(DATASETS)]}",
        f"model={model}",
        "method=lora",
        f"train.max_steps={steps}",
        f"train.batch_size={args.batch}",
        f"train.max_length={length}",
        f"train.eval_size={args.eval_size}",
        f"train.threads={args.threads}",
        f"train.device={args.device}",
        f"train.dtype={args.dtype}",
        "train.save_adapter=false",
        f"sweeper.results_dir={results}",
    ]


# ---------------------------------------------------------------- child modes (one process each)
def child_packed(args) -> dict:
    from sweeper.train.pack import run_packed

    cfgs = [compose(*point_overrides(args, args.model, i, args.results)) for i in range(args.k)]
    return summarise(run_packed(cfgs))


def child_sequential(args) -> dict:
    from sweeper.train import run_point

    indices = range(args.k) if args.index is None else [args.index]
    return summarise([run_point(compose(*point_overrides(args, args.model, i, args.results))) for i in indices])


def summarise(records: list[dict]) -> dict:
    bad = [r.get("error") for r in records if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"bench point failed: {bad[0]}")
    return {
        "examples": sum(r["max_steps"] * r["config"]["train"]["batch_size"] for r in records),
        "train_seconds": sum(r["cost"]["train_seconds"] for r in records),
        "peak_mb": max(r["cost"]["peak_memory_mb"] for r in records),
    }


def memory_cfg(args):
    overrides = [o for o in point_overrides(args, "smollm2", 1, args.results) if not o.startswith("method=")]
    return compose(*overrides, f"method={args.method}")


class AnonPeak:
    """Peak anonymous resident memory (statm resident - shared), sampled every 10 ms. Anonymous, not
    RSS: from_pretrained maps the safetensors file, and a file page qlora has read stays resident
    (counted in RSS) after the float32 tensor on it is freed."""

    def __init__(self):
        self.peak, self._stop = self.now(), threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.now())

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def release_freed_memory() -> None:
    # glibc keeps freed blocks (e.g. the float32 weights qlora replaced) in its heap; trim so that
    # "memory once built" is what is alive, not what was once allocated.
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def child_memory(args) -> dict:
    """One method on SmolLM2, training phase, nothing else run in this process before: anonymous
    memory above the bare process (imports and data done) once the model is built, and its peak
    while training."""

    from sweeper.data import load_splits
    from sweeper.train.batches import encode_splits
    from sweeper.train.loop import train
    from sweeper.train.methods import build_method
    from sweeper.train.models import build_model, count_parameters
    from sweeper.train.runtime import setup_runtime

    cfg = memory_cfg(args)
    runtime = setup_runtime(cfg.train)
    splits = load_splits(cfg.dataset)
    release_freed_memory()
    bare = AnonPeak.now()
    model, tokenizer = build_model(cfg.model, get_task("classification"), 2)
    for tensor in list(model.parameters()) + list(model.buffers()):
        tensor.data = tensor.data.clone()  # off the file mapping: every method's weights in anonymous memory
    method = build_method(cfg.method, cfg.model, get_task("classification"))
    model = method.wrap(model)
    train_enc, _ = encode_splits(splits, tokenizer, cfg, get_task("classification"))
    release_freed_memory()
    built = AnonPeak.now()
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    with AnonPeak() as memory, tempfile.TemporaryDirectory() as run_dir:
        result = train(
            model=model,
            method=method,
            train_enc=train_enc,
            task=get_task("classification"),
            pad_id=tokenizer.pad_token_id,
            train_cfg=cfg.train,
            run_dir=Path(run_dir),
            runtime=runtime,
        )
    mb = 2**20
    return {
        "method": args.method,
        "trainable": count_parameters(model)[0],
        "weights_mb": round(weights / mb, 1),
        "built_mb": round((built - bare) / mb, 1),
        "train_peak_mb": round((memory.peak - bare) / mb, 1),
        "s_per_step": round(result.train_seconds / result.steps, 3),
    }


def child_memory_point(args) -> dict:
    """The same method as a whole grid point (run_point): the record's peak_memory_mb (process RSS)."""
    from sweeper.train import run_point

    record = run_point(memory_cfg(args))
    if record["status"] != "ok":
        raise SystemExit(f"bench point failed: {record['error']}")
    return {"point_peak_mb": record["cost"]["peak_memory_mb"]}


# ---------------------------------------------------------------- parent
# the parent's options every child process gets as they are
CHILD_OPTIONS = ("k", "threads", "batch", "eval_size", "tiny_steps", "smol_steps", "tiny_length", "smol_length",
                 "device", "dtype")  # fmt: skip


def run_child(args, mode: str, **extra) -> tuple[dict, float]:
    cmd = [sys.executable, __file__, "--child", mode]
    for key, value in [*((k, getattr(args, k)) for k in CHILD_OPTIONS), *extra.items()]:
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def one_round(args, model: str, tmp: Path) -> dict:
    """Each mode once: {mode: (wall seconds, training-loop seconds, peak MB)}; fresh results dirs."""
    packed, packed_wall = run_child(args, "packed", model=model, results=tmp / "packed")
    seq, seq_wall = run_child(args, "sequential", model=model, results=tmp / "seq")
    each_wall, each_loop = 0.0, 0.0
    for i in range(args.k):
        one, wall = run_child(args, "sequential", model=model, results=tmp / "each", index=i)
        each_wall += wall
        each_loop += one["train_seconds"]
    return {
        "examples": packed["examples"],
        "packed": (packed_wall, packed["train_seconds"], packed["peak_mb"]),
        "sequential": (seq_wall, seq["train_seconds"], seq["peak_mb"]),
        "each": (each_wall, each_loop, ""),
    }


def throughput(args, model: str, tmp: Path) -> dict:
    """Fastest of --repeats rounds per mode (rounds interleave the modes: a shared machine's load hits all)."""
    rounds = [one_round(args, model, tmp / f"{model}-{r}") for r in range(args.repeats)]
    n = rounds[0]["examples"]
    modes = ("packed", "sequential", "each")
    return {
        "model": model,
        "examples": n,
        "e2e": {m: n / min(r[m][0] for r in rounds) for m in modes},
        "loop": {m: n / min(r[m][1] for r in rounds) for m in modes},
        "peak_mb": {m: rounds[0][m][2] for m in modes},
    }


def warm_data_cache() -> None:
    from sweeper.data import load_splits
    from sweeper.train.models import smollm2_dir

    for name in DATASETS:
        load_splits(compose(f"dataset={name}").dataset)
    smollm2_dir()  # converts the GGUF once if the cache is missing


def machine() -> str:
    import bitsandbytes
    import torch

    return (
        f"{run_benchmarks.machine()}; load average {os.getloadavg()[0]:.1f} at start; "
        f"torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}"
    )


def markdown(args, rows: list[dict], memory: list[dict], header: str, seconds: float) -> str:
    argv = " ".join(sys.argv[1:])
    out = [
        "### Packed adapters and QLoRA memory (`scripts/bench_pack.py`)",
        "",
        f"Command: `.venv/bin/python scripts/bench_pack.py{' ' + argv if argv else ''}` ({seconds / 60:.1f} min)  ",
        f"Machine: {header}; torch threads {args.threads} per process",
        "",
    ]
    if rows:
        out += [
            f"K={args.k} LoRA points (8 fortune datasets, r=8, batch {args.batch}, eval {args.eval_size} rows); "
            "examples/s = K x steps x batch / seconds, fastest of "
            f"{args.repeats} interleaved rounds. *End to end*: wall time of the mode (fresh processes: imports, "
            "model builds, data, evaluation). *Loop*: training-loop seconds only.",
            "",
            "| model | steps x len | mode | e2e ex/s | loop ex/s | packed speed-up e2e | packed speed-up loop | peak MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            steps, length = (
                (args.smol_steps, args.smol_length)
                if row["model"] == "smollm2"
                else (args.tiny_steps, args.tiny_length)
            )
            for mode, label in (
                ("packed", f"packed (1 pass, K={args.k})"),
                ("sequential", "one after another, 1 process"),
                ("each", "one process each"),
            ):
                e2e, loop = row["e2e"][mode], row["loop"][mode]
                ratio = "" if mode == "packed" else f"{row['e2e']['packed'] / e2e:.2f}x"
                ratio_loop = "" if mode == "packed" else f"{row['loop']['packed'] / loop:.2f}x"
                peak = row["peak_mb"].get(mode, "")
                out.append(
                    f"| {row['model']} | {steps} x {length} | {label} | {e2e:.1f} | {loop:.1f} | {ratio} | "
                    f"{ratio_loop} | {peak} |"
                )
        out.append("")
    if memory:
        out += [
            f"SmolLM2-135M classification, batch {args.batch} x {args.smol_length} tokens, {args.smol_steps} steps, "
            "AdamW, float32 compute. *Memory* columns: anonymous "
            "resident memory above the bare process (imports and data loaded), weights copied off the safetensors "
            "mapping; *whole point*: the record's peak_memory_mb (process RSS of run_point, including the float32 "
            "load that qlora then quantises and file pages that stay mapped):",
            "",
            "| method | trainable params | weights MB | memory once built MB | peak memory training MB | peak RSS whole point MB | s/step |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in memory:
            out.append(
                f"| {m['method']} | {m['trainable']:,} | {m['weights_mb']} | {m['built_mb']} | {m['train_peak_mb']} | "
                f"{m['point_peak_mb']} | {m['s_per_step']} |"
            )
        full = next((m for m in memory if m["method"] == "full"), None)
        if full:
            out += [
                "",
                "Training-phase peak relative to full: "
                + ", ".join(f"{m['method']} {m['train_peak_mb'] / full['train_peak_mb']:.2f}" for m in memory),
            ]
    return "\n".join(out)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--device", default="cpu", help="train.device of every point (cuda: peak memory is CUDA's)")
    p.add_argument("--dtype", default="float32", help="train.dtype (bfloat16: autocast, off the CPU only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eval-size", type=int, default=32)
    p.add_argument("--tiny-steps", type=int, default=20)
    p.add_argument("--tiny-length", type=int, default=64)
    p.add_argument("--smol-steps", type=int, default=3)
    p.add_argument("--smol-length", type=int, default=32)
    p.add_argument("--models", default="tiny_llama,smollm2")
    p.add_argument("--repeats", type=int, default=2, help="rounds of the throughput modes; the fastest counts")
    p.add_argument("--memory-methods", default="full,lora,qlora", help="empty to skip the memory table")
    p.add_argument("--quick", action="store_true", help="K=4, fewer steps: a smoke run")
    # child-process options
    p.add_argument("--child", choices=["packed", "sequential", "memory", "memory_point"])
    p.add_argument("--model")
    p.add_argument("--results")
    p.add_argument("--index", type=int)
    p.add_argument("--method")
    args = p.parse_args(argv)
    if args.quick:
        args.k, args.tiny_steps, args.smol_steps, args.repeats = 4, 6, 2, 1
    return args


def main(argv=None) -> int:
    args = parse(argv if argv is not None else sys.argv[1:])
    if args.child:
        import logging

        logging.disable(logging.WARNING)
        child = {
            "packed": child_packed,
            "sequential": child_sequential,
            "memory": child_memory,
            "memory_point": child_memory_point,
        }[args.child]
        print(json.dumps(child(args)))
        return 0
    start = time.perf_counter()
    header = machine()
    warm_data_cache()
    rows, memory = [], []
    with tempfile.TemporaryDirectory(prefix="bench_pack-") as tmp:
        for model in [m for m in args.models.split(",") if m]:
            rows.append(throughput(args, model, Path(tmp)))
            print(f"# {model}: done", file=sys.stderr)
        for method in [m for m in args.memory_methods.split(",") if m]:
            row = run_child(args, "memory", method=method, results=Path(tmp) / f"mem-{method}")[0]
            row.update(run_child(args, "memory_point", method=method, results=Path(tmp) / f"mem-point-{method}")[0])
            memory.append(row)
            print(f"# memory {method}: done", file=sys.stderr)
    print(markdown(args, rows, memory, header, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
