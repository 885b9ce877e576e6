"""What a task is: the facts and hooks every stage asks of it, and the registry of tasks by name.

A task module subclasses `Task`, states its facts (headline metric, whether it has labels, decodes,
predicts every token, ...) and implements the hooks below; `@register` makes it the one answer to
`dataset.task: <name>`. Stages hold a Task object and call its hooks: none compares task names.
Torch-free on import: the readers (collect, report) ask tasks for their metrics; the hooks that
train import what they need when they run.
"""

from __future__ import annotations

from typing import Any


class Task:
    """One task: from a dataset spec to split frames, token ids, a model head, a loss, predictions,
    metrics and the report's paired test. Defaults suit a task without labels or decoding."""

    name: str = ""
    description: str = ""
    position: int = 99  # where tables, pivots and plots show the task among the others
    primary: str = "accuracy"  # the headline test metric: tables, pivots, halving, the report
    higher_is_better: bool = True
    digits: int = 3  # decimals of the headline metric in tables
    early_stop_metric: str = "loss"  # the validation score early stopping keeps the best of
    metrics: tuple[str, ...] = ()  # scores of each split beside the loss: the collector's columns (val_*)
    test_metrics: tuple[str, ...] = ()  # scores of the test split only (the majority class it answers)
    labelled: bool = False  # a fixed label set: num_labels, label names, a classification head
    decodes: bool = False  # evaluation generates text (model.generate)
    token_level: bool = False  # a target per token (lm): the model's head spans the vocabulary
    uneven_token_loss: bool = False  # the loss is a mean over target tokens of uneven lengths per row
    classical: bool = False  # method=tfidf (a classical text classifier) applies
    majority_baseline: bool = False  # the report compares with always answering the majority class
    packable: bool = True  # points may share a base model in one process (sweeper.pack)
    row_score: str | None = None  # predictions.parquet column of a per-row score (paired t-test)

    # ------------------------------------------------------------ facts derived from the above
    @property
    def early_stop_higher(self) -> bool:
        return self.early_stop_metric != "loss"

    @property
    def pivot_file(self) -> str:
        """collect's CSV of this task's pivot (classification keeps the first name it had)."""
        return f"pivot_{self.name}.csv"

    @property
    def heatmap_file(self) -> str:
        return f"heatmap_{self.name}.png"

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # ------------------------------------------------------------ data
    def check_spec(self, spec: dict) -> dict:
        """The spec with this task's defaults filled in; DatasetError on a bad field."""
        spec.setdefault("text_field", "text")
        return spec

    def build_frames(self, name: str, spec: dict, given: dict) -> tuple[dict, dict]:
        """(split frames, meta) from the input frames ({"all": pool} or {split: file})."""
        raise NotImplementedError

    def features(self, meta: dict) -> dict:
        """The split files' columns as `datasets` features."""
        import datasets

        return {"text": datasets.Value("string")}

    def num_labels(self, splits) -> int:
        return 0

    # ------------------------------------------------------------ model
    def model_mismatch(self, model_cfg) -> str | None:
        """Why this model cannot do this task (one line), or None. Torch-free and read from the
        model's config alone: the planner asks it of every point ("not applicable"), the worker
        of an explicit point (check_model)."""
        return None

    def check_model(self, model_cfg) -> None:
        """A one-line ModelError when the model cannot do this task (before anything loads)."""
        reason = self.model_mismatch(model_cfg)
        if reason:
            from ..train.errors import ModelError

            raise ModelError(reason)

    def auto_class(self, model_cfg):
        """transformers' AutoModelFor<Task> for this model."""
        raise NotImplementedError

    def model_kwargs(self, num_labels: int) -> dict[str, Any]:
        """What from_config / from_pretrained need beyond the weights (the head's size, the loss)."""
        return {}

    def peft_task_type(self, model_cfg) -> str | None:
        """PEFT's TaskType name (which PeftModelFor... class wraps the model)."""
        return None

    def full_rank_modules(self, model_cfg) -> list[str]:
        """Modules LoRA trains in full (a freshly initialised head)."""
        return list(model_cfg.get("lm_full_rank_modules") or [])

    def head_loss(self, logits, labels):
        """The loss of a sequence head (LSTM, packed views) on one batch's labels."""
        raise NotImplementedError

    # ------------------------------------------------------------ token ids and batches
    def encode(self, splits, tokenizer, cfg, truncation: str):
        """(train Encoded, {"validation": .., "test": ..}) of the point `cfg`."""
        raise NotImplementedError

    def batch_labels(self, enc, rows, ids, mask):
        """The `labels` tensor of a batch of `rows`."""
        raise NotImplementedError

    # ------------------------------------------------------------ evaluation
    def predict_batch(self, model, out, batch, enc, rows, pad_id: int, runtime) -> tuple[int, list]:
        """(the batch's loss weight, its predictions)."""
        return len(rows), []

    def split_metrics(self, loss: float, enc, preds: list, num_labels: int) -> dict[str, Any]:
        raise NotImplementedError

    def add_baselines(self, scores: dict, train_labels, evals: dict, num_labels: int) -> None:
        """Baseline scores beside the model's (the majority class), in place."""

    def save_predictions(self, run_dir, enc, preds: list) -> None:
        """The test predictions beside the record, for the report's paired tests (none by default)."""

    def record_extras(self, enc, preds: list) -> dict[str, Any]:
        """Top-level record fields a person reads (generation: example outputs)."""
        return {}

    def score_line(self, metrics: dict) -> str:
        """The scores in the sweep's one line per finished point (sweeper.summary)."""
        validation = (metrics.get("validation") or {}).get(self.primary)
        val = f" (val {validation:.{self.digits}f})" if validation is not None else ""
        return f"test {self.primary} {metrics[self.primary]:.{self.digits}f}{val}"

    # ------------------------------------------------------------ method=tfidf
    def plain_labels(self, split) -> tuple[list, list[str] | None]:
        """(each row's label as the model's targets hold it, the label names) of a labelled split."""
        raise NotImplementedError(f"task {self.name} has no labels")

    def classical_fit(self, pipeline, texts: list[str], labels: list):
        raise NotImplementedError(f"task {self.name} has no classical baseline")

    def classical_score(self, model, texts: list[str], labels: list, names: list[str]) -> tuple[dict, list]:
        raise NotImplementedError(f"task {self.name} has no classical baseline")


