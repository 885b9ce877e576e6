"""One grid point, start to finish: config -> data -> model -> method -> train -> evaluate -> record.

    record = run_point(cfg)

Never raises for a bad point: any error becomes a `failed` record with a one-line message, so the
rest of the sweep goes on. (`Interrupted`, a requested stop after a checkpoint, does propagate: the
launcher requeues the job and the next attempt resumes.)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from . import checkpoint
from .records import RECORD_NAME, read_record, write_record

# peft 0.21 calls a transformers API deprecated in 5.x on every wrap: harmless, and it buries real output.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
# peft imports bitsandbytes (method=qlora) whenever it is installed; on CPUs with AVX512-BF16 bnb then logs
# that an optional fused-kernel package is missing. It falls back to its own kernels: not worth a line per job.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# Fields that cannot change a result: excluded from the run id so that they can change freely.
BOOKKEEPING_TRAIN_KEYS = {"log_every", "threads", "device", "eval_batch_size", "checkpoint_every", "save_adapter"}


# ---------------------------------------------------------------- identity
def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the resolved config that determines the result."""
    train = {k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items() if k not in BOOKKEEPING_TRAIN_KEYS}
    return {
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "method": OmegaConf.to_container(cfg.method, resolve=True),
        "train": train,
    }


def _safe(text: Any) -> str:
    # Names become folder names: no separators, no "..", nothing a shell or filesystem treats specially.
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(text)).strip("._") or "x"


def make_run_id(cfg: DictConfig) -> str:
    """Readable prefix + hash of the result-determining config: stable across runs and machines."""
    digest = hashlib.sha256(json.dumps(result_config(cfg), sort_keys=True, default=str).encode()).hexdigest()[:10]
    rank = f"-r{cfg.method.r}" if cfg.method.get("r") is not None else ""
    parts = f"{cfg.dataset.name}-{cfg.model.name}-{cfg.method.name}{rank}-s{cfg.train.seed}"
    return f"{_safe(parts)[:120]}-{digest}"


def run_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.sweeper.results_dir).absolute() / "runs" / make_run_id(cfg)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."


# ---------------------------------------------------------------- runtime
def setup_runtime(train_cfg):
    """Seed, threads, device, autocast for this process."""
    if train_cfg.get("threads"):
        torch.set_num_threads(int(train_cfg.threads))
    elif os.environ.get("SWEEPER_THREADS"):
        torch.set_num_threads(int(os.environ["SWEEPER_THREADS"]))
    torch.manual_seed(int(train_cfg.seed))
    name = str(train_cfg.get("device", "auto"))
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))
    if train_cfg.get("dtype", "float32") == "bfloat16" and device.type == "cuda":
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    return device, autocast


class PeakMemory:
    """Peak memory of this run: CUDA max allocated, or the peak RSS sampled every 20 ms on CPU
    (ru_maxrss would carry over the peak of earlier points run in the same process)."""

    def __init__(self, device):
        self.device, self.peak_bytes, self._stop = device, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_bytes = max(self.peak_bytes, self._rss())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._rss())

    @property
    def mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)


# ---------------------------------------------------------------- the point
def _train_and_evaluate(cfg, run_dir: Path, device, autocast, should_stop) -> dict[str, Any]:
    from .data import DatasetError, load_splits
    from .methods import build_method
    from .models import build_model, count_parameters
    from .train import evaluate, train

    task = cfg.dataset.task
    try:
        splits = load_splits(cfg.dataset)
    except DatasetError:
        raise
    except Exception as error:  # an unforeseen data problem still names its dataset
        raise DatasetError(str(cfg.dataset.name), f"{type(error).__name__}: {error}") from error
    tr = cfg.train
    if task == "lm":
        num_labels = 0
    else:
        num_labels = splits["train"].features["label"].num_classes
    model, tokenizer = build_model(cfg.model, task, num_labels)
    method = build_method(cfg.method, cfg.model, task)
    model = method.wrap(model).to(device)
    trainable, total = count_parameters(model)
    pad_id = tokenizer.pad_token_id

    train_enc, eval_enc = encode_splits(splits, tokenizer, tr, task)

    result = train(model, method, train_enc, task, pad_id, tr, run_dir, device, autocast, should_stop)
    metrics = evaluate(model, eval_enc, task, pad_id, int(tr.eval_batch_size), device, autocast)
    add_final_metrics(metrics, result.final_loss, train_enc, eval_enc, num_labels, task)
    if method.is_peft() and tr.get("save_adapter", True):
        model.save_pretrained(run_dir / "adapter")  # PEFT format: adapter_config.json + safetensors
    return {
        "metrics": metrics,
        "params": {"trainable": trainable, "total": total},
        "train": {"steps": result.steps, "resumed_from_step": result.resumed_from_step,
                  **method.summary(), "events": result.events},
        "cost": {"train_seconds": round(result.train_seconds, 3),
                 "examples_per_second": round(result.examples_seen / max(result.train_seconds, 1e-9), 2)},
    }


def encode_splits(splits, tokenizer, tr, task: str):
    """(train, eval) token ids: lm blocks of train.max_length (eval: validation), classification rows
    (eval: the first train.eval_size test rows)."""
    from .train import encode_classification, encode_lm

    if task == "lm":
        train_enc = encode_lm(splits["train"], tokenizer, int(tr.max_length))
        eval_enc = encode_lm(splits["validation"], tokenizer, int(tr.max_length))
        eval_enc.input_ids = eval_enc.input_ids[: int(tr.eval_size)]
    else:
        train_enc = encode_classification(splits["train"], tokenizer, int(tr.max_length))
        test = splits["test"].select(range(min(len(splits["test"]), int(tr.eval_size))))
        eval_enc = encode_classification(test, tokenizer, int(tr.max_length))
    return train_enc, eval_enc


