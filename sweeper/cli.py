"""Command-line checks before Hydra composes anything.

Hydra answers `model=tiny_lama` with a page listing every option and `train.max_step=5` with a
stack of struct errors. Here each mistake gets one line naming the culprit and the closest names:

- an unknown config key (`train.max_step`) stops the command: every point would fail the same way;
- an unknown group option (`model=tiny_llama,tiny_lama`, `dataset=glob(fortnue_*)`) fails alone:
  it is dropped from the sweep, written as a `failed` record, and the other points run.
"""

from __future__ import annotations

import difflib
import sys
from functools import cache
from pathlib import Path

import yaml

from .config import default_results_dir
from .paths import CONF_DIR
from .records import Status, write_record
from .runs import check_plain_name, safe_name

GROUPS = ("dataset", "model", "method")


@cache
def group_options(group: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


@cache
def known_keys() -> frozenset[str]:
    """Every `section.key` a command line may set: config.yaml's sections + keys of any group option."""
    keys = set()
    root = _load_yaml(CONF_DIR / "config.yaml")
    if isinstance(root, str):
        print(f"error: {root}", file=sys.stderr)
        raise SystemExit(2)
    for section, body in root.items():
        if isinstance(body, dict) and section not in ("defaults", "hydra"):
            keys.update(f"{section}.{k}" for k in body)
    for group in GROUPS:
        for path in (CONF_DIR / group).glob("*.yaml"):
            body = _load_yaml(path)
            if isinstance(body, dict):
                keys.update(f"{group}.{k}" for k in body)
    return frozenset(keys)


@cache
def _load_yaml(path: Path) -> dict | str:
    """A config file's mapping, or one line saying why it is not one (only the points that use it fail)."""
    try:
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        return f"{path.relative_to(CONF_DIR.parent)} is not UTF-8 text ({error.reason} at byte {error.start})"
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return f"{path.relative_to(CONF_DIR.parent)} does not parse: {problem}{where}"
    return body if isinstance(body, dict) else ({} if body is None else f"{path.name} is not a mapping")


def option_body(group: str, option: str) -> dict | None:
    """conf/<group>/<option>.yaml as a mapping, None when it does not parse."""
    body = _load_yaml(CONF_DIR / group / f"{option}.yaml")
    return body if isinstance(body, dict) else None


def broken_option(group: str, option: str) -> str | None:
    """Why conf/<group>/<option>.yaml cannot be used, or None."""
    body = _load_yaml(CONF_DIR / group / f"{option}.yaml")
    return body if isinstance(body, str) else None


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _parse(arg: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(arg)
    except Exception:  # noqa: BLE001  Hydra reports its own grammar errors
        return None


def _check_key(key: str) -> str | None:
    if key.split(".")[0] not in ("train", "sweeper", *GROUPS) or key.count(".") == 0:
        return None
    top = ".".join(key.split(".")[:2])  # nested values (dataset.caps.train) are checked at their first level
    if top in known_keys():
        return None
    hint = _suggest(top, known_keys())
    if key.startswith("method.") and key.count(".") == 1:  # e.g. +method.use_dora=true
        hint += f"; a PEFT config field goes under method.config: +method.config.{key.split('.')[1]}=..."
    return f"unknown config key '{key}'{hint}"


def _check_group(override) -> tuple[list[str], list[str]]:
    """(valid values, [(name, one-line error)]) of a group override such as model=a,b or dataset=glob(x*)."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob

    group, options = override.key_or_group, group_options(override.key_or_group)
    value = override.value()
    if isinstance(value, Glob):
        matched = value.filter(list(options))
        broken = [
            (f"{group}-{v}", f"{group} '{v}': {broken_option(group, v)}") for v in matched if broken_option(group, v)
        ]
        if matched and not broken:
            return [override.input_line.split("=", 1)[1]], []  # kept as written
        if matched:
            return [v for v in matched if not broken_option(group, v)], broken
        pattern = ",".join(value.include)
        return [], [
            (
                f"{group}-glob-{pattern}",
                f"{group}=glob({pattern}) matches no {group}{_suggest(value.include[0].strip('*'), options)}",
            )
        ]
    values = [str(v) for v in value.list] if isinstance(value, ChoiceSweep) else [str(value)]
    good = [v for v in values if v in options and not broken_option(group, v)]
    errors = [
        (
            f"{group}-{v}",
            f"{group} '{v}': {broken_option(group, v)}"
            if v in options
            else f"unknown {group} '{v}'{_suggest(v, options)}",
        )
        for v in values
        if v not in good
    ]
    return good, errors


def _record_failure(name: str, error: str, argv: list[str], results_dir: Path) -> None:
    run_id = "invalid-" + safe_name(name)[:80]  # the same name sanitising as every run folder
    record = {"run_id": run_id, "status": Status.FAILED, "error": error, "error_type": "ConfigError", "command": argv}
    write_record(results_dir / "runs" / run_id, record)


def checked_argv(argv: list[str]) -> list[str]:
    """argv with unknown group options removed (each recorded as failed); exits on an unknown key."""
    out, errors, multirun = [argv[0]], [], "-m" in argv or "--multirun" in argv
    name = results_dir = None  # sweeper.name / sweeper.results_dir as given, else config.yaml's
    for arg in argv[1:]:
        override = _parse(arg) if "=" in arg and not arg.startswith("-") else None
        if override is None or override.key_or_group.startswith("hydra"):
            out.append(arg)
            continue
        key = override.key_or_group
        if key == "sweeper.results_dir":
            results_dir = str(override.value())
        elif key == "sweeper.name":
            name = str(override.value())
            try:
                if isinstance(override.value(), str):  # a sweep over names: each checked by the worker
                    check_plain_name(key, name)
            except ValueError as error:
                print(f"error: {error}", file=sys.stderr)
                raise SystemExit(2) from None
        if key in GROUPS:
            good, bad = _check_group(override)
            errors += bad
            if bad and good and multirun:
                arg = f"{key}={','.join(good)}"
            elif bad:
                arg = None
        elif error := _check_key(key):
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2)
        if arg is not None:
            out.append(arg)
    given = {a.split("=")[0] for a in argv[1:] if "=" in a}
    for group, option in _defaults().items():
        if group not in given and (problem := broken_option(group, option)):
            print(f"error: the default {group} '{option}': {problem}", file=sys.stderr)
            raise SystemExit(2)
    failures_dir = default_results_dir(name, results_dir) if errors else None
    for point_name, error in errors:
        print(f"[FAILED] {error}", file=sys.stderr, flush=True)
        _record_failure(point_name, error, argv, failures_dir)
    if errors and not _all_groups_runnable(argv, out):
        raise SystemExit(2)  # a group override lost every value: nothing of this command can run
    return out


def _defaults() -> dict[str, str]:
    """config.yaml's default option of each group (`- dataset: x`)."""
    root = _load_yaml(CONF_DIR / "config.yaml")
    entries = root.get("defaults", []) if isinstance(root, dict) else []
    return {k: str(v) for e in entries if isinstance(e, dict) for k, v in e.items() if k in GROUPS}


def _all_groups_runnable(argv: list[str], out: list[str]) -> bool:
    """False when a group override lost every value (nothing left to run for it)."""
    given = {a.split("=")[0] for a in argv[1:] if "=" in a and a.split("=")[0] in GROUPS}
    kept = {a.split("=")[0] for a in out[1:] if "=" in a and a.split("=")[0] in GROUPS}
    return given == kept
