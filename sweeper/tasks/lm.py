"""lm: causal language modelling on a text column, cut into blocks of train.max_length tokens.
Headline metric: test perplexity (lower is better); no predictions, so the report's tolerance rule."""

from __future__ import annotations

from typing import Any

from .base import Task, register


@register
class LanguageModelling(Task):
    name = "lm"
    description = "next-token prediction on `text_field` (perplexity)"
    position = 1
    primary = "perplexity"
    higher_is_better = False
    digits = 2
    early_stop_metric = "loss"
    metrics = ("perplexity",)
    token_level = True

    # ------------------------------------------------------------ data
    def build_frames(self, name: str, spec: dict, given: dict) -> tuple[dict, dict]:
        from ..data.build import check_splits, dropped_rows, lm_frames, select_rows

        given = {s: select_rows(name, spec, df) for s, df in given.items()}
        frames = lm_frames(name, spec, given)
        check_splits(name, frames, None)
        return frames, {"dropped": dropped_rows(given)}

    # ------------------------------------------------------------ model
    def model_mismatch(self, model_cfg) -> str | None:
        if model_cfg.get("arch") in ("bert", "t5"):
            return f"model '{model_cfg.get('name')}': arch '{model_cfg.get('arch')}' has no causal-LM head; use a llama/mistral/lstm model"
        return None

    def auto_class(self, model_cfg):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def peft_task_type(self, model_cfg) -> str | None:
        return None if model_cfg.arch == "lstm" else "CAUSAL_LM"

    def head_loss(self, logits, labels):
        """Next-token cross-entropy over the positions whose label is not masked (-100)."""
        from torch.nn import functional

        return functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )

    # ------------------------------------------------------------ token ids and batches
    def encode(self, splits, tokenizer, cfg, truncation: str):
        from ..train.batches import encode_lm

        max_length, eval_size = int(cfg.train.max_length), int(cfg.train.eval_size)
        evals = {s: encode_lm(splits[s], tokenizer, max_length) for s in ("validation", "test")}
        for enc in evals.values():
            enc.input_ids = enc.input_ids[:eval_size]
        return encode_lm(splits["train"], tokenizer, max_length), evals

    def batch_labels(self, enc, rows, ids, mask):
        return ids.masked_fill(mask == 0, -100)

    # ------------------------------------------------------------ evaluation
    def predict_batch(self, model, out, batch, enc, rows, pad_id: int, runtime) -> tuple[int, list]:
        return int((batch["labels"][:, 1:] != -100).sum()), []  # the loss is a mean over predicted tokens

    def score_line(self, metrics: dict) -> str:
        validation = metrics.get("validation") or {}
        return f"test ppl {metrics['perplexity']:.2f}" + (
            f" (val {validation['perplexity']:.2f})" if validation else ""
        )

    def split_metrics(self, loss: float, enc, preds: list, num_labels: int) -> dict[str, Any]:
        import math

        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "n": len(enc.input_ids)}
