"""generation: text in (`source_field`), text out (`target_field`): T5 as an encoder-decoder, any other
generating model as a causal LM continuing a prompt. Headline metric: chrF of greedy outputs;
a paired t-test on the rows' sentence chrF in the report."""

from __future__ import annotations

import string
from typing import Any

from .base import Task, eval_heads, register

SEQ2SEQ_ARCHS = ("t5",)  # generation as an encoder-decoder; every other generating arch is a causal LM
NON_GENERATING_ARCHS = ("bert", "lstm")  # an encoder only / a classifier: no text out


def is_seq2seq(model_cfg) -> bool:
    return model_cfg.arch in SEQ2SEQ_ARCHS


@register
class Generation(Task):
    name = "generation"
    description = "text to text: `source_field` -> `target_field` (chrF, exact match)"
    position = 2
    primary = "chrf"
    digits = 1  # chrF is on sacrebleu's 0-100 scale
    early_stop_metric = "chrf"
    metrics = ("chrf", "exact_match")
    decodes = True
    uneven_token_loss = True
    packable = False  # decoding (model.generate) runs one model at a time: docs/packing.md
    row_score = "chrf"

    # ------------------------------------------------------------ data
    def check_spec(self, spec: dict) -> dict:
        """`source_field` -> `target_field` (any two text columns); `prompt` (a template with
        {source}) and `max_new_tokens` (decoding budget) are the dataset's, since both follow its texts."""
        from ..data.spec import DatasetError

        name = spec["name"]
        spec.setdefault("source_field", "source")
        spec.setdefault("target_field", "target")
        spec.setdefault("prompt", "{source}")
        spec.setdefault("max_new_tokens", 32)
        if spec["source_field"] == spec["target_field"]:
            raise DatasetError(name, f"source_field and target_field are both '{spec['source_field']}'")
        prompt = spec["prompt"]
        try:
            fields = {field for _, field, _, _ in string.Formatter().parse(prompt) if field is not None}
        except (ValueError, TypeError, AttributeError):  # a stray brace, or no text at all
            fields = None
        if fields != {"source"}:
            raise DatasetError(
                name, f"prompt must be a text holding {{source}} (and no other {{field}}), got {prompt!r}"
            )
        tokens = spec["max_new_tokens"]
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
            raise DatasetError(name, f"max_new_tokens must be a positive integer, got {tokens!r}")
        return spec

    def build_frames(self, name: str, spec: dict, given: dict) -> tuple[dict, dict]:
        from ..data.build import check_splits, dropped_rows
        from ..data.pairs import generation_frames, pair_rows

        pairs = {s: pair_rows(name, spec, df) for s, df in given.items()}
        frames = generation_frames(name, spec, pairs)
        check_splits(name, frames, None)
        return frames, {"dropped": dropped_rows(pairs)}

    def features(self, meta: dict) -> dict:
        import datasets

        return {"source": datasets.Value("string"), "target": datasets.Value("string")}

    # ------------------------------------------------------------ model
    def model_mismatch(self, model_cfg) -> str | None:
        if model_cfg.get("arch") in NON_GENERATING_ARCHS:
            return (
                f"model '{model_cfg.get('name')}' (arch {model_cfg.get('arch')}) cannot do task generation: it produces "
                "no text; use a T5 (tiny_t5) or a causal LM (smollm2, tiny_llama, tiny_mistral)"
            )
        return None

    def auto_class(self, model_cfg):
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM if is_seq2seq(model_cfg) else AutoModelForCausalLM

    def peft_task_type(self, model_cfg) -> str | None:
        return "SEQ_2_SEQ_LM" if is_seq2seq(model_cfg) else "CAUSAL_LM"

    # ------------------------------------------------------------ token ids and batches
    def encode(self, splits, tokenizer, cfg, truncation: str):
        """Each pair as prompt + target ids; the dataset's prompt template and decoding budget."""
        from ..data.spec import as_dict
        from ..train.batches import encode_generation

        spec = self.check_spec(as_dict(cfg.dataset))
        settings = (spec["prompt"], is_seq2seq(cfg.model), int(spec["max_new_tokens"]))
        max_length = int(cfg.train.max_length)
        heads = eval_heads(splits, int(cfg.train.eval_size))
        evals = {s: encode_generation(head, tokenizer, max_length, *settings) for s, head in heads.items()}
        return encode_generation(splits["train"], tokenizer, max_length, *settings), evals

    def batch_labels(self, enc, rows, ids, mask):
        from ..train.batches import padded

        return padded([enc.targets[i] for i in rows], -100)[0]  # no loss on padding (nor, causal, on the prompt)

    # ------------------------------------------------------------ evaluation
    def predict_batch(self, model, out, batch, enc, rows, pad_id: int, runtime) -> tuple[int, list]:
        from ..train.evaluate import generate

        return int((batch["labels"] != -100).sum()), generate(model, enc, rows, pad_id, runtime)

    def split_metrics(self, loss: float, enc, preds: list, num_labels: int) -> dict[str, Any]:
        from ..train.evaluate import generation_metrics

        return {"loss": loss, **generation_metrics(enc.references, preds)}

    def score_line(self, metrics: dict) -> str:
        validation = metrics.get("validation") or {}
        val = f" (val {validation['chrf']:.1f})" if validation else ""
        return f"test chrF {metrics['chrf']:.1f}{val}, exact match {metrics['exact_match']:.3f}"

    def save_predictions(self, run_dir, enc, preds: list) -> None:
        from ..train.evaluate import save_predictions

        save_predictions(run_dir, enc.references, preds)

    def record_extras(self, enc, preds: list) -> dict[str, Any]:
        from ..train.evaluate import generation_examples

        return {"examples": generation_examples(enc, preds)}
