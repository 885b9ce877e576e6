"""One grid point, start to finish: config -> data -> model -> method -> train -> evaluate -> record.

    record = run_point(cfg, ctx)      # ctx: who runs it (sweeper.train.context); the steps: sweeper.train.lifecycle

Never raises for a bad point: any error becomes a `failed` record with a one-line message, so the
rest of the sweep goes on. (`Interrupted`, a requested stop after a checkpoint, does propagate: the
launcher requeues the job and the next attempt resumes.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .. import tasks
from ..data import DatasetError, load_splits
from ..files import write_folder
from ..memory import estimate_point
from ..memory.fit import refusal
from ..records import Status
from ..runs import target_steps
from ..settings import TRAIN_SETTINGS, SettingError, check_values
from . import checkpoint, distributed, lifecycle, sharding
from .batches import encode_splits
from .context import SOLO, PointContext
from .early_stop import best_step_watch, watch_settings
from .errors import Interrupted
from .evaluate import evaluate, evaluate_splits, record_metrics
from .loop import train
from .methods import build_method, plain
from .models import FLOAT32, build_model, count_parameters
from .record import all_ranks_cost, outcome
from .runtime import PeakMemory, Runtime, setup_runtime


# ---------------------------------------------------------------- the point
def load_point_data(dataset_cfg):
    """The point's splits; an unforeseen data problem still names its dataset."""
    try:
        return load_splits(dataset_cfg)
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(str(dataset_cfg.name), f"{type(error).__name__}: {error}") from error


def task_of(cfg):
    """The point's task (sweeper.tasks); an unknown name fails as its dataset's problem."""
    try:
        return tasks.get(cfg.dataset.task)
    except tasks.TaskError as error:
        raise DatasetError(str(cfg.dataset.name), str(error)) from None


def check_settings(cfg) -> None:
    """Every train.* value within what it may hold (a method with train_keys: those only), before
    anything loads; method.* values are checked by build_method. A point whose memory estimate
    exceeds train.max_memory_gb fails here too (a launch refuses it at planning; a single run here)."""
    check_values("train", plain(cfg.train), TRAIN_SETTINGS, only=cfg.method.get("train_keys"))
    limit = cfg.train.get("max_memory_gb")
    if not limit:
        return
    config = OmegaConf.to_container(cfg, resolve=True)
    estimate = estimate_point(config)
    if estimate is not None and estimate.total > float(limit) * 2**30:
        line = refusal(config, estimate, float(limit), f"train.max_memory_gb={float(limit):g}")
        raise SettingError(line, "train.max_memory_gb")


def _train_and_evaluate(cfg, run_dir: Path, runtime: Runtime, should_stop, sinks) -> dict[str, Any]:
    task, tr = task_of(cfg), cfg.train
    method = build_method(cfg.method, cfg.model, task)
    if not method.standalone:
        task.check_model(cfg.model)  # before the data and the weights load
    splits = load_point_data(cfg.dataset)
    num_labels = task.num_labels(splits)
    if method.standalone:
        return _fit_standalone(method, task, splits, tr, run_dir, num_labels)
    distributed.check_nproc(tr, method)
    sharding.check_parallel(tr, method, cfg.model)
    watch_settings(tr)  # before the ranks start: a bad setting fails them all alike
    checkpoint.prepare(run_dir)  # before other ranks read the checkpoint: a corrupt one set aside
    with distributed.ranks(cfg, run_dir, follow_point) as world:
        model, tokenizer, train_enc, evals = build_trainee(cfg, method, splits, num_labels, runtime, world)
        trainable, total = count_parameters(model)
        eval_args = (task, tokenizer.pad_token_id, int(tr.eval_batch_size), runtime, num_labels)
        watch = validation_watch(cfg, evals, eval_args, world)
        args = _train_args(cfg, method, model, tokenizer, train_enc, run_dir, runtime, world)
        result = train(**args, watch=watch, should_stop=should_stop, sinks=sinks)
        if world.sharded:  # every forward is collective: all ranks score, then gather what rank 0 saves
            scores, test_preds = evaluate_splits(model, evals, *eval_args)
            full_state = gathered_for_saving(model, method, tr, total)
        rank_peaks = world.gather(None)[1:]  # the other ranks' peak memory (MB)
    if not world.sharded:
        scores, test_preds = evaluate_splits(model, evals, *eval_args)
        full_state = None  # save_pretrained reads the model itself
    metrics = record_metrics(scores, result.final_loss, train_enc.labels, evals, task, num_labels)
    task.save_predictions(run_dir, evals["test"], test_preds)
    adapter = saved_adapter(method, model, tr, run_dir, full_state)
    weights = keep_weights(model, tokenizer, method, tr, run_dir, total, full_state)
    point = outcome(
        metrics=metrics,
        trainable=trainable,
        total=total,
        steps=result.steps,
        resumed_from_step=result.resumed_from_step,
        method=method,
        events=result.events,
        train_seconds=result.train_seconds,
        examples=result.examples_seen,
    )
    point["train"].update(result.best)  # early stopping: best_step, best_validation, stopped_early
    paused = target_steps(tr) < int(tr.max_steps) and result.steps < int(tr.max_steps)  # a halving rung
    point["train"]["stopped_at_rung"] = int(OmegaConf.select(cfg, "sweeper.halving.rung") or 0) if paused else None
    point["worker"] = {"world_size": world.size, "backend": world.backend, "parallel": world.parallel}
    point["cost"]["rank_peak_memory_mb"] = rank_peaks  # ranks 1..N-1; _run_locked adds rank 0's
    point["cost"]["training_state_mb"] = result.state_mb  # rank 0's weights + gradients + optimizer state
    if weights is not None:
        point["weights"] = weights
    if adapter:
        point["adapter"] = adapter
    if set_aside := checkpoint.set_aside_names(run_dir):
        point["train"]["set_aside_checkpoints"] = set_aside  # corrupt ones, kept for a person to look at
    point.update(task.record_extras(evals["test"], test_preds))
    return point


