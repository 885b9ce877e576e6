"""Training methods, one module each, registered by name (`method.name` in the config).

A method decides which parameters train and may hook into the loop:

    method = build_method(cfg.method, cfg.model, task)
    model = method.wrap(model)                  # e.g. attach PEFT LoRA layers
    params = method.optimizer_parameters(model) # every parameter that may ever train
    ... each step: method.before_step(step, model); lr *= method.lr_scale(step, train_cfg)
                   ... optimizer.step() ...; events = method.after_step(step, model, optimizer)

A `standalone` method (tfidf) builds no torch model: it trains and scores itself
(`fit_and_score`), and run_point records what it returns.

What a method can do is declared on its class (base.py: `saves_adapter`, `base_in_4bit`, the
`task_refusal` / `fsdp_refusal` / `pack_refusal` hooks) and read from there by every other stage.

Adding a method: a module here with a `Method` subclass (base.py) decorated by `@register("name")`,
imported below, a `conf/method/<name>.yaml`, and a test (tests/test_peft_methods.py shows how). A PEFT
method is a few lines: a `PeftAdapter` (adapters.py) naming its PeftType, or a LoRA preset
(lora_variants.py); `method=peft method.peft_type=X` reaches any of them without code. docs/methods.md.
"""

from __future__ import annotations

import difflib

from omegaconf import OmegaConf

from ...settings import EVERY_METHOD_SETTINGS, SettingError, check_values

# Each import registers its method (bitsandbytes is imported only when a qlora model is built).
from . import adapters, full, lora, lora_variants, qlora, relora, tfidf  # noqa: F401
from .base import METHODS, Method, MethodError, MethodSettingError, register, warmup_cosine

__all__ = ["METHODS", "Method", "MethodError", "build_method", "register", "warmup_cosine"]


def build_method(method_cfg, model_cfg, task: str) -> Method:
    name = method_cfg.name
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), METHODS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(METHODS))}"
        raise MethodError(f"unknown method '{name}'{hint}")
    try:
        check_values("method", plain(method_cfg), {**EVERY_METHOD_SETTINGS, **METHODS[name].SETTINGS})
    except SettingError as error:
        raise MethodSettingError(str(error), error.key) from None
    method = METHODS[name](method_cfg, model_cfg, task)
    if reason := method.task_refusal(task):
        raise MethodError(reason)
    return method


def plain(section) -> dict:
    """A config section as plain Python values (lists, not ListConfig), interpolations resolved."""
    return OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section)
