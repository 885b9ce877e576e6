"""Data-parallel benchmark: one point on 1 process vs N ranks (train.nproc), the same cores.

    python scripts/bench_distributed.py [--steps 40] [--nproc 2] [--device cpu]

Each configuration trains one grid point with `python -m sweeper` (a fresh process, fresh results
folder): one process with N threads, then N ranks (DDP over gloo on CPU, nccl on CUDA) with one
thread each, so both use the same cores. Reported: examples/s (the global batch over the training
time, from the record's cost section), peak memory of rank 0 and of all ranks together, and the
largest difference between the two runs' logged losses (the same updates: rounding only).
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
            ranks, ranks_loss = run(Path(tmp) / f"case{k}-{n}", [*common, *case, "train.threads=1", f"train.nproc={n}"])
            a, b = solo["cost"], ranks["cost"]
            gap = max(abs(x - y) for x, y in zip(solo_loss, ranks_loss))
            rows.append(
                f"| {label} | {a['examples_per_second']:.1f} | {b['examples_per_second']:.1f} | "
                f"{b['examples_per_second'] / a['examples_per_second']:.2f}x | {a['peak_memory_mb']:.0f} | "
                f"{b['peak_memory_mb']:.0f} / {b['peak_memory_mb_all_ranks']:.0f} | {gap:.1e} | "
                f"{solo['metrics']['test']['accuracy']:.3f} / {ranks['metrics']['test']['accuracy']:.3f} |"
            )
            print(f"{label}: done", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"## Data parallel: one process vs {n} ranks (train.nproc={n}), {args.device}\n")
    print(
        f"`python scripts/bench_distributed.py --steps {args.steps} --nproc {n} --device {args.device}` "
        f"(`make bench-distributed`): fortune_art_vs_rest, global batch 16, {args.steps} steps, LoRA dropout 0; "
        f"1 process x {n} threads vs {n} ranks (DDP, gloo) x 1 thread. Load average {load:.1f}.\n"
    )
    print(
        "| point | examples/s, 1 process | examples/s, "
        f"{n} ranks | ratio | peak MB, 1 process | peak MB, rank 0 / all ranks | max loss gap | test acc, 1 / {n} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(
        "\nmax loss gap: the largest difference between the two runs' logged losses, step by step. tiny_llama "
        "has no dropout: the same updates, rounding only. MiniLM keeps BERT's own dropout (0.1), whose masks "
        "each rank draws for its own rows: the same distribution of updates, not the same draws."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
