"""Training one grid point (torch from here down).

point       run_point(cfg): data -> model -> method -> loop -> evaluate -> record
runtime     device, autocast, threads, peak memory
batches     token ids, padded batches, the rows of each step
loop        the optimizer loop, its step tail and metrics.jsonl
evaluate    scores of a trained model
checkpoint  save / resume
models      the model families;  methods/  lora, relora, qlora, full
pack/       K LoRA points on one shared base (sweeper.pack=K)
"""

from .errors import Interrupted, TrainingError
from .point import run_point

__all__ = ["Interrupted", "TrainingError", "run_point"]
