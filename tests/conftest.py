import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from several threads, and tests that start two processes (or run beside other
# work) on a 2-core machine slow down many times over when their OpenMP threads compete for the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The public benchmark files, read by path and never copied into the repository: ../shared/data beside the
# repository (where the team's checkouts and CI's fresh clone have it), or the folder PAFT_SHARED_DATA names.
SHARED_DATA = Path(os.environ.get("PAFT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# Tests that need those files skip where they are absent; PAFT_REQUIRE_SHARED_DATA=1 (.ci/run sets it) makes the
# absence a failure, so that a run cannot pass by skipping them.
REQUIRE_SHARED_DATA = os.environ.get("PAFT_REQUIRE_SHARED_DATA", "") not in ("", "0")


def shared_path(relative: str = "") -> Path:
    """``relative`` under the shared data folder; skips the test when it is missing (fails when required)."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"{path} is missing: put shared/data beside the repository or set PAFT_SHARED_DATA"
        if REQUIRE_SHARED_DATA:
            pytest.fail(f"{message} (PAFT_REQUIRE_SHARED_DATA is set)", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder (see `shared_path`)."""
    return shared_path()


@pytest.fixture
def shared_file():
    """``shared_file("piqa/validation.jsonl")``: that path under the shared data folder (see `shared_path`)."""
    return shared_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama and its tokenizer saved to a folder (`tiny.make_tiny_model_dir`), shared by the
    evaluation tests that only need some model to run."""
    from tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("models"))
