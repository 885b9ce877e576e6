"""Successive halving across a grid (`sweeper.search=halving`): spend steps where they matter.

    budgets = rung_budgets(min_steps=10, eta=3, max_steps=100)      # [10, 30, 100]
    survivors, waiting = promote(entries, rung, budget, eta)

Every point of the grid trains to the first rung (`train.stop_at=min_steps`, on the lr schedule of
its own `train.max_steps`, so a promoted point continues exactly as an uninterrupted run would);
then, within each group (`sweeper.halving.group_by`, default dataset and model), the configurations
(all seeds of one config together: their mean decides) are ranked by validation score and the best
1/eta (at least one) go on from their checkpoints to the next rung, up to `train.max_steps`.

Each rung is one wave through the launcher in use (Hydra's in-process one, `local`, `slurm`): the
wave's points are ordinary grid points with two bookkeeping overrides (`train.stop_at`,
`sweeper.halving.rung`), so skip / resume / retry / chunking work as in a grid. A point writes one
line per rung it reaches to <run_dir>/rungs.jsonl; promotions are decided from those lines alone,
so relaunching the command (after a detached wave, a crash, Ctrl-C) re-decides every rung exactly
as before and continues where the sweep stands.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tasks
from ..records import Status, read_existing, read_rungs
from ..runs import TRANSIENT_ATTEMPTS, result_config, run_dir_of, transient_failures
from .planner import set_apart_not_applicable


class HalvingError(ValueError):
    """A halving setting that cannot work; one line naming it."""


@dataclass
class Entry:
    """One grid point as halving sees it."""

    overrides: list[str]
    run_dir: Path
    group: tuple  # what its configurations compete within (sweeper.halving.group_by)
    unit: str  # its configuration: the result config without the seed (seeds advance together)
    task: str
    max_steps: int


def check_settings(halving, entries: Sequence[Entry], configs: Sequence[dict]) -> tuple[int, int]:
    """(eta, min_steps), or a HalvingError naming the bad setting."""
    eta, min_steps = halving.eta, halving.min_steps
    for name, value, low in (("eta", eta, 2), ("min_steps", min_steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise HalvingError(f"sweeper.halving.{name} must be an integer >= {low}, got {value!r}")
    for cfg in configs:
        if int(cfg["train"].get("eval_every") or 0) > 0:
            raise HalvingError(
                "sweeper.search=halving with train.eval_every > 0: early stopping and rungs both stop points; use one"
            )
    if min_steps >= max(e.max_steps for e in entries):
        raise HalvingError(f"sweeper.halving.min_steps={min_steps} leaves no rung below train.max_steps")
    return eta, min_steps


def rung_budgets(min_steps: int, eta: int, max_steps: int) -> list[int]:
    """Steps at the end of each rung: min_steps * eta^k while the next rung can still grow by a
    factor eta within max_steps, then max_steps (not [10, 30, 90, 100]: cutting to a third to save 10
    steps would drop two survivors out of three for nothing)."""
    budgets, budget = [], min_steps
    while budget * eta <= max_steps and budget < max_steps:
        budgets.append(budget)
        budget *= eta
    return budgets + [max_steps]


def make_entry(overrides: list[str], config: dict[str, Any], group_by: Sequence[str]) -> Entry:
    identity = result_config(config)
    identity["train"].pop("seed", None)
    unit = repr(sorted(identity.items(), key=lambda kv: kv[0]))
    group = tuple(_group_value(config, key) for key in group_by)
    return Entry(
        list(overrides),
        run_dir_of(config),
        group,
        unit,
        str(config["dataset"]["task"]),
        int(config["train"]["max_steps"]),
    )


def _group_value(config: dict[str, Any], key: str) -> str:
    """`dataset` / `model` / `method` by their names; any other key as a dotted path (e.g. train.lr)."""
    if key in ("dataset", "model", "method"):
        return str(config[key]["name"])
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return str(value)


def rung_score(entry: Entry, rung: int, budget: int) -> float | None:
    """The point's validation score at `rung` (higher is better: lower-is-better metrics negated),
    -inf for a point that failed, None while it has not reached the rung."""
    line = read_rungs(entry.run_dir).get(rung)
    target = min(budget, entry.max_steps)
    validation = line["validation"] if line is not None and line.get("steps") == target else None
    record = read_existing(entry.run_dir)
    if validation is None and record is not None:
        rerun = 0 < transient_failures(record) < TRANSIENT_ATTEMPTS  # a lost job, a full disk: it runs again
        if record["status"] == Status.FAILED and not rerun:
            return -math.inf
        section = record.get("train") or {}
        if record["status"] == Status.OK and (section.get("stopped_at_rung") is None or section.get("steps") == target):
            # finished by an earlier grid sweep, or paused at this step by hand (train.stop_at)
            validation = (record.get("metrics") or {}).get("validation")
        elif record["status"] == Status.OK and (section.get("steps") or 0) > target:
            raise HalvingError(
                f"{entry.run_dir.name} stopped at step {section.get('steps')}, past rung {rung}'s {target} steps, "
                "with no score at that rung: the sweep ran with other sweeper.halving settings; relaunch with those"
            )
    if validation is None:
        return None
    task = tasks.find(entry.task) or tasks.get(tasks.DEFAULT)
    metric, higher = task.primary, task.higher_is_better  # the report's headline metric
    value = validation.get(metric)
    if not isinstance(value, (int, float)) or math.isnan(value):
        return -math.inf
    return float(value) if higher else -float(value)


def promote(entries: Sequence[Entry], rung: int, budget: int, eta: int) -> tuple[list[Entry], list[Entry]]:
    """(the entries that go on to the next rung, the entries whose group still waits for results).

    Per group: configurations ranked by their seeds' mean score (ties by the configuration's text,
    so the same records always give the same promotions); the best ceil(n / eta) go on."""
    groups: dict[tuple, list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[entry.group].append(entry)
    survivors, waiting = [], []
    for members in groups.values():
        scores = {id(e): rung_score(e, rung, budget) for e in members}
        if any(score is None for score in scores.values()):
            waiting += [e for e in members if scores[id(e)] is None]
            continue
        by_unit: dict[str, list[float]] = defaultdict(list)
        for e in members:
            by_unit[e.unit].append(scores[id(e)])
        mean = {unit: sum(v) / len(v) for unit, v in by_unit.items()}
        ranked = sorted(mean, key=lambda unit: (-mean[unit], unit))
        kept = set(ranked[: max(1, math.ceil(len(ranked) / eta))])
        survivors += [e for e in members if e.unit in kept and mean[e.unit] > -math.inf]
    return survivors, waiting


def rung_overrides(entry: Entry, rung: int, budget: int) -> list[str]:
    return [o for o in entry.overrides if not o.startswith(("train.stop_at=", "sweeper.halving.rung="))] + [
        f"train.stop_at={budget}",
        f"sweeper.halving.rung={rung}",
    ]


def run_halving(sweeper, jobs: Sequence[Sequence[str]]) -> list:
    """Drive the rungs through `sweeper.launcher` (one launch per rung); returns the launches' JobReturns."""
    from .grid import GridComposer

    config = sweeper.config
    composer = GridComposer(sweeper.hydra_context.config_loader, config)
    configs = [composer.compose(list(overrides)).config for overrides in jobs]
    kept = set_apart_not_applicable(jobs, configs)  # in a rung they would leave their group waiting
    jobs, configs = [jobs[i] for i in kept], [configs[i] for i in kept]
    halving = config.sweeper.halving
    entries = [make_entry(list(o), c, list(halving.group_by)) for o, c in zip(jobs, configs)]
    if not entries:
        return []
    eta, min_steps = check_settings(halving, entries, configs)
    budgets = rung_budgets(min_steps, eta, max(e.max_steps for e in entries))
    print(f"halving: {len(entries)} point(s), rungs at {budgets} steps, eta {eta}", flush=True)
    returns, alive, first_idx = [], entries, 0
    for rung, budget in enumerate(budgets):
        print(f"halving rung {rung}: {len(alive)} point(s) to step {budget}", flush=True)
        batch = [rung_overrides(e, rung, budget) for e in alive]
        returns.append(sweeper.launcher.launch(batch, initial_job_idx=first_idx))
        first_idx += len(batch)
        if rung == len(budgets) - 1:
            break
        if config.sweeper.get("dry_run"):
            print("halving: dry run: the later rungs depend on this rung's validation scores", flush=True)
            break
        alive, waiting = promote(alive, rung, budget, eta)
        if waiting:  # complete groups go on; these wait for the next launch
            print(
                f"halving rung {rung}: {len({e.group for e in waiting})} group(s) wait for {len(waiting)} point(s) "
                "(running, detached or lost); relaunch the same command to promote them and go on",
                flush=True,
            )
        if not alive:
            break
    return returns
