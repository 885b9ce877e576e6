"""Memory, known before a point runs (torch-free): the planner refuses what will not fit.

inventory   a model's tensors and sizes from its safetensors headers / config.json, or its conf/model sizes
estimate    a point's peak: weights, gradients + optimizer state, activations, evaluation, loading, runtime;
            and where a 4-bit base is quantised (while loading, or after the build)
"""

from .estimate import Estimate, estimate_point, quantizes_while_loading

__all__ = ["Estimate", "estimate_point", "quantizes_while_loading"]
