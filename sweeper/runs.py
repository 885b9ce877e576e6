"""Run identity and the one skip rule (torch-free: the planner and the readers use it).

    run_dir = run_dir_of(cfg)            # <results_dir>/runs/<readable prefix>-<config hash>
                                         # cfg: a DictConfig, or the planner's resolved plain dict
    decision, error = decide(run_dir, retry_failed=False)

A point's fate is decided by what lies in its run folder:

    record.json, status ok      -> skip-ok
    record.json, status failed  -> skip-failed, or retry with sweeper.retry_failed=true
    record.json, JobLost        -> rerun-lost (its job died; not final), or resume from a checkpoint
    record.json, a bad setting  -> run once the command's value at its key differs (it may be a
                                   bookkeeping key, no part of the run id), else skip-failed
    record.json, transient      -> rerun-transient (the disk, not the point, failed), or resume;
                                   after TRANSIENT_ATTEMPTS such failures in a row: skip-failed
    run folder is a link        -> run (the worker refuses it in one line, writing nothing there)
    checkpoint/ but no record   -> resume (training restarts from the checkpoint)
    nothing                     -> run

The run id hashes only the result-determining config, so the same command run twice finds the
same folders, and a new dataset or rank only adds new folders.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import socket
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .files import LOCK_NAME, RunLock, TransientError, UnsafePath, is_storage_failure  # noqa: F401  (re-exported)
from .records import RECORD_NAME, Status, one_line, read_existing
from .settings import SettingError
from .tasks.base import DEFAULT as DEFAULT_TASK

# Fields that cannot change a result: excluded from the run id so that they can change freely.
# (nproc, parallel: the global batch and its updates are the same on any rank count, sharded or not,
# and a run resumes with any. stop_at: successive halving's rung budget; the point is the same run,
# paused on the schedule of its max_steps.)
BOOKKEEPING_TRAIN_KEYS = {
    "stop_at",
    "log_every",
    "threads",
    "nproc",
    "parallel",
    "eval_batch_size",
    "checkpoint_every",
    "save_adapter",
    "save_weights",
    "max_memory_gb",  # a limit the planner checks the estimate against (docs/memory.md)
}
# Method keys that declare or steer, never change a number: `trains_base` / `frozen_base` (what the
# memory estimate reads: full trains every weight, relora merges into its base), `quantize_at` (where
# qlora quantises: the same 4-bit codes either way).
BOOKKEEPING_METHOD_KEYS = {"trains_base", "frozen_base", "quantize_at"}
# Keys added after run ids existed, left out of the id at their default so that finished points keep
# theirs (a value other than the default is part of it). qlora's ids changed once when this was added.
LATER_DEFAULTS = {"method": {"gradient_checkpointing": False}}
# Descriptive dataset fields: editing them changes no number (the data itself enters as its fingerprint).
DESCRIPTIVE_KEYS = {"description", "comment", "comments", "notes", "generated", "family"}
IDENTITY_VERSION = 2  # bump when the identity's recipe changes (2: data fingerprint, precision, version)
CHECKPOINT_DIR = "checkpoint"  # <run_dir>/checkpoint/ (sweeper.train.checkpoint writes it)
CHECKPOINT_STEP_FILE = Path(CHECKPOINT_DIR) / "step.json"  # written last into a checkpoint: it is complete
LOST_ERROR = "JobLost"  # error_type of the record the launcher writes for a job that died without one
TRANSIENT, DETERMINISTIC = "transient", "deterministic"  # a failed record's `failure`
# A value outside what its key may hold (sweeper.settings); the record names the key (`setting`). A
# bookkeeping key (log_every, threads, ...) is no part of the run id, so the corrected command has the
# failed record's run id: the skip rule runs it when the key's value differs from the record's.
SETTING = "setting"
TRANSIENT_ATTEMPTS = 3  # transient failures in a row after which a point is reported, not re-run


class Decision(str, Enum):
    """What a launch does with a point."""

    RUN = "run"
    RESUME = "resume"
    RETRY = "retry"
    RERUN_LOST = "rerun-lost"  # its job died without a result (JobLost record): not final, runs again
    RERUN_TRANSIENT = "rerun-transient"  # disk full, I/O error, a corrupt file: not final, runs again
    SKIP_OK = "skip-ok"
    SKIP_FAILED = "skip-failed"
    DUPLICATE = "duplicate"  # the same run id as an earlier point of this grid (tfidf ignores `model`)
    NOT_APPLICABLE = "not-applicable"  # the model cannot do the dataset's task: planned apart, no record

    def __str__(self) -> str:
        return self.value

    @property
    def runs(self) -> bool:
        return self not in (Decision.SKIP_OK, Decision.SKIP_FAILED, Decision.DUPLICATE, Decision.NOT_APPLICABLE)


# ---------------------------------------------------------------- identity
def resolved(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """A point's config as a resolved plain dict (the planner already holds one: returned as is)."""
    return cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)


