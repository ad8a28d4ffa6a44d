"""Training precision by hardware: bf16 on a CPU only where the CPU computes bf16 natively.

TRL's configs default to ``bf16=True``. On a GPU that is right. On a CPU it means bf16 autocast, which is about
2x faster than fp32 where the CPU has AVX512-BF16 or AMX, and about 30x *slower* where it has only AVX2 (bf16
is then emulated; a SmolLM2 LoRA step took 218 s against 7.8 s in fp32). So when the user has not chosen, a CPU
run uses bf16 only where it is native, fp32 otherwise, and says which in one line. An explicit ``bf16`` or
``fp16`` always wins.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import cache

NATIVE_BF16_FLAGS = {"x86_64": ("avx512_bf16", "amx_bf16"), "aarch64": ("bf16",)}


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_capability() -> str:
    """The kernel level torch dispatches to (``AVX512``, ``AVX2``, ...); honours ``ATEN_CPU_CAPABILITY``."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def cpu_has_native_bf16() -> bool:
    """True where bf16 matrix multiplies run in hardware and torch / oneDNN are allowed to use it.

    The CPU flag alone is not enough: ``ATEN_CPU_CAPABILITY=avx2`` or ``ONEDNN_MAX_CPU_ISA=AVX2`` restrict the
    kernels (that is how an AVX2-only machine is imitated), and then bf16 is emulated again.
    """
    machine = platform.machine().lower()
    flags = cpu_flags()
    if not any(flag in flags for flag in NATIVE_BF16_FLAGS.get(machine, ())):
        return False
    if machine == "x86_64":
        onednn_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
        if onednn_isa and "AVX512" not in onednn_isa and "AMX" not in onednn_isa and onednn_isa != "ALL":
            return False
        return cpu_capability() == "AVX512"
    return True


def trains_on_cpu(use_cpu: bool) -> bool:
    import torch

    return bool(use_cpu) or not (torch.cuda.is_available() or torch.backends.mps.is_available())


def choose_precision(config) -> str | None:
    """Set ``config.bf16`` when the user left both ``bf16`` and ``fp16`` unset and training runs on a CPU.

    Called before TRL's own ``__post_init__`` (which would turn an unset ``bf16`` into ``True``). Returns the
    one-line note to show, or None when nothing was chosen here.
    """
    if config.bf16 is not None or config.fp16 or not trains_on_cpu(config.use_cpu):
        return None
    config.bf16 = cpu_has_native_bf16()
    if config.bf16:
        return "CPU has native bf16 (AVX512-BF16/AMX): training in bf16 autocast (set bf16: false for fp32)"
    return (f"CPU has no native bf16 (torch kernels: {cpu_capability()}): training in fp32, since emulated bf16 "
            "is many times slower (set bf16: true to force it)")


_ANNOUNCED: set[str] = set()


def announce(note: str | None) -> None:
    """Print the precision note once per machine (local rank 0), not once per process, and once per run:
    a workflow trains several stages, and the note is the same for all of them."""
    if note and os.environ.get("LOCAL_RANK", "0") == "0" and note not in _ANNOUNCED:
        _ANNOUNCED.add(note)
        print(f"paft-rl: {note}", file=sys.stderr, flush=True)
