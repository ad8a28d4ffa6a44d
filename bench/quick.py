"""What the benchmarks' ``--quick`` modes share: the tests' tiny random model (tests/tiny.py).

A quick mode runs a benchmark's whole path in seconds on that model (or a tiny slice of its data), so
tests/test_bench_quick.py can run every benchmark and check what it prints; its figures mean nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def tiny_model(folder: str | Path, arch: str = "llama") -> str:
    """A tiny random model and its tokenizer saved under ``folder`` (``arch``: ``llama``, ``qwen2``, or
    ``llama-head64``, the head size vLLM's CPU attention takes); returns the model folder."""
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    from tiny import make_tiny_model_dir

    return str(make_tiny_model_dir(Path(folder), arch))
