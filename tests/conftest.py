import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def compose_cfg(*overrides: str):
    """The same config `python -m sweeper key=value ...` would build."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str):
        return compose_cfg(f"sweeper.results_dir={tmp_path / 'results'}", "train.threads=1", *overrides)

    return make
