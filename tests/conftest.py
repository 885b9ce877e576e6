import os

import pytest

from sweeper.config import compose

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str):
        return compose(f"sweeper.results_dir={tmp_path / 'results'}", "train.threads=1", *overrides)

    return make
