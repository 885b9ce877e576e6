"""The report CLI: summary tables and plots of a sweep.

    python -m sweeper.report results/my_sweep [more sweep folders] [--out DIR] [--tie 0.005]

The numbers are sweeper.results.tables (per dataset) and sweeper.results.across (across datasets);
this module orders them into Blocks, reader first, and renders those as markdown and as one HTML
page (sweeper.results.page), with the plots and CSVs beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import tasks
from ..records import Status
from . import across, collect, page
from .baselines import config_table, method_table, rule_text, significance_summary
from .markdown import markdown_table
from .tables import TIE_TOL, best_configs, method_points, seed_table, summarize

# ---------------------------------------------------------------- renderings


def display_configs(configs: pd.DataFrame) -> pd.DataFrame:
    """config_table / method_table with human units: params with separators, seconds rounded."""
    if configs.empty:
        return configs
    out = configs.drop(columns=["model", "method", "r"], errors="ignore").copy()
    if "trainable_params" in out:
        out["trainable_params"] = out["trainable_params"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    for column, digits in [
        ("mean_score", 4),
        ("mean_rank", 2),
        ("train_seconds", 1),
        ("peak_memory_mb", 0),
        ("estimated_memory_mb", 0),
    ]:
        if column in out:
            out[column] = out[column].map(lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}")
    return out


def display_best(best: pd.DataFrame) -> pd.DataFrame:
    out = best.rename(columns={"val_mean": "validation", "mean": "test", "std": "test_std"})
    for column in ("validation", "test", "test_std", "val_margin"):
        out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    return out


@dataclass
class Block:
    """One section of the report, rendered alike to markdown and to the HTML page."""

    title: str
    level: int = 2
    text: str = ""
    table: pd.DataFrame | None = None
    images: list[str] = field(default_factory=list)  # file names in the report folder
    split_by: str | None = None  # markdown: one table per value of this column (HTML filters instead)

    @property
    def index(self) -> bool:
        return self.table is not None and not isinstance(self.table.index, pd.RangeIndex)


@dataclass
class Numbers:
    """Every table the report shows and writes, computed once from the long table."""

    summary: pd.DataFrame  # one row per point (tables.summarize)
    methods: pd.DataFrame  # each method's validation-selected point per dataset (tables.method_points)
    studies: list  # across.Study per task and family
    configs: pd.DataFrame  # baselines.config_table
    method_wtl: pd.DataFrame  # baselines.method_table
    best: pd.DataFrame  # tables.best_configs

    @classmethod
    def of(cls, df: pd.DataFrame, tol: float = TIE_TOL) -> Numbers:
        summary = summarize(df)
        methods = method_points(summary)
        return cls(
            summary=summary,
            methods=methods,
            studies=across.studies(methods, dataset_families(summary)),
            configs=config_table(summary, tol),
            method_wtl=method_table(summary, tol, methods),
            best=best_configs(summary),
        )


def named_tables(df: pd.DataFrame, tol: float = TIE_TOL) -> dict[str, pd.DataFrame]:
    """Every table of the report, display-ready, keyed by a title."""
    return {b.title: b.table for b in report_blocks(df, Numbers.of(df, tol), tol) if b.table is not None}


def report_blocks(df: pd.DataFrame, numbers: Numbers, tol: float = TIE_TOL) -> list[Block]:
    """The report, reader first: per task the methods across datasets (tests, diagram), families,
    pairwise tests; then per-dataset comparisons, configurations and scores grouped by family."""
    summary = numbers.summary
    blocks = overview_blocks(numbers)
    blocks.append(Block("Per-dataset comparisons (win / tie / loss)", text=rule_text(tol) + "\n\n" +
                        significance_summary(summary, tol, numbers.methods)))  # fmt: skip
    blocks.append(Block("Configurations: test score, mean rank, W/T/L vs validation-selected baselines, cost",
                        table=display_configs(numbers.configs)))  # fmt: skip
    best = numbers.best.merge(summary[["task", "dataset", "family"]].drop_duplicates(["task", "dataset"]))
    best = best.sort_values(["task", "family", "dataset"], kind="stable")
    blocks.append(Block("Best configuration per dataset (selected on validation, test score reported)",
                        table=display_best(best)))  # fmt: skip
    blocks += per_dataset_blocks(summary)
    blocks.append(Block("Failed runs", table=collect.failures(df)))
    return blocks


def overview_blocks(numbers: Numbers) -> list[Block]:
    """Per task: the methods table with the tests across datasets and the CD diagram; then the
    families; then every pair."""
    blocks, studies = [], numbers.studies
    for study in studies:
        if study.scope != across.ALL:
            continue
        table = methods_overview(study, numbers.method_wtl)
        text = study.verdict() + "\n\n" + METHODS_LEGEND
        blocks.append(
            Block(f"{study.task}: methods across datasets", text=text, table=table, images=[study.diagram_file])
        )
        families = [s for s in studies if s.task == study.task and s.scope != across.ALL]
        if families:
            blocks.append(Block(f"{study.task}: by dataset family", level=3, table=family_table(study, families),
                                text=FAMILY_LEGEND))  # fmt: skip
        if len(study.pairwise):
            blocks.append(Block(f"{study.task}: every pair of methods (Wilcoxon signed-rank, Holm)", level=3,
                                table=display_pairs(study.pairwise)))  # fmt: skip
    return blocks


METHODS_LEGEND = (
    "Each method is scored, on each dataset, by its configuration selected on validation (test score). "
    "mean_rank: 1 = best on a dataset, averaged over the datasets every method has; p_vs_best / "
    "p_vs_full / p_vs_tfidf: Wilcoxon signed-rank over those datasets against the best-ranked method, "
    "full fine-tuning of the same model and the tfidf baseline, Holm-adjusted within each column; "
    "W/T/L: per dataset, significant differences only (rule below)."
)
FAMILY_LEGEND = (
    "Mean rank of each method within a family's datasets (1 = best); N datasets; Friedman p over the methods."
)


def methods_overview(study, wtl: pd.DataFrame) -> pd.DataFrame:
    """The at-a-glance table: the study's ranks and p-values beside the W/T/L counts."""
    table = study.table.copy()
    extra = wtl[wtl["task"] == study.task].drop(columns=["task", "mean_score", "mean_rank", "n_datasets"],
                                                errors="ignore")  # fmt: skip
    table = table.merge(extra, on="unit", how="left")
    for column in [c for c in table if c.startswith("p_vs_")]:
        table[column] = table[column].map(across.format_p)
    table["mean_score"] = table["mean_score"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    table["mean_rank"] = table["mean_rank"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return table.rename(columns={"unit": "method"})


def family_table(overall, families: list) -> pd.DataFrame:
    """family x method mean ranks, with N and Friedman's p per family."""
    rows = []
    for study in families:
        row = {"family": study.scope.removeprefix("family "), "N": study.n_datasets}
        row["friedman_p"] = across.format_p(study.friedman[1]) if study.friedman else ""
        row |= {unit: f"{rank:.2f}" for unit, rank in study.ranks.items()}
        rows.append(row)
    columns = ["family", "N", "friedman_p"] + list(overall.ranks.index)
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[c for c in columns if c in frame] + [c for c in frame if c not in columns])


def display_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    out = pairs.sort_values("p_holm", kind="stable").copy()
    out["median_diff"] = out["median_diff"].map(lambda v: f"{v:+.4f}")
    out["p"] = out["p"].map(across.format_p)
    out["p_holm"] = out["p_holm"].map(across.format_p)
    return out[["a", "b", "n", "median_diff", "better", "p", "p_holm"]].reset_index(drop=True)


def per_dataset_blocks(summary: pd.DataFrame) -> list[Block]:
    """Per task, the dataset x configuration score table (mean ± std (n)), rows grouped by family."""
    blocks = []
    families = dataset_families(summary)
    for task in tasks.all_tasks():
        table = seed_table(summary, task.name)
        if table.empty:
            continue
        table.insert(0, "family", table.index.map(families))
        table = table.sort_values("family", kind="stable")
        better = "higher" if task.higher_is_better else "lower"
        title = f"{task.name}: test {task.primary}, mean ± std (number of seeds), {better} is better"
        blocks.append(Block(title, text="Scores per dataset, grouped by family.", table=table, split_by="family"))
    return blocks


def dataset_families(summary: pd.DataFrame) -> pd.Series:
    """dataset -> family."""
    return summary.drop_duplicates("dataset").set_index("dataset")["family"]


def intro_text(df: pd.DataFrame) -> str:
    """The paragraph above the tables: counts and the warnings a reader must see first."""
    return "\n\n".join(p for p in [overview(df), df.attrs.get("repeated_seeds")] if p)


def overview(df: pd.DataFrame) -> str:
    """One paragraph: how many runs, how many failed, which record files could not be read."""
    n_ok = int((df["status"] == Status.OK.value).sum())
    skipped = df.attrs.get("skipped", [])
    text = f"{len(df)} runs: {n_ok} ok, {len(df) - n_ok} failed; {len(skipped)} unreadable record file(s) skipped"
    return text + ("".join(f"\n- `{path}`: {reason}" for path, reason in skipped) if skipped else ".")


def render_markdown(blocks, title: str = "Sweep report", intro: str = "") -> str:
    """summary.md: the blocks in order; per-dataset tables split into one table per family."""
    blocks = _as_blocks(blocks)
    parts = [f"# {title}\n"] + ([intro + "\n"] if intro else [])
    for block in blocks:
        parts.append(f"{'#' * block.level} {block.title}\n")
        if block.text:
            parts.append(block.text + "\n")
        parts += [f"![{name}]({name})\n" for name in block.images]
        if block.table is None:
            continue
        table = block.table
        if block.split_by and table[block.split_by].nunique() > 1:
            for value, rows in table.groupby(block.split_by, sort=False):
                heading = f"{'#' * (block.level + 1)} {block.split_by} {value}\n"
                parts += [heading, markdown_table(rows, index=block.index)]
        else:
            parts.append(markdown_table(table, index=block.index))
    return "\n".join(parts)


def render_html(blocks, title: str = "Sweep report", intro: str = "", images: dict[str, Path] | None = None) -> str:
    """summary.html: one self-contained page (sweeper.results.page)."""
    return page.render(_as_blocks(blocks), title, intro, images or {})


def _as_blocks(blocks) -> list[Block]:
    """Blocks, or the {title: table} of named_tables (older callers)."""
    if isinstance(blocks, dict):
        return [Block(name, table=table) for name, table in blocks.items()]
    return list(blocks)


STOPPED_TITLE = "Stopped at a halving rung (trained to the rung's budget only; not in the tables above)"
STOPPED_COLUMNS = ["task", "dataset", "config", "seed", "stopped_at_rung", "steps", "max_steps", "val_score", "score"]


def split_stopped(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs trained to their max_steps, runs successive halving stopped at a rung). Stopped runs
    had fewer steps: set beside the finished ones they would look like worse configurations."""
    stopped = df["stopped_at_rung"].notna() if "stopped_at_rung" in df else pd.Series(False, index=df.index)
    finished, halted = df[~stopped].copy(), df[stopped]
    finished.attrs = dict(df.attrs)
    return finished, halted[[c for c in STOPPED_COLUMNS if c in halted]].reset_index(drop=True)


def write_report(
    df: pd.DataFrame, out_dir: str | os.PathLike, tol: float = TIE_TOL, run_ids: list[str] | None = None
) -> dict[str, Path]:
    """summary.md, summary.html, CSVs of the raw numbers and every plot, into `out_dir`."""
    from . import plots  # matplotlib only when plots are wanted

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df, stopped = split_stopped(df)
    numbers = Numbers.of(df, tol)  # once: every block, plot and CSV reads it
    blocks = report_blocks(df, numbers, tol)
    if not stopped.empty:
        blocks.append(Block(STOPPED_TITLE, table=stopped))
    title = "Sweep report: " + (", ".join(sorted(df["sweep"].dropna().astype(str).unique())) or "?")
    figures = plots.write_plots(df, numbers.summary, out, run_ids=run_ids, studies=numbers.studies)
    blocks.append(Block("Plots", text="Every plot of the report folder.", images=[n for n in figures if
                        not any(n in b.images for b in blocks)]))  # fmt: skip
    written = {"summary.md": out / "summary.md", "summary.html": out / "summary.html"}
    intro = intro_text(df)
    if not stopped.empty:
        intro += f"\n\nSuccessive halving stopped {len(stopped)} run(s) at a rung: listed apart, at the end."
    written["summary.md"].write_text(render_markdown(blocks, title, intro), encoding="utf-8")
    written["summary.html"].write_text(render_html(blocks, title, intro, figures), encoding="utf-8")
    pairs = [s.pairwise.assign(task=s.task, scope=s.scope) for s in numbers.studies if len(s.pairwise)]
    for name, frame in [
        ("points.csv", numbers.summary),
        ("best.csv", numbers.best),
        ("configs.csv", numbers.configs),
        ("methods.csv", numbers.method_wtl),
        ("pairwise.csv", pd.concat(pairs) if pairs else pd.DataFrame(columns=["task", "scope", "a", "b", "p"])),
        ("failed.csv", collect.failures(df)),
        ("stopped.csv", stopped),
    ]:
        frame.to_csv(out / name, index=False)
        written[name] = out / name
    written.update(figures)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sweeper.report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Summary tables of a sweep (mean ± std over seeds; per method and per dataset the\n"
        "configuration selected on validation, with its test score; mean rank; win/tie/loss vs\n"
        "full fine-tuning, the tfidf baseline and the majority class, significant differences\n"
        "only; cost) and plots.",
        epilog="Writes summary.md, summary.html, points/best/configs/methods/failed.csv and PNG plots into\n"
        "PATH/report/ (the first PATH) or --out DIR.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="sweep or results folder(s); several are combined")
    p.add_argument("--out", metavar="DIR", help="output folder (default: FIRST_PATH/report)")
    p.add_argument(
        "--tie",
        type=float,
        default=TIE_TOL,
        metavar="TOL",
        help="tie tolerance where no significance test applies (lm, records without predictions):"
        f" absolute for accuracy, relative for perplexity (default {TIE_TOL})",
    )
    p.add_argument("--runs", nargs="*", metavar="RUN_ID", help="run ids for the loss-curve plot (default: a few)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    df = collect.load_for_cli(args.paths)
    if isinstance(df, int):
        return df
    out = Path(args.out) if args.out else collect.default_out_dir(args.paths) / "report"
    try:
        written = write_report(df, out, tol=args.tie, run_ids=args.runs)
    except OSError as error:  # a colleague's read-only sweep
        return collect.cannot_write(out, error, "--out DIR writes the report elsewhere")
    print(f"report for {len(df)} runs written to {out}/:")
    for name in written:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
