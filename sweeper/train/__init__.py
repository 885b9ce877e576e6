"""Training one grid point (torch from here down).

point       run_point(cfg): data -> model -> method -> loop -> evaluate -> record
runtime     device, autocast, threads, peak memory
batches     token ids, padded batches, the rows of each step
loop        the optimizer loop, its step tail and metrics.jsonl
evaluate    validation and test scores of a trained model, its test predictions
early_stop  train.eval_every / train.early_stopping: keep the best validation step
checkpoint  save / resume
models      the model families;  methods/  lora, relora, qlora, full, tfidf
pack/       K LoRA points on one shared base (sweeper.pack=K)
"""

import logging
import warnings

# Set before the imports below: they import peft, which imports bitsandbytes.
# peft 0.21 calls a transformers API deprecated in 5.x on every wrap: harmless, and it buries real output.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
# peft imports bitsandbytes (method=qlora) whenever it is installed; on CPUs with AVX512-BF16 bnb then logs
# that an optional fused-kernel package is missing. It falls back to its own kernels: not worth a line per job.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .errors import Interrupted, TrainingError  # noqa: E402
from .point import run_point  # noqa: E402

__all__ = ["Interrupted", "TrainingError", "run_point"]
