"""What tensors a model has, and its shape, from files and config alone (torch-free).

    shape = model_shape(model_cfg, task)     # None when nothing on this machine says

A pretrained folder is read from its safetensors headers (names, shapes, dtypes: exact, nothing
loaded) and config.json; a model built from a config (tiny_llama, tiny_t5, lstm) is counted from its
sizes in conf/model, the vocabulary from its tokenizer's files. The task decides the head: a label
head replaces the checkpoint's LM head; a token-level task keeps (or ties) it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model_files import local_folder

# Module names transformers gives embeddings (2-D weights that are no nn.Linear: never quantised or LoRA targets).
EMBEDDING_NAMES = ("embed", "wte", "wpe", "shared", "relative_attention_bias")
LABEL_HEAD_ROWS = (
    2  # a label head's outputs at planning time (the label count is known once data loads; the head is small)
)


@dataclass(frozen=True)
class Tensor:
    name: str  # e.g. model.layers.0.self_attn.q_proj.weight
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for side in self.shape:
            n *= side
        return n

    @property
    def module(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def is_linear(self) -> bool:
        """A 2-D `.weight` of a module that is no embedding: an nn.Linear (what LoRA and 4-bit take)."""
        leaf = self.module.rpartition(".")[2]
        return len(self.shape) == 2 and self.name.endswith(".weight") and not any(e in leaf for e in EMBEDDING_NAMES)


@dataclass
class ModelShape:
    """A model's tensors and the sizes its activations scale with."""

    tensors: list[Tensor]
    hidden: int
    layers: int  # transformer blocks (encoder + decoder) or LSTM layers
    heads: int
    intermediate: int
    vocab: int
    recurrent: bool = False  # an LSTM: no attention, gates of 4 x hidden
    head_names: list[str] = field(default_factory=list)  # module names of the task's head (trained in full)
    aliases: list[Tensor] = field(default_factory=list)  # other names of tied tensors (T5's embeddings, LM head)
    file_bytes: int = 0  # the checkpoint's safetensors files (0: built from a config)
    file_dtype_bytes: int = 0  # bytes per weight of the checkpoint's dtype (F32: 4, BF16: 2)

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)


# ---------------------------------------------------------------- PEFT's module-name rules
def is_target(module: str, patterns) -> bool:
    """PEFT's rule for target_modules given as names: the module path is the name or ends with ".name"."""
    return any(module == p or module.endswith("." + p) for p in patterns)


def trains_in_full(module: str, patterns) -> bool:
    """PEFT's rule for modules_to_save (peft.utils.other._set_trainable): the path ends with the name,
    dot or not ("out_score" ends with "score"). Wider than is_target: when in doubt, float32."""
    return any(module.endswith(p) for p in patterns)


def inside_trained(module: str, patterns) -> bool:
    """The module, or one it sits in, trains in full (`pooler` holds `bert.pooler.dense`)."""
    parts = module.split(".")
    return any(trains_in_full(".".join(parts[: i + 1]), patterns) for i in range(len(parts)))


# ---------------------------------------------------------------- pretrained folders
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "BOOL": 1}


def safetensors_tensors(folder: Path) -> tuple[list[Tensor], int]:
    """Every tensor named in the folder's safetensors headers (the first 8 bytes: the header's
    length), and the bytes per element of the dtype most of the weights are stored in."""
    tensors, by_dtype = [], {}
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, v in header.items():
            if name != "__metadata__":
                tensors.append(Tensor(name, tuple(v["shape"])))
                by_dtype[v["dtype"]] = by_dtype.get(v["dtype"], 0) + tensors[-1].numel
    main = max(by_dtype, key=by_dtype.get) if by_dtype else "F32"
    return tensors, DTYPE_BYTES.get(main, 4)


def _first(config: dict, *keys: str, default: int = 0) -> int:
    return next((int(config[k]) for k in keys if config.get(k) is not None), default)


