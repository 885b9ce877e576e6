"""Data-parallel benchmark: one point on 1 process vs N ranks (train.nproc), the same cores.

    python scripts/bench_distributed.py [--steps 40] [--nproc 2] [--device cpu]

Each configuration trains one grid point with `python -m sweeper` (a fresh process, fresh results
folder): one process with N threads, then N ranks with one thread each (so all use the same cores),
once with DDP (a whole model per rank) and once with FSDP (train.parallel=fsdp: weights, gradients
and optimizer state sharded), gloo on CPU, nccl on CUDA. Reported: examples/s (the global batch over
the training time, from the record's cost section), peak memory of rank 0 and of all ranks together,
and the largest difference between a run's logged losses and one process's (rounding only).
Prints a markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeper.records import find_records, read_record  # noqa: E402

CASES = [  # (label, overrides)
    ("tiny_llama LoRA r=8", ["model=tiny_llama", "method=lora", "method.dropout=0"]),
    ("MiniLM LoRA r=8", ["model=minilm", "method=lora", "method.dropout=0"]),
    ("MiniLM full", ["model=minilm", "method=full"]),
]


def run(root: Path, overrides: list[str]) -> tuple[dict, list[float]]:
    cmd = [sys.executable, "-m", "sweeper", f"sweeper.results_dir={root}", f"hydra.run.dir={root}/jobs", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    (path,) = find_records(root)
    record = read_record(path)
    if record["status"] != "ok":
        raise SystemExit(f"{overrides}: {record.get('error')}")
    lines = (Path(path).parent / "metrics.jsonl").read_text().splitlines()
    return record, [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n = args.nproc
    common = [
        "dataset=fortune_art_vs_rest",
        f"train.max_steps={args.steps}",
        "train.batch_size=16",
        "train.log_every=1",
        "train.eval_size=64",
        f"train.device={args.device}",
    ]  # LoRA dropout 0: the same updates on any rank count, so the losses compare step by step
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (label, case) in enumerate(CASES):
            solo, solo_loss = run(Path(tmp) / f"case{k}-1", [*common, *case, f"train.threads={n}"])
            ranks = [f"train.nproc={n}", "train.threads=1"]
            ddp, ddp_loss = run(Path(tmp) / f"case{k}-ddp", [*common, *case, *ranks])
            fsdp, fsdp_loss = run(Path(tmp) / f"case{k}-fsdp", [*common, *case, *ranks, "train.parallel=fsdp"])
            speed = [r["cost"]["examples_per_second"] for r in (solo, ddp, fsdp)]
            rank0 = [r["cost"]["peak_memory_mb"] for r in (solo, ddp, fsdp)]
            every = [r["cost"]["peak_memory_mb_all_ranks"] for r in (ddp, fsdp)]
            state = [r["cost"]["training_state_mb"] for r in (solo, ddp, fsdp)]
            gaps = [max(abs(x - y) for x, y in zip(solo_loss, other)) for other in (ddp_loss, fsdp_loss)]
            rows.append(
                f"| {label} | {speed[0]:.1f} / {speed[1]:.1f} / {speed[2]:.1f} | "
                f"{speed[1] / speed[0]:.2f}x / {speed[2] / speed[0]:.2f}x | "
                f"{state[0]:.1f} / {state[1]:.1f} / {state[2]:.1f} | "
                f"{rank0[0]:.0f} / {rank0[1]:.0f} / {rank0[2]:.0f} | {every[0]:.0f} / {every[1]:.0f} | "
                f"{gaps[0]:.1e} / {gaps[1]:.1e} | "
                + " / ".join(f"{r['metrics']['test']['accuracy']:.3f}" for r in (solo, ddp, fsdp))
                + " |"
            )
            print(f"{label}: done", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"## Data parallel: one process vs {n} ranks (train.nproc={n}, DDP and FSDP), {args.device}\n")
    print(
        f"`python scripts/bench_distributed.py --steps {args.steps} --nproc {n} --device {args.device}` "
        f"(`make bench-distributed`): fortune_art_vs_rest, global batch 16, {args.steps} steps, LoRA dropout 0; "
        f"1 process x {n} threads vs {n} ranks x 1 thread, DDP and FSDP (train.parallel=fsdp), gloo. "
        f"Load average {load:.1f}. Each cell: 1 process / DDP / FSDP.\n"
    )
    print(
        "| point | examples/s | ratio to 1 process, DDP / FSDP | training state MB, rank 0 | peak MB, rank 0 "
        "| peak MB, all ranks, DDP / FSDP "
        "| max loss gap to 1 process, DDP / FSDP | test accuracy |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(
        "\nmax loss gap: the largest difference between a run's logged losses and one process's, step by step. "
        "tiny_llama has no dropout: the same updates, rounding only. MiniLM keeps BERT's own dropout (0.1), "
        "whose masks each rank draws for its own rows: the same distribution of updates, not the same draws. "
        "Training state: rank 0's weights + a gradient per trainable weight + AdamW state, counted from the "
        "tensors (cost.training_state_mb; FSDP keeps 1/N of each). Peak MB on CPU is each process's resident "
        "memory: torch and the libraries (~700 MB), and under FSDP the whole model each rank builds before "
        "sharding it and the blocks it gathers to compute."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
