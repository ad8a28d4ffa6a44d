import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from several threads, and tests that start two processes (or run beside other
# work) on a 2-core machine slow down many times over when their OpenMP threads compete for the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The public benchmark files beside the repository; tests that need them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared/data is not beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama and its tokenizer saved to a folder (`tiny.make_tiny_model_dir`), shared by the
    evaluation tests that only need some model to run."""
    from tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("models"))
