"""Every grid point's resolved config at near-floor cost, equal to what Hydra composes.

Hydra composes a point from scratch: parse the overrides, build the defaults list, load and merge
every YAML file, then apply the `key=value` overrides (~0.1 s a point here). A grid repeats the
same few group options and scalar values thousands of times, so this composes with Hydra only

  - the base config once, and each group option used (`dataset=x`, `model=y`) once, on its own;
    in a group whose options are plain sections (checked with Hydra on the first two composed)
    the other options' files are read instead (a 256-dataset grid: 5 compositions, not 258);
  - one template per combination of group options and overridden keys, which the points of that
    combination share, setting their values with Hydra's own override code.

A point's config is a plain resolved dict whose untouched sections are shared between points
(read them, never mutate them). Whatever the fast path cannot prove equal to Hydra's result goes
through Hydra's own `load_sweep_config` (a fallback, counted): a group option that writes outside
its own section or into `hydra`, `+key` / `++key` / `~key`, `group@pkg=...`, values that are
containers or interpolations, keys that are not plain leaves of the config.
tests/test_planner.py compares both paths with Hydra on a grid that mixes every kind of override.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import Container, DictConfig, OmegaConf
from omegaconf.nodes import AnyNode

from .trees import ABSENT, assign, leaf_paths, lookup, strings

MISSING = "???"


@dataclass
class PointConfig:
    """What the planner keeps of a point: its resolved task config and its group choices."""

    config: dict[str, Any]
    choices: dict[str, str]  # group -> option of this point's group overrides (hydra.runtime.choices)


@dataclass
class _Template:
    """The points of one group-option combination that override the same keys."""

    cfg: DictConfig  # a composed config, written into only when a point needs OmegaConf's answer
    sections: dict[str, Any]  # resolved sections no override touches: shared by every point
    plain: dict[str, Any]  # the other sections, unresolved; each point gets a copy with its values
    constant: dict[tuple, Any]  # interpolation leaf -> resolved value: it reads no overridden key
    varying: dict[tuple, tuple[str, ...]]  # interpolation leaf -> the overridden keys it may read
    typed: tuple[str, ...]  # overridden keys whose node converts values (structured configs)
    memo: dict[tuple, Any] = field(default_factory=dict)  # (leaf, values it reads) -> resolved


@dataclass
class GridComposer:
    """`composer.compose(overrides)` -> PointConfig, for the points of one sweep."""

    loader: Any  # Hydra's ConfigLoader (hydra_context.config_loader)
    master: DictConfig  # the multirun's config (the launcher's `config`)
    fallbacks: int = 0  # points composed by Hydra from scratch
    compositions: int = 0  # Hydra compositions so far (base, group options, fallbacks)
    _parsed: dict[str, Override] = field(default_factory=dict)
    _groups: dict[str, bool] = field(default_factory=dict)
    _options: dict[tuple[str, str], tuple[str, Any] | None] = field(default_factory=dict)
    _plain: dict[str, bool] = field(default_factory=dict)  # group -> its options' files are their sections
    _combos: dict[tuple, DictConfig | None] = field(default_factory=dict)
    _templates: dict[tuple, _Template] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parser = OverridesParser.create()
        self.base = self._hydra([])
        self.base_task = _task_part(self.base, resolve=False)
        self.base_choices = dict(self.base.hydra.runtime.choices)

    # ------------------------------------------------------------ the one entry point
    def compose(self, overrides: list[str]) -> PointConfig:
        split = self._split([self._parse(line) for line in overrides])
        template = None if split is None else self._template(*split)
        if template is None:
            return self._from_hydra(overrides)
        groups, _, plain = split
        return PointConfig(self._fill(template, plain), dict(groups))

    # ------------------------------------------------------------ classification
    def _parse(self, line: str) -> Override:
        if line not in self._parsed:  # the same strings repeat across the whole grid
            self._parsed[line] = self.parser.parse_override(line)
        return self._parsed[line]

    def _is_group(self, o: Override) -> bool:
        if o.key_or_group not in self._groups:
            self._groups[o.key_or_group] = self.loader.repository.group_exists(o.key_or_group)
        return self._groups[o.key_or_group] and not isinstance(o.value(), dict)

    def _split(self, parsed: list[Override]) -> tuple[tuple, tuple, list[Override]] | None:
        """(group choices, structural overrides, plain overrides), or None: Hydra composes the point.

        Plain: `key=scalar`, set per point on a shared template. Structural (`+key`, `++key`,
        `~key`, container or interpolation values): part of the template, applied once to it."""
        groups, structural, plain = [], [], []
        for o in parsed:
            if o.is_hydra_override() or o.package is not None:
                return None
            if self._is_group(o):
                if o.type != OverrideType.CHANGE or o.is_add() or o.is_force_add() or o.is_delete():
                    return None  # +group=option reshapes the defaults list
                groups.append((o.key_or_group, str(o.value())))
            elif o.is_add() or o.is_force_add() or o.is_delete() or not _plain_scalar(o.value()):
                structural.append(o)
            else:
                plain.append(o)
        keys = sorted(o.key_or_group for o in structural + plain)
        if any(b == a or b.startswith(a + ".") for a, b in zip(keys, keys[1:])):
            return None  # overlapping keys: Hydra's order of application decides
        if any(o.type != OverrideType.CHANGE for o in plain):
            return None  # sweeps are expanded by the sweeper before they reach here
        return tuple(groups), tuple(structural), plain

    # ------------------------------------------------------------ templates
    def _option_section(self, group: str, option: str) -> tuple[str, Any] | None:
        """(top-level key, unresolved section) that `group=option` composes, or None when the option
        changes anything else (its own defaults list, a global package, the hydra section).
        In a plain group (below) the option's file is its section: read, not composed."""
        key = (group, option)
        if key not in self._options:
            direct = self._read_option(group, option) if self._plain_group(group) else None
            self._options[key] = direct if direct is not None else self._composed_section(group, option)
        return self._options[key]

    def _composed_section(self, group: str, option: str) -> tuple[str, Any] | None:
        composed = self._hydra([f"{group}={option}"])
        task = _task_part(composed, resolve=False)
        top = self._top(group)
        others_same = all(task.get(k) == v for k, v in self.base_task.items() if k != top)
        same_keys = set(task) - {top} == set(self.base_task) - {top}
        hydra_same = _hydra_part(composed) == _hydra_part(self.base)
        return (top, task[top]) if others_same and same_keys and hydra_same and top in task else None

    def _plain_group(self, group: str) -> bool:
        """True when Hydra's section of a group option is that option's file, as read. Decided once
        Hydra has composed two options of the group (until then: False): their sections and the
        default's (in the base) must equal the files, and composing without the group (`~group`)
        must leave no section behind (nothing else writes into it: the primary config, a schema).
        An option with a defaults list, a package header or a ConfigStore schema is composed anyway."""
        if group in self._plain:
            return self._plain[group]
        composed = [(o, section) for (g, o), section in self._options.items() if g == group]
        if len(composed) < 2:
            return False
        top, default = self._top(group), self.base_choices.get(group)
        self._plain[group] = (
            "/" not in group
            and default is not None
            and top in self.base_task
            and self._read_option(group, default) == (top, self.base_task[top])
            and all(section is not None and self._read_option(group, o) == section for o, section in composed)
            and not self._written_elsewhere(group)
        )
        return self._plain[group]

    def _written_elsewhere(self, group: str) -> bool:
        """Does anything but the group's option write its section (the primary config, another
        group)? Composed once without the group (`~group`): the section must then be absent."""
        try:
            return self._top(group) in _task_part(self._hydra([f"~{group}"]), resolve=False)
        except Exception:  # noqa: BLE001  cannot tell: compose every option
            return True

    def _read_option(self, group: str, option: str) -> tuple[str, Any] | None:
        """The option's file as Hydra's repository loads it, or None when it is more than a section."""
        try:
            result = self.loader.repository.load_config(f"{group}/{option}")
        except Exception:  # noqa: BLE001  Hydra composes it and says what is wrong
            return None
        if result is None or result.is_schema_source or result.defaults_list:
            return None
        if self.loader.repository.get_schema_source().is_config(f"{group}/{option}"):
            return None  # a ConfigStore schema of the same name: Hydra merges the file over it
        if (result.header or {}).get("package") not in (None, "_group_"):
            return None
        return self._top(group), OmegaConf.to_container(result.config, resolve=False)

    def _combo(self, groups: tuple, structural: tuple[Override, ...]) -> DictConfig | None:
        """The config of one combination of group options (assembled from the options' sections)
        with the structural overrides applied, as Hydra applies them, after the defaults."""
        key = (groups, tuple(o.input_line for o in structural))
        if key not in self._combos:
            self._combos[key] = self._assemble(groups, structural)
        return self._combos[key]

    def _assemble(self, groups: tuple, structural: tuple[Override, ...]) -> DictConfig | None:
        task = dict(self.base_task)
        tops = [self._top(g) for g, _ in groups]
        if len(set(tops)) < len(tops):
            return None  # two groups of one section (model=x model/head=y): Hydra merges them
        for group, option in groups:
            section = self._option_section(group, option)
            if section is None:
                return None
            task[section[0]] = section[1]
        cfg = OmegaConf.create(task)
        OmegaConf.set_struct(cfg, True)  # as Hydra leaves a composed config
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        try:
            ConfigLoaderImpl._apply_overrides_to_config(list(structural), cfg)
        except Exception:  # noqa: BLE001  Hydra composes the point and raises its own error
            return None
        return cfg

    @staticmethod
    def _top(group: str) -> str:
        return group.split("/")[0]

    def _template(self, groups: tuple, structural: tuple, values: list[Override]) -> _Template | None:
        keys = tuple(o.key_or_group for o in values)
        key = (groups, tuple(o.input_line for o in structural), keys)
        if key not in self._templates:
            composed = self._combo(groups, structural)
            if composed is not None and any(k[:2] == key[:2] for k in self._templates):
                composed = copy.deepcopy(composed)  # another key set of this combination: its own copy
                OmegaConf.copy_cache(from_config=self.master, to_config=composed)
            self._templates[key] = None if composed is None else _make_template(composed, keys)
        return self._templates[key]

    def _fill(self, template: _Template, values: list[Override]) -> dict[str, Any]:
        given = {o.key_or_group: o.value() for o in values}
        out = dict(template.sections)
        out.update(copy.deepcopy(template.plain))
        for name, value in given.items():
            assign(out, name.split("."), value)
        for path, value in template.constant.items():
            assign(out, path, value)
        applied = False

        def from_omegaconf(path) -> Any:
            nonlocal applied
            if not applied:  # Hydra's own code writes this point's values into the template
                ConfigLoaderImpl._apply_overrides_to_config(values, template.cfg)
                applied = True
            return _resolved(_select(template.cfg, path))

        for path, reads in template.varying.items():
            memo_key = (path, tuple((type(given[k]).__name__, given[k]) for k in reads))  # 1, 1.0, True differ
            if memo_key not in template.memo:
                template.memo[memo_key] = from_omegaconf(path)
            assign(out, path, template.memo[memo_key])
        for name in template.typed:
            assign(out, name.split("."), from_omegaconf(name.split(".")))
        return {k: out[k] for k in self.base_task if k in out} | {
            k: v for k, v in out.items() if k not in self.base_task
        }

    # ------------------------------------------------------------ Hydra itself
    def _hydra(self, overrides: list[str]) -> DictConfig:
        self.compositions += 1
        return self.loader.load_sweep_config(self.master, overrides)

    def _from_hydra(self, overrides: list[str]) -> PointConfig:
        self.fallbacks += 1
        from hydra.core.hydra_config import HydraConfig

        composed = self._hydra(list(overrides))
        HydraConfig.instance().set_config(composed)  # ${hydra:...} in the task config reads this point
        choices = {k: v for k, v in composed.hydra.runtime.choices.items() if self.base_choices.get(k) != v}
        return PointConfig(_task_part(composed, resolve=True), choices)


