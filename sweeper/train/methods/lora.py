"""LoRA through HF PEFT: low-rank adapters on the model's target layers, the base frozen.

Classification heads (model.head_modules) and, for language modelling, the full-rank modules the
ReLoRA paper keeps trainable (model.lm_full_rank_modules: embeddings, norms, LM head) train in full
via PEFT's `modules_to_save`. LSTM weights are not nn.Linear: they are adapted via PEFT's
`target_parameters` (model.lora_target_parameters).

`warm_start_steps > 0` trains the whole model full-rank first, then only the adapters: the LoRA
layers are attached from the start with B = 0 (so they add nothing) and frozen until the switch,
so one optimizer holds every parameter and no object is ever replaced.

Any other field of PEFT's `LoraConfig` goes under `method.config` (`+method.config.use_dora=true`,
`method.config.init_lora_weights=pissa`, `rank_pattern`, `layers_to_transform`, ...), checked against
LoraConfig by name. Such a variant trains through PEFT's own layers; what plain LoRA's shortcuts assume
(the packed forward, FSDP, a warm start) it refuses in one line. The named variants (dora, pissa,
olora, lora_plus) are presets of these fields: lora_variants.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from peft.tuners.lora import LoraModel
from torch import nn

from ...settings import LORA_SETTINGS
from .base import Method, MethodError, register
from .peft_config import build_config, resolved, user_fields

LORA_PREFIX = LoraModel.prefix  # "lora_": PEFT's name prefix of every LoRA parameter
# LoraConfig fields sweeper sets from its own keys (method.r, method.alpha, ...): one place each.
OWN_FIELDS = {
    "r": "method.r",
    "lora_alpha": "method.alpha",
    "lora_dropout": "method.dropout",
    "target_modules": "method.target_modules",
    "target_parameters": "method.target_modules (the model's lora_target_parameters)",
    "use_rslora": "method.use_rslora",
    "modules_to_save": "the task (its head / full-rank modules)",
    "task_type": "the task",
}
# Initialisations that rewrite the base weights (W - BA): the adapter alone is saved converted to plain
# LoRA (PEFT's path_initial_model_for_weight_conversion, rank doubled) so it loads on the original base.
BASE_CHANGING_INITS = ("pissa", "olora", "corda")


def peft_fields(cfg) -> dict[str, Any]:
    """method.config: LoraConfig fields beyond sweeper's own keys (a LoRA variant), as plain values."""
    fields = user_fields(cfg)
    for key in fields:
        if key in OWN_FIELDS:
            raise MethodError(f"method.config.{key}: set by {OWN_FIELDS[key]}, not under method.config")
    return fields


def changes_base_at_init(fields: dict[str, Any]) -> bool:
    init = fields.get("init_lora_weights")
    return isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INITS)


def lora_config(cfg, model_cfg, task, variant: dict[str, Any]):
    """PEFT's LoraConfig: sweeper's keys (method.r, alpha, ...) + the variant's fields (method.config)."""
    from peft import LoraConfig

    # method.target_* (null: the model's defaults); target_parameters is a key of the lstm model only.
    target_modules = cfg.target_modules or list(model_cfg.lora_targets or [])
    target_parameters = cfg.get("target_parameters") or list(model_cfg.get("lora_target_parameters") or [])
    if not target_modules and not target_parameters:
        raise MethodError(f"model '{model_cfg.name}': no LoRA targets (set method.target_modules)")
    full_rank = task.full_rank_modules(model_cfg)  # a fresh head, or what the ReLoRA paper keeps full-rank
    if target_modules and target_parameters and float(cfg.dropout) > 0:
        raise MethodError(
            f"method.dropout={cfg.dropout} cannot apply: target_parameters ({', '.join(target_parameters)}) "
            "take no LoRA dropout in PEFT, and one config has one dropout; set method.dropout=0"
        )
    own = dict(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        # PEFT's ParamWrapper (target_parameters, e.g. LSTM weights) supports no dropout.
        lora_dropout=0.0 if target_parameters else cfg.dropout,
        target_modules=list(target_modules) or None,
        target_parameters=list(target_parameters) or None,
        use_rslora=bool(cfg.use_rslora),
        modules_to_save=list(full_rank) or None,
        # PEFT's task type: which PeftModel subclass (forward signature) and what adapter_config.json tells
        # AutoPeftModelFor... at reload. The LSTM is no transformers model: none.
        task_type=task.peft_task_type(model_cfg),
    )
    return build_config(LoraConfig, {**own, **variant}, "method.config")


