"""Datasets: a small spec (conf/dataset/<name>.yaml) -> HF `datasets.DatasetDict` of text + label.

spec -> checked_spec (prepare: spec, then its task) -> inputs: pools or files (pools)
     -> split frames (the task's, from build's parts)
     -> parquet under the cache, keyed by a hash of spec + inputs (cache) -> load_splits
python -m sweeper.datasets     the catalogue (catalogue)
"""

from .cache import dropped_rows, load_splits, materialise, read_meta
from .prepare import checked_spec
from .spec import SPLITS, DatasetError, load_spec, resolve_dataset_name, spec_names

__all__ = [
    "SPLITS",
    "DatasetError",
    "checked_spec",
    "dropped_rows",
    "load_spec",
    "load_splits",
    "materialise",
    "read_meta",
    "resolve_dataset_name",
    "spec_names",
]
