"""QLoRA (Dettmers et al., 2023): the frozen base in 4-bit NF4, LoRA adapters on top in float32.

Where the base is quantised (`method.quantize_at`, sweeper.memory.quantizes_while_loading decides
`auto`): *while loading* a pretrained folder, transformers' `BitsAndBytesConfig` quantises each
weight as its shard is read, so the float32 model never exists (BENCHMARKS.md "Memory"); or *after
the build*, `wrap` swaps the float32 model's nn.Linear layers for bitsandbytes `Linear4bit`
(weights packed two 4-bit codes per uint8 byte, one absmax per block of 64, `quant_state` on the
weight): a model built from a config (nothing to read) and `quantize: targets`. Both give the same
4-bit codes (a test). Then PEFT's `prepare_model_for_kbit_training` and LoRA as the `lora` method.
`is_loaded_in_4bit` is set by hand after the build because PEFT reads it to dispatch its 4-bit
LoRA layer (a test pins that dispatch, and bitsandbytes' `support_avx512bf16_for_cpu` switch,
against upgrades).

Which layers: `quantize: all_linear` (default, the QLoRA setup: every Linear of the frozen base)
or `targets` (only the LoRA target layers). Heads and the full-rank modules that train under LoRA
(model.head_modules / lm_full_rank_modules, e.g. `score`, `lm_head`) stay float32: they train.

bitsandbytes >= 0.47 runs 4-bit layers on x86-64 CPU (dequantise + float32 matmul), so a tiny
QLoRA run is testable without a GPU. torchao's NF4 tensor would also work on CPU, but PEFT's LoRA
dispatches bitsandbytes' Linear4bit to its own 4-bit LoRA layer (merge/unmerge dequantise right)
and `prepare_model_for_kbit_training` knows it; with torchao both would be ours to get right.
"""

from __future__ import annotations

import torch
from torch import nn

from ...memory import quantizes_while_loading
from ...memory.inventory import inside_trained, is_target, model_shape
from ...runs import resolved
from ...settings import FLAG, LORA_SETTINGS, choice
from ..models import Loading
from .base import MethodError, register
from .lora import LoRA

QUANT_TYPES = ("nf4", "fp4")
QUANTIZE_SCOPES = ("all_linear", "targets")
QUANTIZE_AT = ("auto", "load", "build")
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def linear_layers_to_quantize(model: nn.Module, scope: str, targets, keep_full) -> list[str]:
    """Names of the nn.Linear modules to quantise; never a trainable head (or anything inside one)."""
    names = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:  # exactly nn.Linear: not an already-quantised subclass
            continue
        if inside_trained(name, keep_full):
            continue
        if scope == "targets" and not is_target(name, targets):
            continue
        names.append(name)
    return names


def without_cpu_bf16_repack(module: nn.Module) -> None:
    # On CPUs with AVX512-BF16, bnb repacks the weight at the first no-grad eval forward for a bf16 kernel:
    # irreversible while training goes on, bf16 numerics (eval != train forward), machine-dependent
    # results, and it asserts out_features % 32 == 0. The dequantise + float32 matmul path avoids all four.
    module.support_avx512bf16_for_cpu = False


def to_linear4bit(linear: nn.Linear, quant_type: str, double_quant: bool, compute_dtype) -> nn.Module:
    """A bitsandbytes Linear4bit holding `linear`'s weight quantised; the bias stays as it is."""
    import bitsandbytes as bnb

    device = linear.weight.device
    q = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        compress_statistics=double_quant,
        quant_type=quant_type,
        device="meta",
    )
    q.weight = bnb.nn.Params4bit(
        linear.weight.data.to("cpu", torch.float32),
        requires_grad=False,
        quant_type=quant_type,
        compress_statistics=double_quant,
    )
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    without_cpu_bf16_repack(q)
    q = q.to(device)  # Params4bit quantises on its first move to a device (CPU included)
    if not getattr(q.weight, "bnb_quantized", False):
        raise MethodError(
            f"bitsandbytes did not quantise a {linear.in_features}x{linear.out_features} layer on {device}"
        )
    return q


def quantize_model(model: nn.Module, names: list[str], quant_type: str, double_quant: bool, compute_dtype) -> nn.Module:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, to_linear4bit(getattr(parent, child), quant_type, double_quant, compute_dtype))
    # PEFT reads this flag to give Linear4bit its 4-bit LoRA layer (transformers sets it when it loads in 4-bit).
    model.is_loaded_in_4bit = True
    return model