def pretrained_shape(folder: Path, labelled: bool, head_modules: list[str]) -> ModelShape | None:
    tensors, dtype_bytes = safetensors_tensors(folder)
    config_file = folder / "config.json"
    if not tensors or not config_file.exists():
        return None
    config = json.loads(config_file.read_text())
    hidden = _first(config, "hidden_size", "d_model", "n_embd")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers") + _first(config, "num_decoder_layers")
    if not hidden or not layers:  # sizes under names not known here (DistilBERT's dim, BART's encoder_layers)
        return None
    shape = ModelShape(
        tensors=tensors,
        hidden=hidden,
        layers=layers,
        heads=_first(config, "num_attention_heads", "num_heads", "n_head", default=1),
        intermediate=_first(config, "intermediate_size", "d_ff", "n_inner", default=4 * hidden),
        vocab=_first(config, "vocab_size"),
        file_bytes=sum(path.stat().st_size for path in folder.glob("*.safetensors")),
        file_dtype_bytes=dtype_bytes,
    )
    if labelled:  # a sequence-classification model: the LM head is not loaded, a label head is new
        shape.tensors = [t for t in tensors if not t.name.startswith("lm_head.")]
        shape.tensors += [Tensor(f"{head_modules[0] if head_modules else 'score'}.weight", (LABEL_HEAD_ROWS, hidden))]
    elif not any(t.name.startswith("lm_head.") for t in tensors) and not config.get("tie_word_embeddings", True):
        shape.tensors.append(Tensor("lm_head.weight", (shape.vocab, hidden)))
    return shape


# ---------------------------------------------------------------- models built from a config
def vocab_size(tokenizer: Any) -> int | None:
    """The size of a tokenizer's vocabulary from its files (tokenizer.json or vocab.txt), or None."""
    folder = local_folder(tokenizer)
    if folder is None:
        return None
    if (folder / "tokenizer.json").exists():
        spec = json.loads((folder / "tokenizer.json").read_text())
        vocab = (spec.get("model") or {}).get("vocab") or {}
        added = {t["id"] for t in spec.get("added_tokens") or []}
        ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
        return len(ids | added)
    if (folder / "vocab.txt").exists():
        return sum(1 for _ in open(folder / "vocab.txt", encoding="utf-8"))
    return None


def _decoder_block(prefix: str, h: int, kv: int, inter: int) -> list[Tensor]:
    attn = [Tensor(f"{prefix}.self_attn.{p}_proj.weight", (o, h)) for p, o in (("q", h), ("k", kv), ("v", kv))]
    attn.append(Tensor(f"{prefix}.self_attn.o_proj.weight", (h, h)))
    mlp = [Tensor(f"{prefix}.mlp.{p}_proj.weight", (inter, h)) for p in ("gate", "up")]
    mlp.append(Tensor(f"{prefix}.mlp.down_proj.weight", (h, inter)))
    norms = [Tensor(f"{prefix}.{n}.weight", (h,)) for n in ("input_layernorm", "post_attention_layernorm")]
    return attn + mlp + norms


def llama_tensors(m: dict, vocab: int) -> list[Tensor]:
    """Llama and Mistral (one layout): embeddings, blocks of attention + gated MLP, a final norm."""
    h, heads = int(m["hidden_size"]), int(m["num_attention_heads"])
    kv = h // heads * int(m.get("num_key_value_heads") or heads)
    tensors = [Tensor("model.embed_tokens.weight", (vocab, h)), Tensor("model.norm.weight", (h,))]
    for i in range(int(m["num_hidden_layers"])):
        tensors += _decoder_block(f"model.layers.{i}", h, kv, int(m["intermediate_size"]))
    return tensors