def result_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The part of the resolved config that determines the result, normalised (16 == 16.0).

    A method with `uses_model: false` (tfidf) leaves the model out, and one with `train_keys` keeps
    only those train keys: `model=a,b method=tfidf` is one point, not two.
    """
    cfg = resolved(cfg)
    method, train = cfg["method"], cfg["train"]
    keep = method.get("train_keys")
    train = {k: v for k, v in train.items() if k not in BOOKKEEPING_TRAIN_KEYS and (keep is None or k in keep)}
    if keep is None:
        train["dtype"], train["device"] = precision(train.get("device"), train.get("dtype"))
    method = {k: v for k, v in method.items() if k not in BOOKKEEPING_METHOD_KEYS}
    identity = {
        "dataset": {k: v for k, v in cfg["dataset"].items() if k not in DESCRIPTIVE_KEYS},
        "model": cfg["model"] if uses_model(cfg) else None,
        "method": without_later_defaults("method", with_file_content(method)),
        "train": without_later_defaults("train", train),
    }
    return normalised(identity)


def without_later_defaults(section: str, values: dict[str, Any]) -> dict[str, Any]:
    defaults = LATER_DEFAULTS.get(section, {})
    return {k: v for k, v in values.items() if k not in defaults or v != defaults[k]}


def with_file_content(method: dict[str, Any]) -> dict[str, Any]:
    """`method.adapter_config` (method=peft) names a file: its content is the setting, not its path
    (the same JSON in two folders is one point; an edited file is another)."""
    path = method.get("adapter_config")
    if not path:
        return method
    try:
        content: Any = json.loads(Path(str(path)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        content = {"unreadable": str(path)}  # the point fails in one line when it builds the method
    return {**method, "adapter_config": content}


def uses_model(cfg: DictConfig | dict[str, Any]) -> bool:
    return bool(cfg["method"].get("uses_model", True))


def precision(device: Any, dtype: Any) -> tuple[str, str]:
    """(effective dtype, device type): bfloat16 autocast happens only on CUDA, so bfloat16 asked for
    on the CPU computes what float32 does. `auto` stays `auto` (the record says what ran). A value
    that is no dtype stays itself: its failed record must not take float32's run id."""
    device_type = str(device or "auto").split(":")[0]
    if str(dtype) == "bfloat16":
        return ("float32" if device_type == "cpu" else "bfloat16"), device_type
    return ("float32" if dtype is None else str(dtype)), device_type


def normalised(value: Any) -> Any:
    """Integral floats become ints (a YAML 16.0 and a CLI 16 are one setting), recursively."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def data_fingerprint(cfg: DictConfig | dict[str, Any]) -> str:
    """Digest of the dataset's input files (what the dataset cache keys on): an edited CSV or a
    rebuilt pool is new data, so a new run id. Hub datasets: their spec (name, revision) only."""
    from .data.cache import data_fingerprint as fingerprint  # pandas, not torch: the planner can afford it

    return fingerprint(resolved(cfg)["dataset"])


def identity(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """Everything the run id hashes: the result config, the data fingerprint, the package version."""
    cfg = resolved(cfg)
    return {
        "config": result_config(cfg),
        "data": data_fingerprint(cfg),
        "version": package_version(),
        "identity": IDENTITY_VERSION,
    }


@lru_cache(maxsize=1)
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sweeper")
    except PackageNotFoundError:
        return "0+unknown"


def safe_name(text: Any) -> str:
    """Names become folder names: no separators, no "..", nothing a shell or filesystem treats specially."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(text)).strip("._") or "x"


