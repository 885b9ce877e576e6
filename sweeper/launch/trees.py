"""Small helpers on plain nested containers (dicts and lists), for sweeper.launch.grid."""

from __future__ import annotations

from typing import Any

ABSENT = object()  # what lookup() returns for a path that is not there


def lookup(tree: Any, path) -> Any:
    for part in path:
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree):
            tree = tree[part]
        else:
            return ABSENT
    return tree


def assign(tree: Any, path, value: Any) -> None:
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


def leaf_paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in leaf_paths(v, (*prefix, i))]
    return [prefix]


def strings(tree: Any) -> list[str]:
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in strings(v)]
    return [tree] if isinstance(tree, str) else []
