import os
import shutil

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


@pytest.fixture
def chromium() -> str:
    """Debian's chromium for the browser tests. Without it they skip on a workstation (stated:
    install it) and fail under CI=true, where .ci/run installs it (scripts/chromium-local.sh)."""
    path = shutil.which("chromium")
    if path is None and os.environ.get("CI"):
        pytest.fail("CI needs Debian's chromium (.ci/run installs it: scripts/chromium-local.sh)")
    if path is None:
        pytest.skip("no chromium: apt-get install chromium (or bash scripts/chromium-local.sh)")
    return path
