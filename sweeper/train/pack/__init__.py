"""Packed adapters (MLoRA-style): K LoRA grid points train in one process on ONE frozen base.

    records = run_packed(cfgs)          # one record per cfg, same schema and files as run_point (members)
    groups = group_points(cfgs, size=8) # index lists of points that may share a pack (grouping)
    can_pack(cfg_a, cfg_b)

Points pack together when they share the base model, the task, the method family (lora or qlora,
same quantisation) and the sequence/runtime settings (train.max_length, device, dtype, threads);
they may differ in dataset, rank, alpha, dropout, target modules, lr and schedule, batch size,
max_steps, truncation and - for a pretrained base - seed. A randomly initialised base (model.source=config)
is a function of the seed, so there the seed must match too.

Each step concatenates the K batches and runs the base once; each adapter adds its own B@A to its
own rows (layers), each point has its own AdamW, lr schedule and budget
(loop). Each point is initialised exactly as run_point would (its model built and
wrapped under torch.manual_seed(its seed)), so with the same seeds a packed point's losses and
metrics match its run alone (CPU, float32; docs/packing.md gives the tolerance).

A point that fails (bad data, an invalid rank, a non-finite loss) fails alone with its one-line
record; the others finish. Each finished point saves its adapter in PEFT's format under
<run_dir>/adapter, loadable with PeftModel.from_pretrained onto a freshly built base.
"""

from .grouping import can_pack, group_points, pack_key
from .members import run_packed

__all__ = ["can_pack", "group_points", "pack_key", "run_packed"]