def add_final_metrics(metrics: dict, final_loss: float, train_enc, eval_enc, num_labels: int, task: str) -> dict:
    metrics["train_loss_final"] = final_loss
    if task != "lm":
        counts = torch.bincount(torch.tensor(train_enc.labels), minlength=num_labels)
        majority = int(counts.argmax())  # the train split's majority class, scored on test
        metrics["majority_accuracy"] = sum(1 for y in eval_enc.labels if y == majority) / len(eval_enc.labels)
    return metrics


def base_record(cfg: DictConfig, run_id: str) -> dict[str, Any]:
    method = cfg.method
    return {
        "run_id": run_id,
        "sweep": str(cfg.sweeper.name),
        "status": "running",
        "error": None,
        "error_type": None,
        "dataset": str(cfg.dataset.name),
        "family": str(cfg.dataset.get("family", str(cfg.dataset.name).split("_")[0])),
        "task": str(cfg.dataset.get("task", "classification")),
        "model": str(cfg.model.name),
        "method": str(method.name),
        "r": method.get("r"),
        "alpha": method.get("alpha"),
        "seed": int(cfg.train.seed),
        "lr": cfg.train.lr,
        "max_steps": int(cfg.train.max_steps),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "host": socket.gethostname(),
    }


def _unresolved_record(cfg: DictConfig, error: Exception) -> tuple[dict[str, Any], Path]:
    """A config that does not even resolve still gets a record, named by a hash of its raw text."""
    raw = OmegaConf.to_yaml(cfg, resolve=False)
    run_id = "unresolved-" + hashlib.sha256(raw.encode()).hexdigest()[:10]
    results_dir = OmegaConf.select(cfg, "sweeper.results_dir", default="results/main", throw_on_resolution_failure=False)
    record = {"run_id": run_id, "sweep": str(OmegaConf.select(cfg, "sweeper.name", default="main")),
              "config_yaml": raw, "status": "failed", "error": one_line(error), "error_type": type(error).__name__}
    return record, Path(str(results_dir)).absolute() / "runs" / run_id


def finished_record(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The point's existing record when it need not run again (status ok; or failed, unless
    sweeper.retry_failed), marked `skipped`; None when it must run (no record, unreadable, retry)."""
    path = Path(run_dir) / RECORD_NAME
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except ValueError:
        return None
    retry = bool(OmegaConf.select(cfg, "sweeper.retry_failed", default=False, throw_on_resolution_failure=False))
    if record["status"] == "ok" or (record["status"] == "failed" and not retry):
        return {**record, "skipped": True, "record_path": str(path)}
    return None


def worker_context(started: float) -> dict[str, Any]:
    """Where the point ran: the launcher's slot and job (sweeper.launch sets SWEEPER_SLOT / SWEEPER_JOB_ID)."""
    return {"slot": os.environ.get("SWEEPER_SLOT"), "job_id": os.environ.get("SWEEPER_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
            "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": torch.get_num_threads(), "started_unix": round(started, 3)}


def run_point(cfg: DictConfig, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    from .train import Interrupted

    started = time.time()
    record, run_dir = start_record(cfg)
    previous = finished_record(cfg, run_dir)
    if previous is not None:  # relaunched sweep: return the existing record as it is, not rewritten
        return previous
    if record.get("status") == "running":
        record["started_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            device, autocast = setup_runtime(cfg.train)
            with PeakMemory(device) as memory:
                outcome = _train_and_evaluate(cfg, run_dir, device, autocast, should_stop)
            outcome["cost"]["peak_memory_mb"] = memory.mb
            record.update(status="ok", **outcome)
        except Interrupted:
            raise
        except Exception as error:  # noqa: BLE001  one bad point must not stop the sweep
            record.update(status="failed", error=one_line(error), error_type=type(error).__name__)
    return finish_record(record, run_dir, started)


def start_record(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """The point's record (status running; failed for a config that does not resolve) and its folder."""
    try:
        run_dir = run_dir_of(cfg)
        return base_record(cfg, run_dir.name), run_dir
    except Exception as error:  # noqa: BLE001
        return _unresolved_record(cfg, error)


def finish_record(record: dict[str, Any], run_dir: Path, started: float) -> dict[str, Any]:
    """Stamp times and worker, write the record atomically, drop the checkpoint of a finished run."""
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["wall_seconds"] = round(time.time() - started, 3)
    record["worker"] = worker_context(started)
    try:
        write_record(run_dir, record)
        if record["status"] == "ok":
            checkpoint.remove(run_dir)
        record["record_path"] = str(run_dir / "record.json")
    except OSError as error:
        record.update(status="failed", error=f"cannot write record under {run_dir}: {one_line(error)}", error_type="OSError")
    return record


def summary_line(record: dict[str, Any]) -> str:
    """One line per finished point, printed by the sweep."""
    name = f"{record.get('dataset')} {record.get('model')} {record.get('method')}"
    if record.get("r") is not None:
        name += f" r={record['r']}"
    if record["status"] != "ok":
        return f"[FAILED] {name}: {record['error']}"
    m = record["metrics"]
    score = f"ppl {m['perplexity']:.2f}" if "perplexity" in m else f"acc {m['accuracy']:.3f} (majority {m['majority_accuracy']:.3f})"
    return f"[ok] {name}: {score}, {record['cost']['train_seconds']:.1f}s train"
