"""The default recipe against the classical baseline: MiniLM + LoRA (the main job's defaults) vs
method=tfidf, on a fixed random sample of the catalogue's datasets of one task (classification, or
multilabel: one-vs-rest tfidf).

Runs the real command (`python -m sweeper -m dataset=<sample> method=lora,tfidf`), so a rerun skips
finished points; then reads the records and prints one markdown section: per dataset both test
scores (the task's headline metric), the paired test's p-value (sweeper.results.significance:
McNemar for classification, a paired t-test on each row's F1 for multilabel) and who won; the win
rate and the significant W/T/L; the mean train seconds per point.
Usage: python scripts/bench_recipe.py [--task classification] [--n 40] [--seed 0] [--results DIR]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sample_datasets(task: str, n: int, seed: int) -> list[str]:
    from sweeper.data import load_spec, spec_names

    names = sorted(name for name in spec_names() if load_spec(name)["task"] == task)
    return sorted(random.Random(seed).sample(names, min(n, len(names))))


def run_sweep(datasets: list[str], results: Path, extra: list[str]) -> tuple[list[str], float]:
    command = [sys.executable, "-m", "sweeper", "-m", f"dataset={','.join(datasets)}", "method=lora,tfidf",
               f"sweeper.results_dir={results}", *extra]  # fmt: skip
    t0 = time.time()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return command, time.time() - t0


def comparison_rows(results: Path):
    from sweeper.results import baselines, collect, significance, tables

    df = collect.load_records(results)
    summary = tables.summarize(df)
    tfidf = {p.dataset: p for p in summary[summary["method"] == "tfidf"].itertuples(index=False)}
    rows = []
    for a in summary[summary["method"] == "lora"].itertuples(index=False):
        b = tfidf.get(a.dataset)
        if b is None:
            continue
        if a.n_seeds == 0 or b.n_seeds == 0:
            rows.append((a.dataset, None, b.mean, a.mean, float("nan"), "failed", ""))
            continue
        result = significance.compare_points(baselines.side(a), baselines.side(b), True, tables.TIE_TOL)
        rows.append((a.dataset, a.train_seconds, b.mean, a.mean, result.p_value, result.outcome, result.test))
    summary.attrs["wall_seconds"] = df.groupby("method")["wall_seconds"].sum().to_dict()
    return rows, summary


def markdown(rows, summary, command: list[str], wall: float, task, n: int, seed: int) -> str:
    scored = [r for r in rows if r[5] != "failed"]
    wins = sum(r[3] > r[2] for r in scored)
    sig = {k: sum(r[5] == k for r in scored) for k in ("win", "tie", "loss")}
    mean_lora = sum(r[3] for r in scored) / max(1, len(scored))
    mean_tfidf = sum(r[2] for r in scored) / max(1, len(scored))
    seconds = summary.groupby("method")["train_seconds"].mean()
    walls = summary.attrs["wall_seconds"]
    shown = " ".join("dataset=<the datasets below>" if c.startswith("dataset=") else c for c in command[1:])
    shown = shown.replace(str(REPO) + "/", "")
    metric, tests = task.primary, ", ".join(sorted({r[6] for r in scored})) or "none"
    lines = [
        f"## Default recipe vs the TF-IDF baseline ({task.name} catalogue sample)",
        "",
        f"`python {shown}` (the main job's defaults: model=minilm method=lora; sample: "
        f"`scripts/bench_recipe.py --task {task.name} --n {n} --seed {seed}`, {len(rows)} datasets drawn at random "
        "from the catalogue).",
        "",
        f"**Win rate: MiniLM LoRA has the higher test {metric} on {wins} of {len(scored)} datasets "
        f"({wins / max(1, len(scored)):.0%})**; mean test {metric} {mean_lora:.3f} (LoRA) vs {mean_tfidf:.3f} (tfidf). "
        f"Significant at alpha=0.05 ({tests} on the paired test predictions): {sig['win']} wins, "
        f"{sig['tie']} ties, {sig['loss']} losses. Mean train seconds per point: LoRA "
        f"{seconds.get('lora', float('nan')):.1f}, tfidf {seconds.get('tfidf', float('nan')):.1f}; the points' "
        f"wall time in all: LoRA {walls.get('lora', 0) / 60:.0f} min, tfidf {walls.get('tfidf', 0) / 60:.1f} min "
        f"(this invocation: {wall / 60:.1f} min; finished points are skipped).",
        "",
        f"| dataset | tfidf {metric} | MiniLM LoRA {metric} | diff | p | outcome |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for dataset, _, tfidf_acc, lora_acc, p, outcome, *_ in rows:
        diff = lora_acc - tfidf_acc
        lines.append(f"| {dataset} | {tfidf_acc:.3f} | {lora_acc:.3f} | {diff:+.3f} | {p:.3g} | {outcome} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="classification", help="the datasets' task (default classification)")
    parser.add_argument("--n", type=int, default=40, help="datasets in the sample (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "bench_recipe")
    parser.add_argument("overrides", nargs="*", help="extra sweep overrides (e.g. train.max_steps=100)")
    args = parser.parse_args()
    from sweeper import tasks

    task = tasks.get(args.task)
    datasets = sample_datasets(task.name, args.n, args.seed)
    command, wall = run_sweep(datasets, args.results.absolute(), args.overrides)
    rows, summary = comparison_rows(args.results)
    print(markdown(rows, summary, command, wall, task, args.n, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
