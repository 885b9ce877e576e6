"""Every other PEFT method: VeRA, IA3, LoHa, LoKr, AdaLoRA, OFT, prompt and prefix tuning, and
`method=peft` for any of PEFT's 45 by `method.peft_type` (or an adapter_config.json).

    python -m sweeper -m dataset=fortune_art_vs_rest model=tiny_llama method=vera,ia3,loha,lokr,adalora,oft
    python -m sweeper dataset=fortune_art_vs_rest model=tiny_llama method=peft method.peft_type=HRA +method.config.r=4
    python -m sweeper ... method=peft method.adapter_config=experiments/loha/adapter_config.json

PEFT builds and trains every adapter (`get_peft_model` on the method's config class); here is only which
fields each named method fills from sweeper's keys (`method.r` -> its rank field, `method.target_modules`
-> the model's targets when null, the task's head / full-rank modules -> `modules_to_save`, the task ->
`task_type`), the defaults of its paper or of PEFT's method comparison (in conf/method/<name>.yaml), and
what it cannot do. Other fields go under `method.config`, checked against the config class by name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ...settings import NAMES, POSITIVE, Rule, integer
from .base import Method, MethodError, register
from .peft_config import FILE_ONLY_FIELDS, build_config, config_class, field_names, resolved, user_fields

ADAPTER_SETTINGS: dict[str, Rule] = {"lr": POSITIVE, "r": integer(1, nullable=True), "target_modules": NAMES}
TEXT_TASK_TYPES = ("CAUSAL_LM", "SEQ_2_SEQ_LM")  # PEFT task types whose model generates text


class PeftAdapter(Method):
    """One PEFT method trained through PEFT's own classes; a subclass names its type and rank field."""

    SETTINGS = ADAPTER_SETTINGS
    PEFT_TYPE = ""  # PEFT's PeftType name
    RANK_FIELD: str | None = "r"  # the config field method.r sets; None: the method has no rank
    DEFAULT_TARGETS = True  # null target_modules: the model's LoRA targets (False: PEFT's own per-architecture default)
    saves_adapter = True
    frozen_base = True

    def __init__(self, cfg, model_cfg, task):
        super().__init__(cfg, model_cfg, task)
        from peft.config import PromptLearningConfig

        self.config_cls = config_class(self.peft_type())
        self.prompt_learning = issubclass(self.config_cls, PromptLearningConfig)
        self.peft_config()  # every field checked now, before the data and the weights load

    def peft_type(self) -> str:
        return self.PEFT_TYPE

    # ------------------------------------------------------------ capabilities
    def task_refusal(self, task):
        if self.prompt_learning and task.peft_task_type(self.model_cfg) not in TEXT_TASK_TYPES:
            return f"method={self.name} prepends virtual tokens to generated text: task {task.name} is not supported"
        if self.model_cfg.get("lora_target_parameters"):  # the LSTM: weights that only LoRA's ParamWrapper adapts
            return f"method={self.name}: model '{self.model_cfg.name}' has no layers PEFT's {self.peft_type()} adapts"
        return None

    @classmethod
    def pack_refusal(cls, method_cfg):
        return f"method={cls.name} is no plain LoRA (the packed forward computes LoRA's B @ A only)"

    # ------------------------------------------------------------ the PEFT config
    def user_fields(self) -> dict[str, Any]:
        """method.config as plain values (method=peft puts its adapter_config.json's fields under them)."""
        return user_fields(self.cfg)

    def fields(self) -> dict[str, Any]:
        """Every field passed to the config class: sweeper's keys, then method.config on top."""
        known = field_names(self.config_cls)
        own: dict[str, Any] = {}
        user = self.user_fields()
        if self.RANK_FIELD and self.cfg.get("r") is not None:
            if self.RANK_FIELD in user:
                raise MethodError(f"method.config.{self.RANK_FIELD}: set by method.r, not under method.config")
            own[self.RANK_FIELD] = int(self.cfg.r)
        if "target_modules" in known and "target_modules" not in user:
            targets = self.cfg.get("target_modules") or (self.DEFAULT_TARGETS and self.model_cfg.get("lora_targets"))
            own["target_modules"] = list(targets) if targets else None
        full_rank = self.task.full_rank_modules(self.model_cfg)
        if "modules_to_save" in known and full_rank and not self.prompt_learning:
            own["modules_to_save"] = list(full_rank)
        own["task_type"] = self.task.peft_task_type(self.model_cfg)
        return {**own, **user}

    def peft_config(self):
        return build_config(self.config_cls, self.fields(), "method.config")

    def wrap(self, model):
        from peft import get_peft_model

        config = self.peft_config()
        try:
            return get_peft_model(model, config)
        except (ValueError, TypeError, KeyError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise MethodError(
                f"method={self.name}: PEFT's {self.peft_type()} cannot adapt this model: {first}"
            ) from None

    def adapter_summary(self, model):
        config = model.peft_config["default"]
        return {"peft_type": str(config.peft_type.value), "config": resolved(config)}


@register("vera")
class VeRA(PeftAdapter):
    """VeRA (Kopiczko et al., ICLR 2024): one pair of frozen random matrices shared by every layer,
    per-layer trainable scaling vectors (d, b)."""

    PEFT_TYPE = "VERA"


@register("ia3")
class IA3(PeftAdapter):
    """(IA)^3 (Liu et al., NeurIPS 2022): learned vectors rescale keys, values and the feed-forward
    activations. Targets default to PEFT's per-architecture choice (its feed-forward modules must be
    among them)."""

    PEFT_TYPE = "IA3"
    RANK_FIELD = None
    DEFAULT_TARGETS = False


@register("loha")
class LoHa(PeftAdapter):
    """LoHa (Hyeon-Woo et al., ICLR 2022, FedPara): the update as a Hadamard product of two low-rank products."""

    PEFT_TYPE = "LOHA"


@register("lokr")
class LoKr(PeftAdapter):
    """LoKr (LyCORIS): the update as a Kronecker product with a low-rank factor."""

    PEFT_TYPE = "LOKR"


@register("oft")
class OFT(PeftAdapter):
    """OFT (Qiu et al., NeurIPS 2023): an orthogonal block-diagonal rotation of each weight
    (`method.config.oft_block_size`; PEFT's Cayley-Neumann parametrisation)."""

    PEFT_TYPE = "OFT"
    RANK_FIELD = None  # OFT's r counts blocks; the block size is its knob (method.config.oft_block_size)


@register("adalora")
class AdaLoRA(PeftAdapter):
    """AdaLoRA (Zhang et al., ICLR 2023): SVD-shaped LoRA whose rank budget moves between layers,
    from `init_r` per layer down to an average of `method.r` (PEFT's RankAllocator, called after every
    optimizer step while the gradients are there). The budget schedule spans train.max_steps."""

    PEFT_TYPE = "ADALORA"
    RANK_FIELD = "target_r"

    def fields(self):
        fields = super().fields()
        total = int(fields.get("total_step") or 0)
        if total < 1:
            raise MethodError(f"method.config.total_step must be >= 1 (train.max_steps), got {total}")
        target = int(fields.get("target_r") or 8)
        fields.setdefault("init_r", math.ceil(1.5 * target))  # PEFT's default ratio: 12 for 8
        # PEFT's method comparison: no pruning in the first 4% of steps, the final budget for the last 10%.
        fields.setdefault("tinit", total * 4 // 100)
        fields.setdefault("tfinal", total // 10)
        return fields

    def fsdp_refusal(self):
        return "method=adalora (the rank allocator reads whole gradients)"

    def wrap(self, model):
        model = super().wrap(model)
        config, weight = model.peft_config["default"], model.peft_config["default"].orth_reg_weight

        def training_only(module, args):
            # PEFT adds the orthogonality penalty to every forward's loss, scoring too: the validation
            # loss and the lm task's perplexity would hold it. It is a training loss only.
            config.orth_reg_weight = weight if module.training else 0.0

        model.register_forward_pre_hook(training_only)
        return model

    def before_zero_grad(self, step, model):
        model.base_model.update_and_allocate(step)

    def summary(self):
        fields = self.fields()
        return {"init_r": fields["init_r"], "target_r": fields["target_r"]}


@register("prompt_tuning")
class PromptTuning(PeftAdapter):
    """Prompt tuning (Lester et al., EMNLP 2021): trainable virtual token embeddings before the input."""

    PEFT_TYPE = "PROMPT_TUNING"
    RANK_FIELD = None


@register("prefix_tuning")
class PrefixTuning(PeftAdapter):
    """Prefix tuning (Li & Liang, ACL 2021): trainable key/value prefixes in every attention layer."""

    PEFT_TYPE = "PREFIX_TUNING"
    RANK_FIELD = None


@register("peft")
class AnyPeft(PeftAdapter):
    """Any PEFT method by `method.peft_type` (HRA, FOURIERFT, BOFT, ...), its fields under method.config;
    or `method.adapter_config`: an adapter_config.json in PEFT's format (its fields, method.config on top).
    The run id holds the file's content, not its path."""

    def __init__(self, cfg, model_cfg, task):
        self.file_fields = adapter_file_fields(cfg.get("adapter_config"))  # before peft_type() reads it
        super().__init__(cfg, model_cfg, task)

    def peft_type(self):
        from_file = self.file_fields.get("peft_type")
        given = self.cfg.get("peft_type")
        if given and from_file and str(given).upper() != str(from_file).upper():
            raise MethodError(f"method.peft_type={given} but method.adapter_config says {from_file}; set one")
        if not (given or from_file):
            raise MethodError("method=peft needs method.peft_type (e.g. HRA) or method.adapter_config=PATH")
        return str(given or from_file)

    def user_fields(self):
        file_fields = {k: v for k, v in self.file_fields.items() if k not in FILE_ONLY_FIELDS and k != "peft_type"}
        return {**file_fields, **super().user_fields()}

    @classmethod
    def pack_refusal(cls, method_cfg):
        return "method=peft trains PEFT's own layers (the packed forward is plain LoRA)"


def adapter_file_fields(path) -> dict[str, Any]:
    """The fields of an adapter_config.json ({} for no path), or a one-line MethodError."""
    if not path:
        return {}
    try:
        fields = json.loads(Path(str(path)).read_text(encoding="utf-8"))
    except OSError as error:
        raise MethodError(f"method.adapter_config={path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise MethodError(f"method.adapter_config={path} is no JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(fields, dict):
        raise MethodError(f"method.adapter_config={path} is no JSON object")
    return fields
