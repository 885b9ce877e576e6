"""A point's peak memory from its config alone (torch-free: the planner estimates every point).

    estimate = estimate_point(config)      # a resolved point config; None when the model's shape is unknown
    estimate.total_mb, estimate.parts      # what the record's cost.peak_memory_mb should come to

The parts, in bytes (docs/memory.md derives each):
  weights      the base in the dtype it loads in (bfloat16 where the point trains a frozen base in it),
               4-bit where the method quantises it (0.5 byte per weight + its block constants); the
               modules a PEFT method trains in full are held twice (PEFT keeps the original)
  optimizer    the trainable parameters' float32 gradients and AdamW's two moments (12 bytes each)
  activations  what the backward pass needs, per block: batch x length x (hidden, intermediate) and the
               attention matrices; with gradient checkpointing one input per block plus one block's
               working set; plus the logits (a vocabulary head: batch x length x vocab, three copies)
  evaluation   a no-grad forward of train.eval_batch_size rows (its logits, when they span the vocabulary)
  loading      the transient of reading the weights: a float32 copy before quantising after the build
               (or quantise-while-loading's one shard), the safetensors pages mapped while reading
  runtime      on CPU the process itself: Python, torch, transformers, PEFT, datasets (measured)
The peak is runtime + max(loading, weights + optimizer + max(activations, evaluation)). The
constants below were fitted to measured peaks on CPU (BENCHMARKS.md "Memory estimate").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import tasks
from ..runs import precision
from .inventory import ModelShape, Tensor, inside_trained, is_target, model_shape

MB = 2**20
CPU_RUNTIME_BYTES = 560 * MB  # RSS of a worker with torch, transformers, PEFT and datasets imported, data loaded
ADAM_BYTES = 12  # per trainable parameter: float32 gradient + AdamW's exp_avg and exp_avg_sq
BLOCK_SIZE_4BIT = 64  # bitsandbytes: one absmax per 64 weights
# Activation elements stored per block for the backward pass, per (row x token): x hidden, x intermediate;
# per (row x head x token^2): the attention scores and probabilities.
PER_HIDDEN, PER_INTERMEDIATE, PER_ATTENTION = 14, 4, 2
# An adapter on a frozen layer keeps, per token, a few elements per input feature of each target (the
# dropped-out input, its mask, the adapter's own intermediate results); full fine-tuning has none.
# Fitted: 4.8-5.1 on tiny_llama and MiniLM, 1.8-2.9 on SmolLM2; the middle keeps each within ~15%.
PER_TARGET_INPUT = 3.5
PER_4BIT_INPUT = 1  # a 4-bit layer keeps its float32 input for the backward pass (bitsandbytes' MatMul4Bit)
PER_CHECKPOINT = 4  # x hidden per token a checkpointed block keeps (its input and what torch saves beside it; fitted)
LSTM_PER_HIDDEN = 14  # gates (4), cell and hidden states, their activations
LOGIT_COPIES = 3  # a vocabulary head's logits, their float32 log-softmax and its gradient
EVAL_COPIES = 2  # evaluation: the logits and their softmax


@dataclass
class Estimate:
    parts: dict[str, int]  # bytes
    trainable: int
    weights_dtype: str

    @property
    def total(self) -> int:
        p = self.parts
        steady = p["weights"] + p["optimizer"] + max(p["activations"], p["evaluation"])
        return p["runtime"] + max(p["loading"], steady)

    @property
    def total_mb(self) -> float:
        return round(self.total / MB, 1)

    def as_record(self) -> dict[str, Any]:
        """The record's cost.memory_estimate: the total and each part in MB."""
        return {
            "total_mb": self.total_mb,
            **{f"{name}_mb": round(b / MB, 1) for name, b in self.parts.items()},
            "trainable": self.trainable,
            "weights_dtype": self.weights_dtype,
        }

    def summary(self) -> str:
        """'1.9 GB (weights 0.5, optimizer 0.0, activations 0.8, runtime 0.5)'."""
        p = self.parts
        shown = ["weights", "optimizer", "activations" if p["activations"] >= p["evaluation"] else "evaluation"]
        if p["loading"] > p["weights"] + p["optimizer"] + max(p["activations"], p["evaluation"]):
            shown = ["loading"]
        inner = ", ".join(f"{name} {p[name] / 2**30:.1f}" for name in shown + ["runtime"])
        return f"{self.total / 2**30:.1f} GB ({inner})"