# ---------------------------------------------------------------- templates
# Resolvers whose answer depends only on the keys named in their arguments (or on nothing in the config).
_PURE_RESOLVERS = {"oc.select", "oc.env", "oc.decode", "oc.create", "oc.deprecated", "now"}
_RESOLVER = re.compile(r"\$\{\s*([\w.]+)\s*:")
_NAME = re.compile(r"[A-Za-z_][\w]*(?:\.[\w]+)*")


def _make_template(cfg: DictConfig, keys: tuple[str, ...]) -> _Template | None:
    """None when a key is not a plain leaf of cfg (Hydra then raises, merges or converts as it does)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for name in keys:
        leaf = lookup(plain, name.split("."))
        if isinstance(leaf, (dict, list)) or leaf is ABSENT or leaf == MISSING:
            return None
    for name in keys:
        assign(plain, name.split("."), None)  # overridden: no longer an interpolation leaf
    leaves = [p for p in leaf_paths(plain) if _is_interpolation(lookup(plain, p))]
    if any("hydra" in lookup(plain, p) for p in leaves):
        return None  # ${hydra:...} reads the point's own hydra config: Hydra composes those points
    touched = {k.split(".")[0] for k in keys} | {p[0] for p in leaves}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    constant, varying = {}, {}
    for path in leaves:
        reads = _reads(plain, path, keys)
        if reads:
            varying[path] = reads
        else:
            constant[path] = lookup(resolved, path)
    typed = tuple(k for k in keys if type(_node(cfg, k.split("."))) is not AnyNode)
    return _Template(
        cfg,
        sections={k: v for k, v in resolved.items() if k not in touched},
        plain={k: plain[k] for k in touched},
        constant=constant,
        varying=varying,
        typed=typed,
    )


def _reads(plain: dict, path: tuple, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The overridden keys an interpolation leaf may read, following interpolations it names. An
    over-approximation (every dotted name in the text counts); everything when it cannot tell."""
    names, todo, seen = set(), [lookup(plain, path)], set()
    while todo:
        text = todo.pop()
        if any(r not in _PURE_RESOLVERS for r in _RESOLVER.findall(text)) or "${." in text or ":." in text:
            return keys  # a custom resolver, or a relative key: may read anything
        for name in _NAME.findall(text):
            if name in seen:
                continue
            seen.add(name)
            names.add(name)
            target = lookup(plain, name.split("."))
            todo += [v for v in strings(target) if "${" in v]
    return tuple(k for k in keys if any(k == n or k.startswith(n + ".") or n.startswith(k + ".") for n in names))


# ---------------------------------------------------------------- helpers on plain containers
def _task_part(cfg: DictConfig, resolve: bool) -> dict[str, Any]:
    """The config without its hydra section, as the task function receives it (task_config)."""
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(task, resolve=resolve)


def _hydra_part(cfg: DictConfig) -> Any:
    """The hydra section minus what differs between any two points by construction."""
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    hydra["runtime"].pop("choices", None)
    hydra.pop("overrides", None)
    hydra["job"].pop("override_dirname", None)
    return hydra


def _plain_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return "$" not in value and "\\" not in value and value != MISSING
    return value is None or isinstance(value, (bool, int, float))


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _node(cfg: DictConfig, path) -> Any:
    """The node at path, unresolved (its type says whether assigning converts values)."""
    parent = _select(cfg, path[:-1])
    return parent._get_node(path[-1])


def _select(cfg: DictConfig, path) -> Any:
    node = cfg
    for part in path:
        node = node[part]
    return node


def _resolved(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