PLAIN_NAME = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9_.=-]*")  # one folder name: no separator, no leading dot


def check_plain_name(key: str, value: Any) -> str:
    """`value` if it can name one folder inside the results folder (sweeper.name, a run id), else
    ValueError: `sweeper.name=../../tmp/x` must not write records outside results/."""
    if not PLAIN_NAME.fullmatch(str(value)):
        raise ValueError(
            f"{key} {str(value)!r} must be a plain folder name (letters, digits, _ . = -, not starting with a dot); "
            "sweeper.results_dir=PATH names another folder"
        )
    return str(value)


def make_run_id(cfg: DictConfig | dict[str, Any]) -> str:
    """Readable prefix + hash of the result-determining config: stable across runs and machines."""
    cfg = resolved(cfg)
    blob = json.dumps(identity(cfg), sort_keys=True, default=str).encode()
    digest = hashlib.sha256(blob).hexdigest()[:10]
    method, train = cfg["method"], cfg["train"]
    rank = f"-r{normalised(method['r'])}" if method.get("r") is not None else ""
    parts = f"{cfg['dataset']['name']}-{model_name(cfg)}-{method['name']}{rank}-s{normalised(train['seed'])}"
    return f"{safe_name(parts)[:120]}-{digest}"


def model_name(cfg: DictConfig | dict[str, Any]) -> str:
    return str(cfg["model"]["name"]) if uses_model(cfg) else "none"


def run_dir_of(cfg: DictConfig | dict[str, Any]) -> Path:
    """The point's folder. A launcher's job passes the id its planner computed (sweeper.run_id), so
    the worker writes where the launcher watches even if the data changed since planning."""
    cfg = resolved(cfg)
    check_plain_name("sweeper.name", cfg["sweeper"]["name"])
    run_id = check_plain_name("sweeper.run_id", cfg["sweeper"].get("run_id") or make_run_id(cfg))
    return Path(cfg["sweeper"]["results_dir"]).absolute() / "runs" / run_id


