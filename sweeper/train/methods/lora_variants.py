"""Named LoRA variants: presets of PEFT LoraConfig fields, each trained by PEFT's own LoRA layers.

    python -m sweeper -m dataset=fortune_art_vs_rest model=tiny_llama method=lora,dora,pissa,olora,lora_plus

A variant is the `lora` method with `PRESET` under its `method.config` (a user's own method.config
fields go on top), so `method=dora` and `method=lora +method.config.use_dora=true` train the same model
(the run ids differ: the method's name is part of the config). What a variant cannot do is said by
LoRA's hooks from the fields it sets: no packing (the packed forward is plain LoRA), no FSDP, no warm
start. rsLoRA stays a switch of every LoRA method (`method.use_rslora=true`).
"""

from __future__ import annotations

from ...settings import POSITIVE
from .base import MethodError, register
from .lora import LoRA


@register("dora")
class DoRA(LoRA):
    """DoRA (Liu et al., ICML 2024): the weight split into a magnitude vector and a direction that LoRA
    updates (PEFT's `use_dora`)."""

    PRESET = {"use_dora": True}


@register("pissa")
class PiSSA(LoRA):
    """PiSSA (Meng et al., NeurIPS 2024): A and B start from the principal singular vectors of W (exact
    SVD), the base keeps the residual. Saved converted to a plain LoRA delta on the original base."""

    PRESET = {"init_lora_weights": "pissa"}


@register("olora")
class OLoRA(LoRA):
    """OLoRA (Büyükakyüz, 2024): A and B start from a QR decomposition of W, the base keeps the rest.
    Saved converted to a plain LoRA delta on the original base."""

    PRESET = {"init_lora_weights": "olora"}


@register("lora_plus")
class LoRAPlus(LoRA):
    """LoRA+ (Hayou et al., ICML 2024): B learns `loraplus_lr_ratio` times faster than A (PEFT's
    `create_loraplus_optimizer`); the model is plain LoRA, only the optimizer differs."""

    SETTINGS = {**LoRA.SETTINGS, "loraplus_lr_ratio": POSITIVE}

    def __init__(self, cfg, model_cfg, task):
        super().__init__(cfg, model_cfg, task)
        if self.warm_start_steps:
            raise MethodError("method=lora_plus with method.warm_start_steps > 0: LoRA+ groups the adapters only")
        self.ratio = float(cfg.loraplus_lr_ratio)

    @classmethod
    def pack_refusal(cls, method_cfg):
        return "LoRA+'s optimizer groups are one model's (each packed point has its own AdamW)"

    def fsdp_refusal(self):
        return "method=lora_plus"

    def make_optimizer(self, model, params, lr, weight_decay):
        import torch
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(
            model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=self.ratio, weight_decay=weight_decay
        )
        for group in optimizer.param_groups:  # the loop's schedule keeps each group's ratio to train.lr
            group["lr_ratio"] = group["lr"] / lr
        return optimizer

    def summary(self):
        return {**super().summary(), "loraplus_lr_ratio": self.ratio}
