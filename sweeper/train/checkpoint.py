"""Checkpoints of one run: enough to resume at step k and finish exactly as an uninterrupted run.

    <run_dir>/checkpoint/weights.safetensors   parameters the optimizer holds (all weights when the
                                               method changes frozen ones, e.g. ReLoRA merges)
    <run_dir>/checkpoint/trainer.pt            optimizer state, RNG, step, method counters
                                               (plain tensors and numbers: loaded with weights_only)
    <run_dir>/checkpoint/best.safetensors      early stopping: the best validation step's weights
    <run_dir>/checkpoint/loop.json             the loop's bookkeeping: events so far, train seconds,
                                               examples seen, last loss (a resumed record sums them)
    <run_dir>/checkpoint/step.json             written last: marks the folder complete, and holds
                                               the sha256 of every other file

A new checkpoint is written beside the old one (a unique temporary folder), then swapped in with
two renames (the old one aside, the new one in). A kill between them leaves no checkpoint/:
prepare() and save() put the latest complete one back. A write that fails (disk full) removes its
temporary folder; folders left by killed attempts are removed by the next save. A checkpoint whose
files do not match their digests (truncated, overwritten) is set aside as checkpoint.corrupt-<time>
by prepare(), named in the log and the record, and the point restarts from the previous complete
checkpoint or from step 0.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..files import (
    CorruptFile,
    as_storage_error,
    atomic_write_text,
    file_sha256,
    honour_umask,
    publish_dir,
    read_text,
    refuse_link,
    run_folder,
)
from ..runs import CHECKPOINT_DIR
from . import sharding

CORRUPT_PREFIX = f"{CHECKPOINT_DIR}.corrupt-"  # a set-aside checkpoint: kept for a person to look at


def weights_to_save(model, optimizer, method) -> dict[str, torch.Tensor]:
    """What can differ from the freshly built model: the parameters the optimizer holds, or every
    weight when the method changes frozen ones (ReLoRA merges). FSDP: gathered, on rank 0 only
    (every rank must call this)."""
    frozen_too = method.changes_frozen_weights
    if sharding.is_sharded(model):
        # FSDP trains lora and full only: the optimizer holds exactly the trainable weights
        return sharding.full_weights(model, trainable_only=not frozen_too)
    if frozen_too:
        return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if id(p) in held}


def save(
    run_dir: Path, model, optimizer, method, step: int, watch=None, loop: LoopState | None = None, write: bool = True
) -> Path | None:
    """Write the checkpoint of `step`. FSDP: every rank calls it (the weights and optimizer state are
    gathered first); only the one with write=True (rank 0) writes."""
    weights = weights_to_save(model, optimizer, method)
    sharded = sharding.is_sharded(model)
    optimizer_state = sharding.full_optimizer_state(model, optimizer) if sharded else optimizer.state_dict()
    if not write:
        return None
    final = refuse_link(run_folder(run_dir) / CHECKPOINT_DIR)
    restore_set_aside(run_dir)
    for stale in Path(run_dir).glob(f".{CHECKPOINT_DIR}.*"):  # the run lock is ours: nobody else writes these
        shutil.rmtree(stale, ignore_errors=True)  # (a planted link here is not followed: rmtree refuses links)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_DIR}.tmp-", dir=run_dir))
    try:
        _write(tmp, weights, optimizer_state, method, step, watch, loop)
    except BaseException as error:  # disk full mid-write: no partial checkpoint stays to fill it
        shutil.rmtree(tmp, ignore_errors=True)
        raise as_storage_error(error, final)  # noqa: B904  its own cause
    return publish_dir(tmp, final, replace=True)


def _write(tmp: Path, weights, optimizer_state, method, step: int, watch, loop) -> None:
    save_file(weights, str(tmp / "weights.safetensors"))
    state = {
        "step": step,
        "optimizer": optimizer_state,
        "method": method.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    if watch is not None:  # early stopping: its counters, and the best weights beside them
        state["watch"] = watch.state_dict()
        if watch.best_weights is not None:
            save_file({k: v.contiguous() for k, v in watch.best_weights.items()}, str(tmp / "best.safetensors"))
    torch.save(state, tmp / "trainer.pt")
    (tmp / "loop.json").write_text(json.dumps(asdict(loop or LoopState())))
    digests = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
    honour_umask(tmp)
    atomic_write_text(tmp / "step.json", json.dumps({"step": step, "sha256": digests}))  # last: complete


def corruption(folder: Path) -> str | None:
    """Why a complete checkpoint folder cannot be trusted (a file missing, or not its digest), or None."""
    try:
        digests = json.loads(read_text(folder / "step.json")).get("sha256")
    except (OSError, ValueError, AttributeError) as error:
        return f"step.json unreadable ({type(error).__name__})"
    if digests is None:  # written before digests: every file must at least load
        name = "weights.safetensors"
        try:
            for name in ("weights.safetensors", "best.safetensors", "trainer.pt"):
                if name == "trainer.pt":
                    torch.load(folder / name, weights_only=True, mmap=True)
                elif (folder / name).exists():
                    load_file(str(folder / name))
        except Exception as error:  # noqa: BLE001  safetensors and torch raise their own types
            return f"{name}: {' '.join(str(error).split())}"
        return None
    for name, want in digests.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != want:
            return f"{name} does not match its sha256 (truncated or overwritten)"
    return None


def prepare(run_dir: Path) -> list[str]:
    """Before anyone reads the checkpoint (the lock holder, before other ranks start): put back a
    set-aside one, then set aside every complete checkpoint that is corrupt, newest first, until a
    sound one (or none) is left. Returns the names of the folders set aside."""
    set_aside = []
    while True:
        restore_set_aside(run_dir)
        folder = Path(run_dir) / CHECKPOINT_DIR
        if folder.is_symlink() or not (folder / "step.json").exists():
            return set_aside
        reason = corruption(folder)
        if reason is None:
            return set_aside
        aside = Path(tempfile.mkdtemp(prefix=f"{CORRUPT_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-", dir=run_dir))
        os.rename(folder, aside)  # over the empty folder mkdtemp made: a name no other set-aside has
        set_aside.append(aside.name)
        print(f"[checkpoint] {folder}: {reason}; set aside as {aside.name}", file=sys.stderr, flush=True)


def set_aside_names(run_dir: Path) -> list[str]:
    """The corrupt checkpoints prepare() set aside in this run folder (for the record)."""
    return sorted(p.name for p in Path(run_dir).glob(f"{CORRUPT_PREFIX}*"))


def restore_set_aside(run_dir: Path) -> None:
    """A kill between publish_dir's two renames leaves no checkpoint/, only the previous one set
    aside (.checkpoint.old-<pid>) and the new one beside it (.checkpoint.tmp-<pid>, complete once
    its step.json is written): the latest complete one becomes the checkpoint. Called by the run
    lock's holder only (load, save): it renames."""
    final = Path(run_dir) / CHECKPOINT_DIR
    if final.exists() or final.is_symlink():
        return
    candidates = [d for d in Path(run_dir).glob(f".{CHECKPOINT_DIR}.*") if not d.is_symlink()]
    complete = [d for d in candidates if (d / "step.json").exists()]
    if complete:
        os.rename(max(complete, key=_step_in), final)


