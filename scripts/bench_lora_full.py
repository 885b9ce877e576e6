"""LoRA vs full fine-tuning on SmolLM2-135M (CPU): seconds per step and peak memory, side by side.

Each configuration runs as its own `python -m sweeper` process (so peak RSS is that run's alone),
alternating configurations over `--repeats` rounds; the table reports medians and ratios to full.
Usage: python scripts/bench_lora_full.py [--steps 6] [--repeats 2] [--batch 8] [--length 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "full": ["method=full"],
    "lora r=8 q,v": ["method=lora", "method.r=8"],
    "lora r=8 all-linear": [
        "method=lora",
        "method.r=8",
        "method.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
    ],
}


def run(name: str, extra: list[str], args, out: Path) -> dict:
    results = out / name.replace(" ", "_").replace(",", "").replace("=", "")
    cmd = [
        sys.executable,
        "-m",
        "sweeper",
        "model=smollm2",
        "dataset=fortune_computers_vs_rest",
        *extra,
        f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch}",
        f"train.max_length={args.length}",
        "train.eval_size=16",
        "train.warmup_steps=1",
        f"train.threads={args.threads}",
        "train.save_adapter=false",
        f"sweeper.results_dir={results}",
        f"hydra.run.dir={out / 'jobs'}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    record = json.loads(next(results.rglob("record.json")).read_text())
    if record["status"] != "ok":
        raise SystemExit(f"{name}: {record['error']}")
    return {
        "s_per_step": record["cost"]["train_seconds"] / args.steps,
        "peak_mb": record["cost"]["peak_memory_mb"],
        "trainable": record["params"]["trainable"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    samples: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for name, extra in CONFIGS.items():
                samples[name].append(run(f"{name}-{round_}", extra, args, Path(tmp)))
    med = {n: {k: statistics.median(s[k] for s in v) for k in v[0]} for n, v in samples.items()}
    full = med["full"]
    print("## LoRA vs full fine-tuning, SmolLM2-135M, CPU\n")
    print(
        f"`python scripts/bench_lora_full.py --steps {args.steps} --repeats {args.repeats} --batch {args.batch} "
        f"--length {args.length} --threads {args.threads}` (fp32, AdamW, batch {args.batch} x {args.length} tokens; "
        f"median of {args.repeats} alternating runs, each its own process)\n"
    )
    print("| method | trainable params | s/step | step time vs full | peak RSS MB | memory vs full |")
    print("|---|---|---|---|---|---|")
    for name, m in med.items():
        print(
            f"| {name} | {int(m['trainable']):,} | {m['s_per_step']:.2f} | {m['s_per_step'] / full['s_per_step']:.2f}x "
            f"| {m['peak_mb']:.0f} | {m['peak_mb'] / full['peak_mb']:.2f}x |"
        )


if __name__ == "__main__":
    main()
