"""Checkpoints of one run: enough to resume at step k and finish exactly as an uninterrupted run.

    <run_dir>/checkpoint/weights.safetensors   parameters the optimizer holds (all weights when the
                                               method changes frozen ones, e.g. ReLoRA merges)
    <run_dir>/checkpoint/trainer.pt            optimizer state, RNG, step, method counters
                                               (plain tensors and numbers: loaded with weights_only)
    <run_dir>/checkpoint/best.safetensors      early stopping: the best validation step's weights
    <run_dir>/checkpoint/loop.json             the loop's bookkeeping: events so far, train seconds,
                                               examples seen, last loss (a resumed record sums them)
    <run_dir>/checkpoint/step.json             written last: marks the folder complete

A new checkpoint is written beside the old one, then swapped in with two renames (the old one
aside, the new one in). A kill between them leaves no checkpoint/: load() and save() put the
latest complete one back. Folders left by killed attempts are removed by the next save.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..records import publish_dir
from ..runs import CHECKPOINT_DIR
from . import sharding


def weights_to_save(model, optimizer, method) -> dict[str, torch.Tensor]:
    """What can differ from the freshly built model: the parameters the optimizer holds, or every
    weight when the method changes frozen ones (ReLoRA merges). FSDP: gathered, on rank 0 only
    (every rank must call this)."""
    frozen_too = getattr(method, "changes_frozen_weights", False)
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
    final = Path(run_dir) / CHECKPOINT_DIR
    restore_set_aside(run_dir)
    for stale in Path(run_dir).glob(f".{CHECKPOINT_DIR}.*"):  # the run lock is ours: nobody else writes these
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(run_dir) / f".{CHECKPOINT_DIR}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
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
    (tmp / "step.json").write_text(json.dumps({"step": step}))  # last: marks the checkpoint complete
    return publish_dir(tmp, final, replace=True)


def restore_set_aside(run_dir: Path) -> None:
    """A kill between publish_dir's two renames leaves no checkpoint/, only the previous one set
    aside (.checkpoint.old-<pid>) and the new one beside it (.checkpoint.tmp-<pid>, complete once
    its step.json is written): the latest complete one becomes the checkpoint. Called by the run
    lock's holder only (load, save): it renames."""
    final = Path(run_dir) / CHECKPOINT_DIR
    if final.exists():
        return
    complete = [d for d in Path(run_dir).glob(f".{CHECKPOINT_DIR}.*") if (d / "step.json").exists()]
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
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not (folder / "trainer.pt").exists():
        return 0
    weights = load_file(str(folder / "weights.safetensors"))
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
    if not metrics_path.exists():
        return
    if step == 0:
        metrics_path.unlink()
        return
    kept = [line for line in metrics_path.read_text().splitlines() if _step_of(line) <= step]
    metrics_path.write_text("".join(line + "\n" for line in kept))


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except ValueError:  # a line cut by a kill mid-write: drop it
        return float("inf")


def remove(run_dir: Path) -> None:
    """After the record: the checkpoint, and whatever killed attempts left beside it."""
    for folder in [Path(run_dir) / CHECKPOINT_DIR, *Path(run_dir).glob(f".{CHECKPOINT_DIR}.*")]:
        shutil.rmtree(folder, ignore_errors=True)