def t5_tensors(m: dict, vocab: int) -> list[Tensor]:
    d, ff = int(m["d_model"]), int(m["d_ff"])
    tensors = [Tensor("shared.weight", (vocab, d))]
    for stack, n, attns in (
        ("encoder", m["num_layers"], ("SelfAttention",)),
        ("decoder", m["num_decoder_layers"], ("SelfAttention", "EncDecAttention")),
    ):
        tensors.append(
            Tensor(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", (32, int(m["num_heads"])))
        )
        for i in range(int(n)):
            for j, attn in enumerate(attns):
                tensors += [Tensor(f"{stack}.block.{i}.layer.{j}.{attn}.{p}.weight", (d, d)) for p in "qkvo"]
            ff_at = f"{stack}.block.{i}.layer.{len(attns)}.DenseReluDense"
            tensors += [Tensor(f"{ff_at}.wi.weight", (ff, d)), Tensor(f"{ff_at}.wo.weight", (d, ff))]
            tensors += [Tensor(f"{stack}.block.{i}.layer.{j}.layer_norm.weight", (d,)) for j in range(len(attns) + 1)]
        tensors.append(Tensor(f"{stack}.final_layer_norm.weight", (d,)))
    return tensors


def lstm_tensors(m: dict, vocab: int) -> list[Tensor]:
    e, h = int(m["embedding_dim"]), int(m["hidden_size"])
    tensors = [Tensor("embed.weight", (vocab, e))]
    for i in range(int(m["num_layers"])):
        tensors += [
            Tensor(f"lstm.weight_ih_l{i}", (4 * h, e if i == 0 else h)),
            Tensor(f"lstm.weight_hh_l{i}", (4 * h, h)),
        ]
        tensors += [Tensor(f"lstm.bias_{k}_l{i}", (4 * h,)) for k in ("ih", "hh")]
    return tensors


BUILT = {"llama": llama_tensors, "mistral": llama_tensors, "t5": t5_tensors, "lstm": lstm_tensors}
TIED_LM_HEAD = {"t5"}  # transformers ties T5's LM head to `shared` whatever the config says


def built_shape(m: dict, labelled: bool, head_modules: list[str]) -> ModelShape | None:
    vocab = vocab_size(m.get("tokenizer"))
    if vocab is None or m.get("arch") not in BUILT:
        return None
    tensors = BUILT[m["arch"]](m, vocab)
    recurrent = m["arch"] == "lstm"
    hidden = int(m.get("hidden_size") or m.get("d_model"))
    head = (head_modules[0] if head_modules else "score") if labelled else ("head" if recurrent else "lm_head")
    aliases = []
    if labelled or m["arch"] not in TIED_LM_HEAD:
        tensors.append(Tensor(f"{head}.weight", (LABEL_HEAD_ROWS if labelled else vocab, hidden)))
    else:  # one `shared` tensor, three module names PEFT may each copy (modules_to_save)
        names = ("encoder.embed_tokens", "decoder.embed_tokens", "lm_head")
        aliases = [Tensor(f"{name}.weight", (vocab, hidden)) for name in names]
    layers = int(m.get("num_hidden_layers") or 0) or int(m.get("num_layers") or 0) + int(
        m.get("num_decoder_layers") or 0
    )
    return ModelShape(
        tensors=tensors,
        hidden=hidden,
        layers=layers,
        heads=int(m.get("num_attention_heads") or m.get("num_heads") or 1),
        intermediate=int(m.get("intermediate_size") or m.get("d_ff") or 4 * hidden),
        vocab=vocab,
        recurrent=recurrent,
        aliases=aliases,
    )


def model_shape(model_cfg: dict, task) -> ModelShape | None:
    """The model's tensors and sizes for `task` (a sweeper.tasks.Task), or None when neither its
    files (a hub id not on this machine) nor its config (an unknown arch) say."""
    head_modules = task.full_rank_modules(model_cfg) if task.labelled else []
    if model_cfg.get("source") == "config":
        shape = built_shape(model_cfg, task.labelled, head_modules)
    else:
        folder = local_folder(model_cfg.get("name_or_path"))
        shape = pretrained_shape(folder, task.labelled, head_modules) if folder else None
    if shape is not None:
        shape.head_names = list(task.full_rank_modules(model_cfg))
    return shape