def base_record(cfg: DictConfig | dict[str, Any], run_id: str) -> dict[str, Any]:
    """The identity fields every record of this config carries (status running until it ends)."""
    cfg = resolved(cfg)
    method, dataset, train = cfg["method"], cfg["dataset"], cfg["train"]
    return {
        "run_id": run_id,
        "sweep": str(cfg["sweeper"]["name"]),
        "status": Status.RUNNING,
        "error": None,
        "error_type": None,
        "dataset": str(dataset["name"]),
        # Dataset specs are user files: a spec without `family` / `task` still has a sensible one.
        "family": str(dataset.get("family") or str(dataset["name"]).split("_")[0]),
        "task": str(dataset.get("task") or DEFAULT_TASK),
        "model": model_name(cfg),
        "method": str(method["name"]),
        "r": method.get("r"),
        "alpha": method.get("alpha"),
        "seed": int(train["seed"]),
        "lr": train["lr"],
        "max_steps": int(train["max_steps"]),
        "config": copy.deepcopy(cfg),  # the planner shares section dicts between points
        "data_fingerprint": data_fingerprint(cfg),
        "version": package_version(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
    }


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout the package runs from (None when it is not one, e.g. a wheel)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------- the skip rule
def target_steps(train: DictConfig | dict[str, Any]) -> int:
    """The step a point trains to in this launch: train.max_steps, or a halving rung's train.stop_at."""
    max_steps, stop_at = int(train["max_steps"]), train.get("stop_at")
    return max_steps if stop_at is None else min(int(stop_at), max_steps)


def rung_stop(record: dict[str, Any]) -> int | None:
    """The step an ok record stopped at short of its max_steps (a halving rung), else None."""
    section = record.get("train") if isinstance(record.get("train"), dict) else {}
    return section.get("steps") if section.get("stopped_at_rung") is not None else None


def decide(
    run_dir: Path, retry_failed: bool, want_steps: int | None = None, config: dict | None = None
) -> tuple[Decision, str | None]:
    """(decision, earlier error) for a point whose results live in run_dir; `want_steps`: the step
    this launch trains it to (target_steps), which a record stopped at an earlier rung falls short of;
    `config`: the point's resolved config, against which a bad setting's record is compared."""
    decision, record = _decide(run_dir, retry_failed, want_steps, config)
    return decision, record.get("error") if record is not None else None


def finished_record(
    run_dir: Path, retry_failed: bool, want_steps: int | None = None, config: dict | None = None
) -> dict[str, Any] | None:
    """The point's existing record, marked `skipped`, when the skip rule says it need not run again."""
    decision, record = _decide(run_dir, retry_failed, want_steps, config)
    if decision.runs:
        return None
    return {**record, "skipped": True, "record_path": str(Path(run_dir) / RECORD_NAME)}


def transient_failures(record: dict[str, Any] | None) -> int:
    """How many transient failures in a row a failed record ends (0: none, or not failed)."""
    if record is None or record.get("status") != Status.FAILED:
        return 0
    if record.get("error_type") == LOST_ERROR:
        return 1
    if record.get("failure") != TRANSIENT:
        return 0
    count = record.get("transient_failures")
    return count if isinstance(count, int) and count > 0 else 1


def failure_fields(error: BaseException, previous: dict[str, Any] | None) -> dict[str, Any]:
    """A failed record's fields for `error`: one line, its type, and its class. Transient (the
    environment failed: disk full, quota, I/O, a corrupt file) re-runs on a plain relaunch, counted
    on from the `previous` record; deterministic (bad config, bad data) waits for retry_failed."""
    transient = isinstance(error, TransientError) or is_storage_failure(error)
    failure = SETTING if isinstance(error, SettingError) else TRANSIENT if transient else DETERMINISTIC
    fields = {"status": Status.FAILED, "error": one_line(error), "error_type": type(error).__name__, "failure": failure}
    if failure == SETTING:
        fields["setting"] = error.key
    if transient:
        fields["transient_failures"] = transient_failures(previous) + 1
    return fields


def setting_corrected(record: dict[str, Any] | None, config: dict | None) -> bool:
    """Whether `config` holds another value at the key whose bad value failed `record`."""
    if config is None or record is None or record.get("failure") != SETTING or not record.get("setting"):
        return False
    return _at(record.get("config"), record["setting"]) != _at(config, record["setting"])


def _at(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return normalised(config)


def _decide(
    run_dir: Path, retry_failed: bool, want_steps: int | None, config: dict | None = None
) -> tuple[Decision, dict[str, Any] | None]:
    if os.path.islink(run_dir):  # a planted link: nothing in it is ours to read; the worker refuses it
        return Decision.RUN, None
    record = read_existing(run_dir)
    resumable = (Path(run_dir) / CHECKPOINT_STEP_FILE).exists()
    if record is not None and record["status"] == Status.OK:
        stopped = rung_stop(record)
        if stopped is not None and want_steps is not None and stopped < want_steps:  # promoted past its rung
            return (Decision.RESUME if resumable else Decision.RUN), None
        return Decision.SKIP_OK, record
    if record is not None and record["status"] == Status.FAILED and record.get("error_type") == LOST_ERROR:
        return (Decision.RESUME if resumable else Decision.RERUN_LOST), record
    if setting_corrected(record, config):  # the bad value is no longer in the command
        return Decision.RUN, None
    if 0 < transient_failures(record) < TRANSIENT_ATTEMPTS:
        return (Decision.RESUME if resumable else Decision.RERUN_TRANSIENT), record
    if record is not None and record["status"] == Status.FAILED:
        return (Decision.RETRY if retry_failed else Decision.SKIP_FAILED), record
    if resumable:
        return Decision.RESUME, None
    return Decision.RUN, None
