"""What the benchmarks share: the tests' tiny random model for their ``--quick`` modes, and how a run reports the
instruction set it computed with.

A quick mode runs a benchmark's whole path in seconds on the tiny model (tests/tiny.py) or a small slice of its
data, so tests/test_bench_quick.py can run every benchmark and check what it prints; its figures mean nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
# Environment variables that cap the instruction set of torch's own kernels, oneDNN and MKL
# (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: an AVX512 machine computing as an AVX2-only one).
ISA_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def tiny_model(folder: str | Path, arch: str = "llama") -> str:
    """A tiny random model and its tokenizer saved under ``folder`` (``arch``: ``llama``, ``qwen2``, or
    ``llama-head64``, the head size vLLM's CPU attention takes); returns the model folder."""
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    from tiny import make_tiny_model_dir

    return str(make_tiny_model_dir(Path(folder), arch))


def cpu_kernels() -> str:
    """The kernels torch dispatches to (``AVX512``, ``AVX2``...) and the instruction-set caps set, if any."""
    import torch

    caps = ", ".join(f"{name}={os.environ[name]}" for name in ISA_SETTINGS if name in os.environ)
    return f"{torch.backends.cpu.get_cpu_capability()} kernels" + (f" ({caps})" if caps else "")
