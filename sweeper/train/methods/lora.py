"""LoRA through HF PEFT: low-rank adapters on the model's target layers, the base frozen.

Classification heads (model.head_modules) and, for language modelling, the full-rank modules the
ReLoRA paper keeps trainable (model.lm_full_rank_modules: embeddings, norms, LM head) train in full
via PEFT's `modules_to_save`. LSTM weights are not nn.Linear: they are adapted via PEFT's
`target_parameters` (model.lora_target_parameters).

`warm_start_steps > 0` trains the whole model full-rank first, then only the adapters: the LoRA
layers are attached from the start with B = 0 (so they add nothing) and frozen until the switch,
so one optimizer holds every parameter and no object is ever replaced.
"""

from __future__ import annotations

from peft.tuners.lora import LoraModel
from torch import nn

from ...settings import LORA_SETTINGS
from .base import Method, MethodError, register

LORA_PREFIX = LoraModel.prefix  # "lora_": PEFT's name prefix of every LoRA parameter


def lora_config(cfg, model_cfg, task):
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
    return LoraConfig(
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

    def __init__(self, cfg, model_cfg, task):
        super().__init__(cfg, model_cfg, task)
        self.warm_start_steps = int(cfg.warm_start_steps)
        self._lora_params: list[nn.Parameter] = []
        self._base_params: list[nn.Parameter] = []
        self._full_rank = False

    def is_peft(self) -> bool:
        # A warm start changes the base weights: the adapter alone would not reproduce the model.
        return self.warm_start_steps == 0

    def wrap(self, model):
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(self.cfg, self.model_cfg, self.task))
        check_rank_fits(model, self.cfg.r)
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