def build_trainee(cfg, method, splits, num_labels: int, runtime: Runtime, world):
    """(model wrapped by the method on the device (FSDP: this rank's shards of it), tokenizer,
    train token ids, {split: eval token ids})."""
    # FSDP shards a bf16 frozen base beside float32 adapters untested (no GPU here): float32 there.
    loading = method.loading(runtime) if not world.sharded else FLOAT32
    model, tokenizer = build_model(cfg.model, method.task, num_labels, loading)
    model = method.wrap(method.prepare_base(model))
    if loading.dtype != torch.float32:
        float32_trainable(model)
    model = world.place(model, runtime.device)
    train_enc, evals = encode_splits(splits, tokenizer, cfg, method.task)
    return model, tokenizer, train_enc, evals


def float32_trainable(model) -> None:
    """A base loaded in bfloat16 still trains in float32: the modules that train in full under an
    adapter (a fresh head) are cast back (PEFT already keeps its adapters float32)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def validation_watch(cfg, evals, eval_args, world):
    """Early stopping's watcher (None without train.eval_every). FSDP: every rank scores, and rank
    0's scores decide on every rank, so all take the same snapshots and the same stop."""

    def score(model) -> dict[str, float]:
        scores = evaluate(model, evals["validation"], *eval_args)
        if not world.sharded:
            return scores
        numbers = {k: v for k, v in scores.items() if isinstance(v, (int, float))}  # not per_label_f1's dict
        return dict(zip(numbers, world.values_from_main(*numbers.values())))

    return best_step_watch(cfg.train, eval_args[0], score)


def _train_args(cfg, method, model, tokenizer, train_enc, run_dir, runtime, world) -> dict[str, Any]:
    return {
        "model": model,
        "method": method,
        "train_enc": train_enc,
        "task": method.task,
        "pad_id": tokenizer.pad_token_id,
        "train_cfg": cfg.train,
        "run_dir": Path(run_dir),
        "runtime": runtime,
        "world": world,
    }


def follow_point(cfg, run_dir: str, world) -> None:
    """A rank > 0 of a distributed point: build what rank 0 builds, train beside it, tell rank 0 its
    peak memory. It writes nothing; rank 0 evaluates and writes the record (FSDP: this rank scores
    beside it and joins the gathering of the weights, then drops both)."""
    world = world.for_point(cfg.train)
    runtime = setup_runtime(cfg.train, world.local_rank, PointContext.in_job(None).threads)
    task = task_of(cfg)
    try:
        with PeakMemory(runtime.device) as memory:
            splits = load_point_data(cfg.dataset)
            method = build_method(cfg.method, cfg.model, task)
            num_labels = task.num_labels(splits)
            model, tokenizer, train_enc, evals = build_trainee(cfg, method, splits, num_labels, runtime, world)
            eval_args = (task, tokenizer.pad_token_id, int(cfg.train.eval_batch_size), runtime, num_labels)
            watch = validation_watch(cfg, evals, eval_args, world) if world.sharded else None
            train(**_train_args(cfg, method, model, tokenizer, train_enc, run_dir, runtime, world), watch=watch)
            if world.sharded:
                evaluate_splits(model, evals, *eval_args)
                gathered_for_saving(model, method, cfg.train, count_parameters(model)[1])
    except Interrupted:  # rank 0 checkpointed and stops the job: nothing of this rank's to keep
        return
    world.gather(memory.mb)


WEIGHTS_DIR = "model"  # <run_dir>/model: the final weights of a method whose result is no adapter
ADAPTER_DIR = "adapter"  # <run_dir>/adapter: a PEFT adapter (PeftModel.from_pretrained reloads it)
KEEP_WEIGHTS_UP_TO = 30_000_000  # train.save_weights=auto: parameters (tiny models, MiniLM; not SmolLM2)


