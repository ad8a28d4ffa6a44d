"""A small process pool with a hard per-item timeout, for the symbolic math checks.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot stop one running task, so a pathological
expression (`9^9^9^9`) would hold a worker forever. Here each worker runs one item at a time; when an item
outlives its timeout the worker is killed, the item scores `False`, and a replacement starts in the background.

Why fresh interpreters (`subprocess` + `python -c`) and not `multiprocessing` with 'spawn': both are safe in a
process that has threads (no `fork` without `exec`), but 'spawn' re-imports the launching script as
`__mp_main__`, so a torchrun training script without an `if __name__ == "__main__":` guard would re-run itself
inside every reward worker. A worker here imports only `rewards._mathjudge`.

Workers are shut down by their owner (`rewards.math.MathAccuracy.close`, or when it is collected at exit),
die with their parent (Linux `PR_SET_PDEATHSIG`), and
exit on end-of-file on stdin otherwise. A process that forks after the pool exists gets its own pool.
"""

import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path

from . import _mathjudge

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_WORKER_CMD = "import rewards._mathjudge as m; m.main()"
# A worker that does not say "ready" within this many seconds is treated as broken.
_STARTUP_TIMEOUT = 120.0


class _Worker:
    """One worker process and the item it is busy with."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CMD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
            close_fds=True,
        )
        self.started_at = time.monotonic()
        self.ready = False
        self.task = None  # (index, gold, pred) while busy
        self.task_started = 0.0

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def send(self, index: int, gold: str, pred: str, soft_timeout: int) -> None:
        _mathjudge.write_message(self.proc.stdin.fileno(), (index, gold, pred, soft_timeout))
        self.task = (index, gold, pred)
        self.task_started = time.monotonic()

    def receive(self):
        return _mathjudge.read_message(self.fileno())

    def kill(self) -> None:
        """Stop the process now and reap it (no zombies)."""
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class MathPool:
    """Judge many (gold, pred) pairs on `workers` processes, each pair bounded by `timeout` seconds.

    Args:
        workers (`int`):
            Number of worker processes (at least 1).
        timeout (`float`):
            Hard limit in seconds for one pair, measured from when a worker starts on it.
    """

    def __init__(self, workers: int, timeout: float) -> None:
        self.size = max(1, int(workers))
        self.timeout = float(timeout)
        self.owner_pid = os.getpid()
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()
        self.broken = False
        self.timeouts = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        try:
            self.workers.append(_Worker())
        except OSError as exc:
            logger.warning("rewards: cannot start a math worker (%s); judging in-process", exc)
            self.broken = True

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        if worker in self.workers:
            self.workers.remove(worker)

    def close(self) -> None:
        """Kill every worker. Safe to call twice; a forked child leaves its parent's workers alone."""
        if os.getpid() != self.owner_pid:
            return
        for worker in list(self.workers):
            self._retire(worker)

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and leak checks)."""
        return [w.proc.pid for w in self.workers if w.proc.poll() is None]

    # -- work --------------------------------------------------------------------------------------------

    def judge_many(self, items: list[tuple[str, str]]) -> tuple[list[bool], int]:
        """Return the verdict for every `(gold, pred)` pair (`False` on timeout) and the number of timeouts."""
        if not items:
            return [], 0
        with self.lock:
            if self.broken:
                return [_mathjudge.judge(g, p) for g, p in items], 0
            verdicts: list = [None] * len(items)
            timeouts = self._run(items, verdicts)
        for i, verdict in enumerate(verdicts):
            if verdict is None:  # the pool broke mid-batch; finish in-process
                verdicts[i] = _mathjudge.judge(*items[i])
        return verdicts, timeouts

    def _run(self, items: list[tuple[str, str]], verdicts: list) -> int:
        pending = deque(range(len(items)))
        soft = max(1, int(self.timeout / 2))
        timeouts = 0
        while (pending or any(w.task for w in self.workers)) and not self.broken:
            while len(self.workers) < self.size and not self.broken:
                self._spawn()
            self._dispatch(pending, items, soft)
            ready = wait(self.workers, timeout=self._next_wakeup())
            for worker in ready:
                self._collect(worker, verdicts, pending)
            timeouts += self._reap_overdue(verdicts)
        return timeouts

    def _dispatch(self, pending: deque, items: list, soft: int) -> None:
        for worker in self.workers:
            if worker.ready and worker.task is None and pending:
                index = pending.popleft()
                try:
                    worker.send(index, *items[index], soft)
                except OSError:  # died between items (e.g. its parent thread exited): retry elsewhere
                    pending.appendleft(index)
                    self._retire(worker)

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        deadlines = [w.task_started + self.timeout for w in self.workers if w.task]
        deadlines += [w.started_at + _STARTUP_TIMEOUT for w in self.workers if not w.ready]
        return max(0.0, min(deadlines) - now) + 0.01 if deadlines else 0.05

    def _collect(self, worker: _Worker, verdicts: list, pending: deque) -> None:
        try:
            message = worker.receive()
        except Exception:  # noqa: BLE001 - a garbled message is a dead worker
            message = None
        if message is None:  # end of file: the worker died
            if worker.task:
                pending.appendleft(worker.task[0])
            if not worker.ready:
                self.broken = True  # it cannot even start: stop trying, judge in-process
                logger.warning("rewards: math worker exited during startup; judging in-process")
            self._retire(worker)
            return
        if message[0] == "ready":
            worker.ready = True
            return
        index, verdict = message
        verdicts[index] = bool(verdict)
        worker.task = None

    def _reap_overdue(self, verdicts: list) -> int:
        now = time.monotonic()
        count = 0
        for worker in list(self.workers):
            if worker.task and now - worker.task_started > self.timeout:
                verdicts[worker.task[0]] = False
                count += 1
                self._retire(worker)
            elif not worker.ready and now - worker.started_at > _STARTUP_TIMEOUT:
                self.broken = True
                self._retire(worker)
        return count