def skipped_modules(model_cfg: dict, task, keep_full: list[str]) -> list[str]:
    """What transformers must leave unquantised while loading: the modules that train, named as
    PEFT matches them (any depth: `pooler` is `bert.pooler.dense` too). transformers matches a name as
    a path prefix or suffix, so each Linear of the checkpoint inside one of them is listed by its path."""
    shape = model_shape(model_cfg, task)
    inside = [t.module for t in (shape.tensors if shape else []) if t.is_linear and inside_trained(t.module, keep_full)]
    return sorted(set(keep_full) | set(inside))


def is_4bit(module: nn.Module) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, bnb.nn.Linear4bit)


@register("qlora")
class QLoRA(LoRA):
    SETTINGS = {
        **LORA_SETTINGS,
        "quant_type": choice(*QUANT_TYPES),
        "double_quant": FLAG,
        "quantize": choice(*QUANTIZE_SCOPES),
        "compute_dtype": choice(*COMPUTE_DTYPES),
        "quantize_at": choice(*QUANTIZE_AT),
    }

    base_in_4bit = True

    def __init__(self, cfg, model_cfg, task):
        super().__init__(cfg, model_cfg, task)
        if self.warm_start_steps:
            raise MethodError(
                f"method.warm_start_steps={self.warm_start_steps}: a 4-bit base cannot train full-rank; use method=lora"
            )
        self.quant_type, self.scope = str(cfg.quant_type), str(cfg.quantize)  # values checked by SETTINGS
        self.compute_dtype = COMPUTE_DTYPES[str(cfg.compute_dtype)]
        self.double_quant = bool(cfg.double_quant)
        self.quantized_layers: list[str] = []

    def keep_full(self) -> list[str]:
        """Modules that train (a head, the full-rank modules): never quantised."""
        return list(self.model_cfg.head_modules or []) + list(self.model_cfg.lm_full_rank_modules or [])

    def loading(self, runtime) -> Loading:
        """4-bit while loading where that peaks lower (sweeper.memory.quantizes_while_loading), else
        the float32 build that `wrap` quantises (float32 either way: the same 4-bit codes; PEFT's
        kbit preparation keeps the rest float32)."""
        model_cfg = resolved(self.model_cfg)
        if not quantizes_while_loading({"method": resolved(self.cfg), "model": model_cfg}):
            return Loading(dtype=torch.float32)
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=self.compute_dtype,
            llm_int8_skip_modules=skipped_modules(model_cfg, self.task, self.keep_full()),
        )
        return Loading(dtype=torch.float32, quantization=quantization, device=str(runtime.device))

    def quantize_base(self, model: nn.Module) -> nn.Module:
        """Quantise the frozen base in place (also used alone, e.g. to rebuild the base an adapter reloads onto)."""
        if getattr(model, "hf_quantizer", None) is not None:  # quantised while loading
            self.quantized_layers = [name for name, module in model.named_modules() if is_4bit(module)]
            for name in self.quantized_layers:
                without_cpu_bf16_repack(model.get_submodule(name))
            return model
        targets = self.cfg.target_modules or list(self.model_cfg.lora_targets or [])
        names = linear_layers_to_quantize(model, self.scope, targets, self.keep_full())
        # What transformers itself keeps in float32 when it loads a model in 4-bit: T5's `wo` (its
        # forward casts activations to wo's weight dtype, which a packed 4-bit weight makes uint8).
        keep_fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or [])
        names = [name for name in names if not is_target(name, keep_fp32)]
        if not names:
            raise MethodError(
                f"model '{self.model_cfg.name}': no nn.Linear layers to quantise (method.quantize={self.scope})"
            )
        self.quantized_layers = names
        return quantize_model(model, names, self.quant_type, self.double_quant, self.compute_dtype)

    def fsdp_refusal(self):
        return "method=qlora (4-bit bitsandbytes weights)"

    def prepare_shared_base(self, base):
        self.quantize_base(base)

    def wrap(self, model):
        from peft import prepare_model_for_kbit_training

        model = self.quantize_base(model)
        # Freezes the base, keeps non-4-bit weights in float32 (checkpointing: prepare_base turned it on).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().wrap(model)

    def summary(self):
        return {
            **super().summary(),
            "quant_type": self.quant_type,
            "double_quant": self.double_quant,
            "quantized_layers": len(self.quantized_layers),
        }
