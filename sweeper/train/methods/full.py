"""Full fine-tuning (or full-rank pretraining): every parameter trains. The baseline of every table."""

from ...settings import POSITIVE
from .base import Method, register


@register("full")
class Full(Method):
    SETTINGS = {"lr": POSITIVE}

    def fsdp_refusal(self):
        return None

    def wrap(self, model):
        for p in model.parameters():
            p.requires_grad_(True)
        return model
