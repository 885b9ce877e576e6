"""Tasks as registered objects: one module per task, one place a task's behaviour lives.

    task = tasks.get(cfg.dataset.task)      # the Task every stage asks
    task.primary, task.higher_is_better     # the headline metric (tables, halving, report)
    task.build_frames / encode / split_metrics ...   # the hooks (sweeper.tasks.base.Task)

Adding a task: a module here with a `@register`-ed Task subclass, imported below; see docs/tasks.md.
"""

from __future__ import annotations

from . import classification, generation, lm, multilabel  # noqa: F401  registers each task
from .base import DEFAULT, REGISTRY, Task, TaskError, register


def get(name) -> Task:
    """The task called `name` (None: the default, classification); TaskError names the known ones."""
    key = DEFAULT if name is None else str(name)
    if key not in REGISTRY:
        raise TaskError(f"task must be one of {', '.join(names())}, got {name!r}")
    return REGISTRY[key]


def find(name) -> Task | None:
    """The task called `name`, or None: readers meet records of tasks this version may not know."""
    return REGISTRY.get(str(name))


def names() -> list[str]:
    return list(REGISTRY)


def all_tasks() -> list[Task]:
    """Every task in the order tables and plots show them."""
    return sorted(REGISTRY.values(), key=lambda task: task.position)


__all__ = ["DEFAULT", "Task", "TaskError", "all_tasks", "find", "get", "names", "register"]
