"""Generation (text to text) on CPU: chrF of tiny_t5 / smollm2 x lora / full on a few generation
datasets, and SmolLM2's seconds per step and peak memory, LoRA vs full, from the same runs.

Each point runs as its own `python -m sweeper` process (peak RSS is that point's alone), one after
another on the same machine; the untuned SmolLM2 (LoRA at step 0: B = 0, the base model) is scored
beside them, so the table says what training bought.
Usage: python scripts/bench_generation.py [--smollm2-steps 20] [--tiny-steps 300] [--eval-size 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["debian_package_name_python", "wordnet_reverse_dictionary_noun", "gettext_en_to_de"]
ARMS = [  # (label, model, method, extra overrides)
    ("smollm2 untuned", "smollm2", "lora", ["train.max_steps=0"]),
    ("smollm2 lora", "smollm2", "lora", []),
    ("smollm2 full", "smollm2", "full", []),
    ("tiny_t5 lora", "tiny_t5", "lora", []),
    ("tiny_t5 full", "tiny_t5", "full", []),
]


def run_point(dataset: str, model: str, method: str, extra: list[str], args, out: Path) -> dict:
    steps = args.smollm2_steps if model == "smollm2" else args.tiny_steps
    cmd = [sys.executable, "-m", "sweeper", f"dataset={dataset}", f"model={model}", f"method={method}"]
    cmd += [f"train.max_steps={steps}", f"train.batch_size={args.batch}", f"train.max_length={args.length}"]
    cmd += [f"train.eval_size={args.eval_size}", "train.warmup_steps=2", f"train.threads={args.threads}"]
    cmd += ["train.save_adapter=false", "train.save_weights=false", f"sweeper.results_dir={out}"]
    cmd += [f"hydra.run.dir={out / 'jobs'}", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = [x for x in done.stdout.splitlines() if x.startswith("[")][-1:]
    print(f"{dataset} {model} {method} {' '.join(extra)}: {line}", file=sys.stderr, flush=True)
    record = json.loads(next(out.rglob("record.json")).read_text())  # one point per folder
    if record["status"] != "ok":
        raise SystemExit(f"{dataset} {model} {method}: {record['error']}")
    return record


def chrf_table(results: dict) -> str:
    lines = ["| dataset | " + " | ".join(label for label, *_ in ARMS) + " |", "|---" * (len(ARMS) + 1) + "|"]
    for dataset in DATASETS:
        cells = []
        for label, *_ in ARMS:
            test = results[(dataset, label)]["metrics"]["test"]
            cells.append(f"{test['chrf']:.1f} / {test['exact_match']:.2f}")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(results: dict, args) -> str:
    lines = [
        "| dataset | method | s / step | peak MB | training state MB | trainable params | full / lora s/step | full / lora peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        lora, full = results[(dataset, "smollm2 lora")], results[(dataset, "smollm2 full")]
        per_step = {k: r["cost"]["train_seconds"] / args.smollm2_steps for k, r in (("lora", lora), ("full", full))}
        for name, r in (("lora r=8 q,v", lora), ("full", full)):
            key = "lora" if name.startswith("lora") else "full"
            ratio = (
                f"{per_step['full'] / per_step['lora']:.2f}x | "
                f"{full['cost']['peak_memory_mb'] / lora['cost']['peak_memory_mb']:.2f}x"
                if key == "full"
                else "| "
            )
            lines.append(
                f"| {dataset} | {name} | {per_step[key]:.2f} | {r['cost']['peak_memory_mb']:.0f} | "
                f"{r['cost']['training_state_mb']:.0f} | {r['params']['trainable']:,} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smollm2-steps", type=int, default=20)
    ap.add_argument("--tiny-steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--eval-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_generation_") as tmp:
        for dataset in DATASETS:
            for label, model, method, extra in ARMS:
                out = Path(tmp) / f"{dataset}-{label.replace(' ', '_')}"
                results[(dataset, label)] = run_point(dataset, model, method, extra, args, out)
    command = "python scripts/bench_generation.py " + " ".join(sys.argv[1:])
    print("## Generation: chrF of tiny_t5 / SmolLM2 x LoRA / full, and LoRA vs full on SmolLM2, CPU\n")
    print(f"Command: `{command.strip()}` ({(time.time() - started) / 60:.0f} min, {args.threads} threads)\n")
    print(
        f"SmolLM2: {args.smollm2_steps} steps, tiny_t5: {args.tiny_steps} steps; batch {args.batch}, "
        f"max_length {args.length}, lr = each method's default; test chrF / exact match on the first "
        f"{args.eval_size} test pairs (greedy):\n"
    )
    print(chrf_table(results))
    print("\nSmolLM2-135M generation, LoRA vs full, same runs:\n")
    print(cost_table(results, args))


if __name__ == "__main__":
    main()
