"""PEFT methods across datasets: MiniLM on a fixed random sample of classification datasets, every
method with its learning rate selected on validation by successive halving.

For each method, one real sweep (a rerun skips finished points):

    python -m sweeper -m dataset=<sample> model=minilm method=<m> method.lr=<lr>,<3 lr> \
        train.max_steps=<S> train.eval_size=<E> sweeper.search=halving sweeper.halving.min_steps=<S/3> \
        sweeper.halving.group_by=[dataset] hydra/launcher=local sweeper.chunk=6

(<lr> is the method's default lr on MiniLM; the two learning rates compete per dataset on validation
accuracy after S/3 steps, the better one trains on to S.) Cost is then measured side by side: every
method trains 20 steps on the first dataset, one process each, methods interleaved, 2 rounds, the
fastest round kept. Then one markdown section: test accuracy of each method's selected configuration
per dataset, the mean, the mean rank (1 = best; ties share), trainable parameters, seconds per step
and peak memory (the side-by-side rounds) and their ratio to lora, and the commands.
Usage: python scripts/bench_methods.py [--n 12] [--steps 30] [--results results/bench_methods]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench_recipe import sample_datasets  # noqa: E402

METHODS = ["lora", "full", "dora", "pissa", "olora", "lora_plus", "vera", "ia3", "loha", "lokr", "adalora", "oft"]
LR_FACTORS = (1, 3)  # x the method's default lr: a short budget favours the higher one, the default guards


def default_lr(method: str) -> float:
    from sweeper.config import compose

    return float(compose("model=minilm", f"method={method}").method.lr)


def sweep_command(method: str, datasets: list[str], args) -> list[str]:
    lrs = ",".join(f"{default_lr(method) * f:.3g}" for f in LR_FACTORS)
    return [
        sys.executable, "-m", "sweeper", "-m", f"dataset={','.join(datasets)}", "model=minilm", f"method={method}",
        f"method.lr={lrs}", f"train.max_steps={args.steps}", f"train.eval_size={args.eval_size}",
        "sweeper.search=halving", f"sweeper.halving.min_steps={max(1, args.steps // 3)}",
        "sweeper.halving.group_by=[dataset]", "hydra/launcher=local", "sweeper.chunk=6",
        f"sweeper.results_dir={args.results}",
    ]  # fmt: skip


COST_STEPS, COST_ROUNDS = 20, 2


def cost_side_by_side(methods: list[str], dataset: str, results: Path):
    """Per method, the fastest of COST_ROUNDS interleaved rounds: seconds per step and peak memory."""
    import pandas as pd

    from sweeper.results import collect

    for k in range(COST_ROUNDS):
        for method in methods:
            command = [sys.executable, "-m", "sweeper", f"dataset={dataset}", "model=minilm", f"method={method}",
                       f"train.max_steps={COST_STEPS}", "train.eval_size=50", f"sweeper.results_dir={results}/round{k}"]  # fmt: skip
            subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rounds = [collect.load_records(results / f"round{k}") for k in range(COST_ROUNDS)]  # same run ids: apart
    ok = [df[df["status"] == "ok"] for df in rounds]
    return pd.concat(ok).groupby("method")[["seconds_per_step", "peak_memory_mb"]].min()


def selected(df, steps: int):
    """Per (dataset, method) the point halving trained to the end (the lr that won on validation)."""
    done = df[(df["status"] == "ok") & (df["steps"] == steps)]
    best = done.sort_values("val_accuracy", ascending=False, kind="stable")
    return best.groupby(["dataset", "method"], sort=False).head(1)


def markdown(points, cost, datasets: list[str], commands: list[list[str]], wall: float, args) -> str:
    methods = [m for m in METHODS if m in set(points["method"])]
    acc = points.pivot(index="dataset", columns="method", values="accuracy").reindex(index=datasets, columns=methods)
    ranks = acc.rank(axis=1, ascending=False, method="average")
    lines = [
        "## PEFT methods across datasets (MiniLM, lr selected on validation)",
        "",
        f"`python scripts/bench_methods.py --n {args.n} --steps {args.steps} --eval-size {args.eval_size}` "
        f"(2 CPU cores, {wall / 60:.0f} min this invocation; finished points are skipped). {len(datasets)} "
        f"classification datasets drawn with seed 0; {len(methods)} methods; each with lr in "
        f"{{1, 3}} x its default, selected per dataset on validation accuracy by successive halving "
        f"(`sweeper.search=halving`, rungs {max(1, args.steps // 3)} and {args.steps} steps); train.max_steps="
        f"{args.steps} (the default is 150: a short budget, which favours fast learners), eval_size "
        f"{args.eval_size}. Cost: {COST_STEPS} steps of each method on {datasets[0]}, one process each, "
        f"methods interleaved, fastest of {COST_ROUNDS} rounds. Test accuracy of the selected configuration:",
        "",
        "| dataset | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for dataset, row in acc.iterrows():
        cells = ["-" if row[m] != row[m] else f"{row[m]:.3f}" for m in methods]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    by_method = points.groupby("method")
    summary = [
        ("**mean accuracy**", acc.mean(), "{:.3f}"),
        ("**mean rank** (1 = best)", ranks.mean(), "{:.2f}"),
        ("trainable params", by_method["trainable_params"].median(), "{:,.0f}"),
        ("s / step (side by side)", cost["seconds_per_step"], "{:.3f}"),
        ("s / step vs lora", cost["seconds_per_step"] / cost["seconds_per_step"].get("lora"), "{:.2f}"),
        ("peak memory MB (side by side)", cost["peak_memory_mb"], "{:.0f}"),
        ("peak memory vs lora", cost["peak_memory_mb"] / cost["peak_memory_mb"].get("lora"), "{:.2f}"),
    ]
    for label, values, fmt in summary:
        cells = [fmt.format(values[m]) if m in values and values[m] == values[m] else "-" for m in methods]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| datasets won by lr x1 / x3 | " + " | ".join(lr_choice(points, m) for m in methods) + " |")
    first = " ".join(["python", *commands[0][1:]]).replace(str(REPO) + "/", "")
    lines += [
        "",
        "One command per method (the others differ in `method=` and `method.lr=`):",
        "",
        "```",
        first,
        "```",
        "",
    ]
    return "\n".join(lines)


def lr_choice(points, method: str) -> str:
    """How many datasets selected the default lr and how many 3x it."""
    chosen = points[points["method"] == method]["lr"]
    high = int((chosen > default_lr(method) * 1.5).sum())
    return f"{len(chosen) - high} / {high}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-size", type=int, default=200)
    parser.add_argument("--results", default=str(REPO / "results" / "bench_methods"))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    datasets = sample_datasets("classification", args.n, seed=0)
    commands, t0 = [], time.time()
    for method in args.methods.split(","):
        command = sweep_command(method, datasets, args)
        commands.append(command)
        print(f"[bench_methods] {method}: {time.time() - t0:.0f} s so far", file=sys.stderr, flush=True)
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    from sweeper.results import collect

    points = selected(collect.load_records(args.results), args.steps)
    print(f"[bench_methods] cost side by side: {time.time() - t0:.0f} s so far", file=sys.stderr, flush=True)
    cost = cost_side_by_side(args.methods.split(","), datasets[0], Path(f"{args.results}_cost"))
    print(markdown(points, cost, datasets, commands, time.time() - t0, args))


if __name__ == "__main__":
    main()