# ---------------------------------------------------------------- what the method does to the model
def _quantized(shape: ModelShape, method: dict, model: dict, targets: list[str]) -> list[Tensor]:
    """The tensors a 4-bit method (a method with a `quantize` scope: qlora) stores in 4 bits."""
    if not method.get("quantize"):
        return []
    keep = list(model.get("head_modules") or []) + list(model.get("lm_full_rank_modules") or []) + ["lm_head", "wo"]
    linear = [t for t in shape.tensors if t.is_linear and not inside_trained(t.module, keep)]
    return linear if method["quantize"] == "all_linear" else [t for t in linear if is_target(t.module, targets)]


def trains_base(method: dict) -> bool:
    """Every weight trains: a method that says so (full) or a full-rank warm start (its optimizer covers all)."""
    return bool(method.get("trains_base")) or bool(method.get("warm_start_steps"))


def _targets(shape: ModelShape, targets: list[str]) -> list[Tensor]:
    """The 2-D weights an adapter attaches to: target modules' weights, or target parameters (LSTM)."""
    return [
        t
        for t in shape.tensors
        if len(t.shape) == 2 and (is_target(t.module, targets) or t.name in targets or is_target(t.name, targets))
    ]


def _adapter_parameters(shape: ModelShape, method: dict, targets: list[str]) -> int:
    """Trainable adapter parameters: r x (in + out) per target weight (LoRA and its kin), or one
    vector per target (a method without a rank: IA3-like)."""
    r = method.get("r")
    return sum(int(r) * sum(t.shape) if r else t.shape[0] for t in _targets(shape, targets))


def frozen_base_dtype_bytes(config: dict) -> int:
    """2 when the point computes in bfloat16 on CUDA and its base stays frozen (its weights load in
    it: train.Method.loading), else 4: float32 on the CPU or an unknown (auto) device, and for a
    method that trains or changes its base (`frozen_base: false`: relora's merges) or quantises it
    (the rest stays float32)."""
    train, method = config["train"], config["method"]
    dtype, device_type = precision(train.get("device"), train.get("dtype"))
    frozen = not trains_base(method) and method.get("frozen_base", True) and not method.get("quantize")
    return 2 if dtype == "bfloat16" and device_type == "cuda" and frozen else 4


# ---------------------------------------------------------------- activations
def _activation_elements(
    shape: ModelShape, rows: int, length: int, checkpointing: bool, target_inputs: int = 0, four_bit_inputs: int = 0
) -> int:
    """Elements the backward pass keeps (training); `target_inputs` / `four_bit_inputs`: the input
    features of every adapter target / 4-bit layer, summed over the model."""
    tokens = rows * length
    per_token = PER_TARGET_INPUT * target_inputs + PER_4BIT_INPUT * four_bit_inputs
    adapters = int(tokens * per_token) // max(1, shape.layers)  # per block
    if shape.recurrent:
        block = LSTM_PER_HIDDEN * tokens * shape.hidden + adapters
        return tokens * shape.hidden + block * shape.layers
    block = tokens * (PER_HIDDEN * shape.hidden + PER_INTERMEDIATE * shape.intermediate) + adapters
    block += PER_ATTENTION * rows * shape.heads * length * length
    if checkpointing:  # what each block keeps; one block recomputed, beside its gradients, at a time
        return tokens * shape.hidden * (PER_CHECKPOINT * shape.layers + 1) + 2 * block
    return tokens * shape.hidden + block * shape.layers


def _logit_elements(shape: ModelShape, rows: int, length: int, token_level: bool, copies: int) -> int:
    return rows * length * shape.vocab * copies if token_level else 0


def _loading(shape: ModelShape, weights: int, dtype_bytes: int, quantized_at: str | None) -> int:
    """Reading the weights: a checkpoint already in the load dtype is mapped, not copied (its pages
    are the weights); another dtype is converted beside the pages it reads; quantising while
    loading reads every page beside the 4-bit copies; after the build, the float32 model comes first."""
    if quantized_at == "load":
        return weights + shape.file_bytes
    if quantized_at == "build":
        pages = shape.file_bytes if shape.file_dtype_bytes != 4 else 0
        return shape.parameters * 4 + pages + weights
    return weights + (shape.file_bytes if shape.file_dtype_bytes != dtype_bytes else 0)