def eval_heads(splits, eval_size: int) -> dict:
    """The first `eval_size` rows of validation and test: what every evaluation scores."""
    return {s: splits[s].select(range(min(len(splits[s]), eval_size))) for s in ("validation", "test")}


class TextClassifier(Task):
    """A head over a fixed label set on top of a sequence model (classification, multilabel): one
    auto class, PEFT's SEQ_CLS, the head trained in full under LoRA, rows encoded as texts with the
    task's labels (`plain_labels`); tfidf applies."""

    labelled = True
    classical = True

    def auto_class(self, model_cfg):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def peft_task_type(self, model_cfg) -> str | None:
        return None if model_cfg.arch == "lstm" else "SEQ_CLS"

    def full_rank_modules(self, model_cfg) -> list[str]:
        return list(model_cfg.get("head_modules") or [])

    def encode(self, splits, tokenizer, cfg, truncation: str):
        from ..train.batches import encode_classification

        max_length = int(cfg.train.max_length)

        def encoded(split):
            enc = encode_classification(split, tokenizer, max_length, truncation)
            enc.labels, enc.label_names = self.plain_labels(split)
            return enc

        evals = {s: encoded(head) for s, head in eval_heads(splits, int(cfg.train.eval_size)).items()}
        return encoded(splits["train"]), evals


class TaskError(ValueError):
    """An unknown task name; one line naming the known ones."""


REGISTRY: dict[str, Task] = {}
DEFAULT = "classification"  # a spec without `task:` (a drop-in CSV) is a classification dataset


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: the task answers to its `name`; a second task of one name is refused."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"task name {cls.name!r} is empty or registered twice")
    REGISTRY[cls.name] = cls()
    return cls