def _step_in(folder: Path) -> int:
    try:
        return int(json.loads((folder / "step.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


@dataclass
class LoopState:
    """The training loop's bookkeeping at a checkpoint (loop.json): what the segments before a
    resume did, so the resumed record sums them. Written by the solo and the packed loop alike."""

    events: list = field(default_factory=list)
    train_seconds: float = 0.0
    examples: int = 0
    loss: float = math.nan
    finished: bool = False  # training was over (the checkpoint before evaluation)


def loop_state(run_dir: Path) -> LoopState:
    """The bookkeeping of the checkpoint in run_dir (a fresh LoopState when there is none)."""
    try:
        saved = json.loads((Path(run_dir) / CHECKPOINT_DIR / "loop.json").read_text())
    except (OSError, ValueError):
        return LoopState()
    return LoopState(**{k: v for k, v in saved.items() if k in LoopState.__dataclass_fields__})


def load(run_dir: Path, model, optimizer, method, watch=None, tidy: bool = True) -> int:
    """Restore weights, optimizer, RNG and method state; return the step to start from (0 if none).
    tidy=False (ranks > 0 of a distributed point): read only; rank 0 restored a set-aside one before."""
    if tidy:
        restore_set_aside(run_dir)
    folder = refuse_link(Path(run_dir) / CHECKPOINT_DIR)
    if not (folder / "trainer.pt").exists():
        return 0
    try:
        weights = load_file(str(folder / "weights.safetensors"))
    except Exception as error:  # noqa: BLE001  past prepare(): corrupted since; the next attempt sets it aside
        raise CorruptFile(f"checkpoint {folder}: {' '.join(str(error).split())}") from error
    missing = set(weights) - set(model.state_dict())
    if missing:
        raise RuntimeError(f"checkpoint {folder} does not fit this model (e.g. {sorted(missing)[:3]})")
    state = torch.load(folder / "trainer.pt", weights_only=True)
    if sharding.is_sharded(model):  # every rank read the same files: each keeps its shards of them
        sharding.load_weights(model, weights, from_rank0=False)
        sharding.load_optimizer_state(model, optimizer, state["optimizer"])
    else:
        model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(state["optimizer"])
    method.load_state_dict(state["method"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if watch is not None and "watch" in state:
        best = folder / "best.safetensors"
        watch.load_state_dict(state["watch"], load_file(str(best)) if best.exists() else None)
    return int(state["step"])


def truncate_metrics(metrics_path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a resumed run restarts from)."""
    if not os.path.lexists(metrics_path):
        return
    refuse_link(metrics_path)  # a planted link: neither read nor truncated
    if step == 0:
        metrics_path.unlink()
        return
    kept = [line for line in read_text(metrics_path).splitlines() if _step_of(line) <= step]
    atomic_write_text(metrics_path, "".join(line + "\n" for line in kept))


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except ValueError:  # a line cut by a kill mid-write: drop it
        return float("inf")


def remove(run_dir: Path) -> None:
    """After the record: the checkpoint, and whatever killed attempts left beside it."""
    for folder in [Path(run_dir) / CHECKPOINT_DIR, *Path(run_dir).glob(f".{CHECKPOINT_DIR}.*")]:
        shutil.rmtree(folder, ignore_errors=True)