# ---------------------------------------------------------------- the estimate
def estimate_point(config: dict) -> Estimate | None:
    """The peak memory of a point (its resolved config), or None for a method without a model
    (tfidf), an unknown task, a model whose shape nothing on this machine says, or values the
    estimate cannot read (a bad setting fails in one line where the point is checked, not here)."""
    try:
        return _estimate(config)
    except (KeyError, TypeError, ValueError, AttributeError, OSError):
        return None


def _estimate(config: dict) -> Estimate | None:
    method, model, train = config["method"], config.get("model") or {}, config["train"]
    task = tasks.find((config.get("dataset") or {}).get("task"))
    if not method.get("uses_model", True) or task is None:
        return None
    shape = model_shape(model, task)
    if shape is None:
        return None
    targets = list(method.get("target_modules") or model.get("lora_targets") or [])
    targets += list(method.get("target_parameters") or model.get("lora_target_parameters") or [])
    base_bytes = frozen_base_dtype_bytes(config)
    quantized = {t.name for t in _quantized(shape, method, model, targets)}
    four_bit = sum(t.numel for t in shape.tensors if t.name in quantized)
    rest = shape.parameters - four_bit
    weights = rest * base_bytes + four_bit // 2 + four_bit // BLOCK_SIZE_4BIT * (1 if method.get("double_quant") else 4)

    target_inputs = 0
    if trains_base(method):
        trainable = shape.parameters
    else:
        target_inputs = sum(t.shape[1] for t in _targets(shape, targets))
        heads = sum(t.numel for t in shape.tensors + shape.aliases if inside_trained(t.module, shape.head_names))
        trainable = _adapter_parameters(shape, method, targets) + heads
        weights += heads * 4  # PEFT's modules_to_save: a float32 trainable copy beside the original

    ranks = train.get("nproc") if isinstance(train.get("nproc"), int) and train.get("nproc", 1) > 1 else 1
    rows, length = max(1, int(train["batch_size"]) // ranks), int(train["max_length"])  # a rank's share of a step
    act_bytes = 2 if base_bytes == 2 else 4
    checkpointing = bool(method.get("gradient_checkpointing"))
    four_bit_inputs = sum(t.shape[1] for t in shape.tensors if t.name in quantized)
    activations = _activation_elements(shape, rows, length, checkpointing, target_inputs, four_bit_inputs) * act_bytes
    activations += _logit_elements(shape, rows, length, task.token_level, LOGIT_COPIES) * 4
    eval_rows = int(train.get("eval_batch_size") or rows)
    evaluation = _activation_elements(shape, eval_rows, length, True) // shape.layers * act_bytes if shape.layers else 0
    evaluation += _logit_elements(shape, eval_rows, length, task.token_level, EVAL_COPIES) * 4

    quantized_at = ("load" if quantizes_while_loading(config) else "build") if quantized else None
    loading = _loading(shape, weights, base_bytes, quantized_at)
    device_type = str(train.get("device") or "auto").split(":")[0]
    parts = {
        "weights": weights,
        "optimizer": trainable * ADAM_BYTES,
        "activations": activations,
        "evaluation": evaluation,
        "loading": loading,
        "runtime": 0 if device_type == "cuda" else CPU_RUNTIME_BYTES,
    }
    return Estimate(parts, trainable, "bfloat16" if base_bytes == 2 else "float32")


# ---------------------------------------------------------------- where QLoRA quantises
def quantizes_while_loading(config: dict) -> bool:
    """Whether a 4-bit point quantises its base while the weights are read (transformers'
    BitsAndBytesConfig) instead of after building it in float32: only where there are weights to
    read (a pretrained folder, not a model built from a config) and every Linear is quantised
    (quantize=all_linear: transformers takes a list of modules to skip, not one to quantise). There
    `method.quantize_at: auto` (and `load`) quantises while loading: it peaked lower or equal for
    SmolLM2 and the 1.1B Llama (BENCHMARKS.md "Memory"); `build` keeps the float32 build."""
    method, model = config["method"], config.get("model") or {}
    readable = model.get("source") != "config" and model.get("arch") != "lstm"
    return readable and method.get("quantize") == "all_linear" and method.get("quantize_at", "auto") != "build"
