"""The slow, symbolic half of `math_accuracy`: math-verify on one (gold answer, predicted answer) pair.

This module runs inside pool workers (fresh interpreters, see `_pool.py`), and in-process as a fallback. It is
kept free of imports from the rest of the package so a worker starts with nothing but math-verify and sympy.
It is also the worker's entry point: `python -c "import rewards._mathjudge as m; m.main()"`.
"""

import functools
import logging
import os
import pickle
import struct
import sys
import threading

_HEADER = struct.Struct("!I")


@functools.lru_cache(maxsize=1)
def _configs():
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    latex = LatexExtractionConfig(
        normalization_config=NormalizationConfig(units=True), boxed_match_priority=0
    )
    return [latex, ExprExtractionConfig()]


def _parse(answer: str, timeout: int | None):
    from math_verify import parse

    # Boxing the already-extracted answer makes math-verify read all of it instead of hunting for a sub-span;
    # the plain-expression reader is only a fallback for answers LaTeX parsing rejects.
    latex, expr = _configs()
    boxed = "\\boxed{" + answer + "}"
    parsed = parse(boxed, extraction_config=[latex], extraction_mode="first_match", parsing_timeout=timeout)
    return parsed or parse(answer, extraction_config=[expr], extraction_mode="first_match", parsing_timeout=timeout)


@functools.lru_cache(maxsize=4096)
def _parse_gold(answer: str, timeout: int | None):
    # The G completions of a GRPO group share one gold: parse it once per worker, not once per completion.
    return _parse(answer, timeout)


def judge(gold: str, pred: str, timeout: int | None = 3) -> bool:
    """Return whether `pred` is mathematically equal to `gold` according to math-verify.

    Args:
        gold (`str`):
            The gold final answer (already extracted, e.g. `\\frac{1}{2}` or `18`).
        pred (`str`):
            The predicted final answer (already extracted).
        timeout (`int` or `None`, *optional*, defaults to `3`):
            math-verify's own soft timeout in seconds (it uses `signal.alarm`, so only on the main thread);
            `None` disables it.
    """
    from math_verify import verify

    if threading.current_thread() is not threading.main_thread():
        timeout = None
    try:
        gold_parsed = _parse_gold(gold, timeout)
        if not gold_parsed:
            return False
        pred_parsed = _parse(pred, timeout)
        if not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except BaseException:  # noqa: BLE001 - includes math-verify's TimeoutException and RecursionError
        return False


def _die_with_parent() -> None:
    # Linux: ask the kernel to SIGKILL this worker if the parent dies, even if we are stuck in C code.
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; EOF on stdin covers the other platforms
        pass


def _limit_memory() -> None:
    # A pathological expression should hit MemoryError in the worker, not swap the training machine.
    limit = int(os.environ.get("PAFT_REWARDS_WORKER_MEM_MB", "4096"))
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit * 2**20, limit * 2**20))
    except Exception:  # noqa: BLE001
        pass


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int):
    """Read one length-prefixed pickle from `fd`; `None` at end of file."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def write_message(fd: int, obj) -> None:
    """Write one length-prefixed pickle to `fd`."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _HEADER.pack(len(body)) + body)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    """Worker loop: read `(task_id, gold, pred, timeout)`, answer `(task_id, verdict)`, until stdin closes."""
    _die_with_parent()
    _limit_memory()
    # Protocol goes over a private copy of stdout; anything the libraries print lands on stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    in_fd = sys.stdin.fileno()
    logging.disable(logging.WARNING)
    import math_verify  # noqa: F401 - pay the import before saying ready

    _configs()
    write_message(out_fd, ("ready", os.getpid()))
    while True:
        task = read_message(in_fd)
        if task is None:
            return
        task_id, gold, pred, timeout = task
        write_message(out_fd, (task_id, judge(gold, pred, timeout)))
