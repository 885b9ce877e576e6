"""PEFT configs from a method section: fields checked against PEFT's own config class, one line per mistake.

    config = build_config("LORA", {"r": 8, "use_dora": True}, where="method.config")

Every PEFT method (PEFT 0.21: 45) has a dataclass config (`LoraConfig`, `VeraConfig`, ...) registered
under its `PeftType`. The fields a user writes are checked against that class before anything is
built: a typo names the closest fields, a field of another method's config says whose it is, and a
value PEFT itself refuses (its `__post_init__`) comes back as its first line.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from typing import Any

from .base import MethodError

# Fields of an adapter_config.json that describe where it was saved, not how to train: sweeper sets
# the task type and the mode itself, and the base is the point's model.
FILE_ONLY_FIELDS = frozenset(
    {"base_model_name_or_path", "revision", "inference_mode", "task_type", "auto_mapping", "peft_version"}
)


def user_fields(method_cfg) -> dict[str, Any]:
    """method.config (PEFT config fields) as plain values, interpolations resolved ({} when absent)."""
    from omegaconf import OmegaConf

    fields = method_cfg.get("config") or {}
    return OmegaConf.to_container(fields, resolve=True) if OmegaConf.is_config(fields) else dict(fields)


def config_classes() -> dict[str, type]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(k, "value", k)): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def config_class(peft_type: Any, key: str = "method.peft_type") -> type:
    """PEFT's config class of `peft_type` (case-insensitive: lora, LORA), or a one-line MethodError."""
    classes = config_classes()
    name = str(peft_type or "").upper()
    if name not in classes:
        close = difflib.get_close_matches(name, classes, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; PEFT knows {', '.join(sorted(classes))}"
        raise MethodError(f"{key}={peft_type!r} is no PEFT method{hint}")
    return classes[name]


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "peft_type"]


def check_fields(cls: type, fields: dict[str, Any], where: str) -> None:
    """A one-line MethodError for the first key of `fields` that is no field of `cls`."""
    known = field_names(cls)
    for key in fields:
        if key in known:
            continue
        owners = sorted(c.__name__ for c in set(config_classes().values()) if key in field_names(c))
        whose = f" (a field of {', '.join(owners[:3])})" if owners else ""
        close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MethodError(f"{where}.{key} is no field of PEFT's {cls.__name__}{whose}{hint}")


def build_config(cls: type, fields: dict[str, Any], where: str):
    """`cls(**fields)` after the field check; PEFT's own refusal (a bad value) as one line."""
    check_fields(cls, fields, where)
    try:
        return cls(**fields)
    except (ValueError, TypeError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MethodError(f"{where}: PEFT's {cls.__name__} refuses it: {first}") from None


def resolved(config) -> dict[str, Any]:
    """A PEFT config as JSON-safe plain values (the record's `adapter.config`)."""
    return {k: _plain(v) for k, v in sorted(config.to_dict().items()) if not k.startswith("_")}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