def weights_kept(method, train_cfg, total: int) -> bool:
    """Whether the final model goes to <run_dir>/model (train.save_weights: auto|true|false)."""
    setting = train_cfg.get("save_weights", "auto")
    return not method.saves_adapter and setting is not False and not (setting == "auto" and total > KEEP_WEIGHTS_UP_TO)


def saved_adapter(method, model, train_cfg, run_dir: Path, state=None) -> dict[str, Any]:
    """Save the adapter (train.save_adapter, a method whose result is one) in PEFT's format; the
    record's `adapter` section: peft_type, PEFT's resolved config, size_bytes on disk ({}: no PEFT model)."""
    adapter = method.adapter_summary(model)
    if method.saves_adapter and train_cfg.save_adapter:
        folder = Path(run_dir) / ADAPTER_DIR
        write_folder(folder, lambda tmp: method.save_adapter(model, tmp, state_dict=state))
        adapter["size_bytes"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return adapter


def gathered_for_saving(model, method, train_cfg, total: int) -> dict | None:
    """FSDP, on every rank: the weights rank 0 saves (the adapter's, or the whole model), gathered
    into whole tensors ({} on ranks > 0); None when the point saves neither."""
    if not ((method.saves_adapter and train_cfg.save_adapter) or weights_kept(method, train_cfg, total)):
        return None
    return sharding.full_weights(model, trainable_only=method.saves_adapter)


def keep_weights(model, tokenizer, method, train_cfg, run_dir: Path, total: int, state=None) -> str | None:
    """relora (merged), full and warm-started LoRA change the base: their final model goes to
    <run_dir>/model, loadable by `from_pretrained` (safetensors, with its tokenizer); returns that
    folder's name, or None (PEFT adapters are saved apart).
    `state`: FSDP's gathered full weights (only `full` trains sharded: nothing to merge)."""
    if not weights_kept(method, train_cfg, total):
        return None
    final = model if state is not None else model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    def write(folder: Path) -> None:
        if state is not None:
            sharding.save_pretrained(model, state, folder)
        elif not hasattr(final, "save_pretrained"):  # the LSTM: a plain torch module
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in final.state_dict().items()}, str(folder / "model.safetensors"))
            return
        else:
            final.save_pretrained(folder)  # the last cycle merged too
        tokenizer.save_pretrained(folder)

    write_folder(run_dir / WEIGHTS_DIR, write)
    return WEIGHTS_DIR


def _fit_standalone(method, task, splits, train_cfg, run_dir: Path, num_labels: int) -> dict[str, Any]:
    """A method without a torch model (tfidf): it fits and scores itself; the record is the same shape."""
    scores, evals, test_preds, info = method.fit_and_score(splits, train_cfg, num_labels)
    metrics = record_metrics(scores, None, list(splits["train"]["label"]), evals, task, num_labels)
    task.save_predictions(run_dir, evals["test"], test_preds)
    result = outcome(
        metrics=metrics,
        trainable=info["parameters"],
        total=info["parameters"],
        steps=0,
        resumed_from_step=0,
        method=method,
        events=[],
        train_seconds=info["train_seconds"],
        examples=len(splits["train"]),
    )
    result["train"]["features"] = info["features"]
    return result


def run_point(cfg: DictConfig, ctx: PointContext = SOLO) -> dict[str, Any]:
    """Train and record one point (sweeper.train.lifecycle: skip, lock, trackers, record)."""
    claimed = lifecycle.claim(cfg, ctx)
    if not isinstance(claimed, lifecycle.Claim):  # done before, busy elsewhere, or failed before it began
        return claimed
    try:
        return _run_claimed(claimed)
    finally:
        claimed.release()


def point_task(cfg: DictConfig, ctx: PointContext = SOLO) -> str:
    """Hydra's task function for one point (`python -m sweeper`, and each solo point of a job):
    train it, print its one-line summary, return its status."""
    from ..console import route_library_output
    from ..summary import summary_line

    route_library_output(bool(OmegaConf.select(cfg, "sweeper.verbose", default=False)))
    record = run_point(cfg, ctx)
    print(("[skipped: recorded before] " if record.get("skipped") else "") + summary_line(record), flush=True)
    return str(record["status"])


def _run_claimed(claimed: lifecycle.Claim) -> dict[str, Any]:
    cfg, ctx = claimed.cfg, claimed.ctx
    try:
        check_settings(cfg)  # before the runtime takes train.threads / device
        runtime = setup_runtime(cfg.train, threads=ctx.threads)
        with PeakMemory(runtime.device) as memory:
            result = _train_and_evaluate(cfg, claimed.run_dir, runtime, ctx.should_stop, claimed.sinks)
        result["cost"].update(all_ranks_cost(result, memory.mb))
        if (estimate := estimate_point(OmegaConf.to_container(cfg, resolve=True))) is not None:
            result["cost"]["memory_estimate"] = estimate.as_record()  # beside peak_memory_mb: docs/memory.md
    except Interrupted:
        raise
    except Exception as error:  # noqa: BLE001  one bad point must not stop the sweep
        return claimed.fail(error)
    return claimed.settle(status=Status.OK, **result)
