"""Reading a sweep's records (torch-free): tables, a report with plots, and where a sweep stands.

collect   records -> one long DataFrame + a dataset x config pivot    python -m sweeper.collect
configs   the configuration label seeds are averaged over, and its order
tables    seed means, validation-selected configurations, ranks, W/T/L (DataFrames)
significance  paired McNemar / Welch tests behind W/T/L
report    tables + plots -> markdown / HTML / CSV                      python -m sweeper.report
plots     heatmap, score vs rank, loss curves, ReLoRA timeline, cost   (matplotlib, on demand)
status    counts, progress, failures, ETA of a running sweep           python -m sweeper.status
"""

from .baselines import config_table, method_table
from .collect import load_records, pivot
from .tables import best_configs, summarize

__all__ = ["best_configs", "config_table", "load_records", "method_table", "pivot", "summarize"]