def lora_layers(model: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def check_rank_fits(model: nn.Module, r: int) -> None:
    """A rank above a layer's smaller side is not low-rank; PEFT would accept it silently."""
    for layer in lora_layers(model):
        base = layer.get_base_layer()
        sides = [layer.in_features, layer.out_features]
        if min(sides) and r > min(sides):
            raise MethodError(f"method.r={r} exceeds layer size {sides[0]}x{sides[1]} ({type(base).__name__})")


@register("lora")
class LoRA(Method):
    SETTINGS = LORA_SETTINGS  # r, alpha, dropout, ... (checked by build_method)
    PRESET: dict[str, Any] = {}  # LoraConfig fields a named variant sets (lora_variants.py); method.config on top

    def __init__(self, cfg, model_cfg, task):
        super().__init__(cfg, model_cfg, task)
        self.warm_start_steps = int(cfg.warm_start_steps)
        self.variant = {**self.PRESET, **peft_fields(cfg)}  # LoraConfig fields beyond sweeper's ({}: plain LoRA)
        if self.warm_start_steps and self.variant:
            raise MethodError(
                f"method.warm_start_steps={self.warm_start_steps} with method.config "
                f"({', '.join(sorted(self.variant))}): a warm start is plain LoRA's; set one or the other"
            )
        lora_config(cfg, model_cfg, task, self.variant)  # every field checked now, before the data and weights load
        # A warm start changes the base weights: the adapter alone would not reproduce the model.
        self.saves_adapter = self.warm_start_steps == 0
        self.frozen_base = self.warm_start_steps == 0  # (PiSSA / OLoRA rewrite it once, at init)
        self._lora_params: list[nn.Parameter] = []
        self._base_params: list[nn.Parameter] = []
        self._full_rank = False
        self._initial_adapter: tempfile.TemporaryDirectory | None = None

    # ------------------------------------------------------------ capabilities
    def fsdp_refusal(self):
        if self.warm_start_steps:
            return "method.warm_start_steps > 0"
        if self.variant:  # PEFT's variant layers (DoRA's magnitude, PiSSA's rewritten base) are not tested sharded
            return f"method={self.name} with method.config ({', '.join(sorted(self.variant))})"
        return None

    @classmethod
    def pack_refusal(cls, method_cfg):
        if method_cfg.get("warm_start_steps"):
            return "a warm start trains the base"
        if cls.PRESET or method_cfg.get("config"):
            fields = ", ".join(sorted({**cls.PRESET, **(method_cfg.get("config") or {})}))
            return f"method={cls.name} sets LoraConfig fields ({fields}) and the packed forward is plain LoRA"
        return None

    def wrap(self, model):
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(self.cfg, self.model_cfg, self.task, self.variant))
        check_rank_fits(model, self.cfg.r)
        if changes_base_at_init(self.variant):
            self._keep_initial_adapter(model)
        self._lora_params = [p for n, p in model.named_parameters() if LORA_PREFIX in n]
        self._base_params = [p for n, p in model.named_parameters() if not p.requires_grad]
        # Left in the low-rank phase, so the record's trainable count is the adapter's;
        # before_step(0) switches a warm-started run to full rank.
        return model

    def _set_phase(self, full_rank: bool) -> None:
        self._full_rank = full_rank
        for p in self._base_params:
            p.requires_grad_(full_rank)
        for p in self._lora_params:
            p.requires_grad_(not full_rank)

    def optimizer_parameters(self, model):
        # With a warm start the optimizer holds every weight from the start (it never gets new
        # parameter objects); AdamW skips those without a gradient in the current phase.
        if self.warm_start_steps > 0:
            return list(model.parameters())
        return [p for p in model.parameters() if p.requires_grad]

    def before_step(self, step, model):
        # Checked every step (cheap), so a run resumed past the warm start lands in the right phase.
        full_rank = step < self.warm_start_steps
        if full_rank != self._full_rank:
            self._set_phase(full_rank)

    def after_step(self, step, model, optimizer):
        if self.warm_start_steps and step + 1 == self.warm_start_steps:
            # The base is frozen from here on: its AdamW moments (2x the model's size) would only sit
            # in memory and in every checkpoint.
            for p in self._base_params:
                optimizer.state.pop(p, None)
        return []

    def summary(self):
        return {"warm_start_steps": self.warm_start_steps}

    # ------------------------------------------------------------ the saved adapter
    def _keep_initial_adapter(self, model) -> None:
        """PiSSA / OLoRA / CorDA rewrite the base (W - BA) at init: the initial adapter, saved now, lets
        the final one be converted to a plain LoRA delta on the original base (PEFT does the maths)."""
        self._initial_adapter = tempfile.TemporaryDirectory(prefix="sweeper-initial-adapter-")
        config = model.peft_config["default"]
        init = config.init_lora_weights
        config.init_lora_weights = True  # what PEFT's docs ask of the initial copy
        try:
            model.save_pretrained(self._initial_adapter.name)
        finally:
            config.init_lora_weights = init

    def save_adapter(self, model, folder, state_dict=None):
        if self._initial_adapter is None:
            return super().save_adapter(model, folder, state_dict)
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import load_file, save_file

        model.save_pretrained(
            folder, state_dict=state_dict, path_initial_model_for_weight_conversion=self._initial_adapter.name
        )
        # PEFT's conversion returns the LoRA tensors only: the trained head / full-rank modules
        # (modules_to_save) go back in, or the saved adapter would not load.
        path = Path(folder) / "adapter_model.safetensors"
        saved = load_file(str(path))
        trained = get_peft_model_state_dict(model, state_dict=state_dict)
        missing = {k: v.contiguous() for k, v in trained.items() if k not in saved and LORA_PREFIX not in k}
        if missing:
            save_file({**saved, **missing}, str(path), metadata={"format": "pt"})

    def adapter_summary(self, model):
        config = getattr(model, "peft_config", {}).get("default")
        if config is None:
            return {}
        summary = {"peft_type": str(config.peft_type.value), "config": resolved(config)}
        if self._initial_adapter is not None:
            summary["saved_as"] = "lora (converted: rank doubled, loads on the original base)"
        return summary
