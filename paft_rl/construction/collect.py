"""Collecting responses for every request of a run: cache first, then HTTP endpoints and local models.

HTTP requests go to one thread pool bounded by ``requests.concurrency`` (and per endpoint by the
generator's own ``concurrency``), while local models generate in the main thread at the same time. A
generator that fails for good is recorded with its reason and the run goes on with the others; every
response is written to the cache the moment it arrives.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .cache import ResponseCache
from .config import GenerateConfig, GeneratorConfig
from .generators import GeneratorFailed, OpenAIChatClient, RequestFailed, group_by_generator, local_generator
from .prompts import Request


@dataclass
class GeneratorOutcome:
    """What happened to one generator's requests."""

    requests: int = 0
    cached: int = 0
    received: int = 0
    failed: int = 0
    retries: int = 0
    fatal: str | None = None
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str, error: str | None = None) -> None:
        """Add one to counter ``name`` (threads share an outcome); keep ``error`` when given."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            if error is not None:
                self.errors.append(error)

    @property
    def ok(self) -> bool:
        return self.fatal is None and self.failed == 0


@dataclass
class Collection:
    """Responses (cache records) in request order, and each generator's outcome."""

    responses: list[dict]
    outcomes: dict[str, GeneratorOutcome]
    seconds: float

    def failure_lines(self) -> list[str]:
        lines = []
        for name, outcome in self.outcomes.items():
            if outcome.fatal:
                lines.append(f"{name}: {outcome.fatal}")
            elif outcome.failed:
                lines.append(f"{name}: {outcome.failed} of {outcome.requests} requests failed; "
                             f"first: {outcome.errors[0]}")
        return lines


def response_record(request: Request, generator: GeneratorConfig, text: str) -> dict:
    """The cache record of one response; its fields become the provenance of the templates parsed from it."""
    return {"key": request.key, "generator": generator.name, "backend": generator.backend, "model": generator.model,
            "mode": request.mode, "sample": request.sample, "temperature": request.temperature,
            "time": datetime.now(UTC).isoformat(timespec="seconds"), "text": text}


def collect_responses(config: GenerateConfig, requests: list[Request], cache: ResponseCache,
                      log: Callable[[str], None] = lambda line: None,
                      sleep: Callable[[float], None] = time.sleep) -> Collection:
    """Get a response for every request that can have one.

    Args:
        config (`GenerateConfig`): generators and request settings.
        requests (`list[Request]`): from `build_requests`.
        cache (`ResponseCache`): read first, written as responses arrive.
        log (`Callable[[str], None]`): progress lines.
        sleep (`Callable[[float], None]`): backoff wait (tests pass a fast one).
    """
    start = time.monotonic()
    generators = {g.name: g for g in config.generators}
    outcomes = {name: GeneratorOutcome() for name in generators}
    received: dict[str, dict] = {}
    pending: dict[str, list[Request]] = {}
    for name, group in group_by_generator(requests).items():
        outcomes[name].requests = len(group)
        for request in group:
            if request.key in cache:
                received[request.key] = cache.get(request.key)
                outcomes[name].cached += 1
            else:
                pending.setdefault(name, []).append(request)
    for name, outcome in outcomes.items():
        log(f"{name}: {outcome.requests} requests, {outcome.cached} from the cache")

    def store(request: Request, text: str) -> None:
        record = response_record(request, generators[request.generator], text)
        cache.put(record)
        received[request.key] = record
        outcomes[request.generator].count("received")

    http = {n: g for n, g in pending.items() if generators[n].backend == "openai"}
    local = {n: g for n, g in pending.items() if generators[n].backend != "openai"}
    executors, futures = _submit_http(config, http, generators, outcomes, store, sleep)
    try:
        for name, group in local.items():  # local models run here while the HTTP threads wait on the network
            _run_local(generators[name], group, outcomes[name], store, log)
        for future in futures:
            future.result()
    finally:
        # Interrupted (Ctrl-C), nothing queued is sent and the requests in flight are left to die with the process
        # (their threads are daemons); what arrived is in the cache for the next run.
        interrupted = any(not future.done() for future in futures)
        for executor in executors:
            executor.shutdown(wait=not interrupted, cancel_futures=True)
    for name, outcome in outcomes.items():
        if outcome.received or outcome.failed or outcome.fatal:
            status = f"failed: {outcome.fatal}" if outcome.fatal else f"{outcome.failed} failed"
            log(f"{name}: {outcome.received} received, {outcome.retries} retries, {status}")
    ordered = [received[r.key] for r in requests if r.key in received]
    return Collection(ordered, outcomes, time.monotonic() - start)


class DaemonThreadPool:
    """A thread pool whose threads never hold up the end of the process.

    `concurrent.futures.ThreadPoolExecutor` joins its threads when Python exits, so Ctrl-C waited for every
    request in flight (up to ``requests.timeout``, then its retries). Here an interrupted run stops at once.
    """

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(error)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop the threads after their current task; ``cancel_futures``: drop the queued ones."""
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _submit_http(config, groups, generators, outcomes, store, sleep) -> tuple[list[DaemonThreadPool], list]:
    """One thread pool per endpoint (its own ``concurrency``) under one run-wide limit.

    Separate pools keep a slow or throttled endpoint from holding every thread while the others idle.
    """
    overall = threading.BoundedSemaphore(config.requests.concurrency)
    executors, futures = [], []
    for name, group in groups.items():
        generator = generators[name]
        client = OpenAIChatClient(generator, config.requests, sleep=sleep)
        stop = threading.Event()  # set on a fatal error: the generator's queued requests are not sent
        workers = min(generator.concurrency or config.requests.concurrency, config.requests.concurrency)
        executor = DaemonThreadPool(workers, f"pool-generate-{name}")
        executors.append(executor)

        def task(request: Request, client=client, stop=stop, outcome=outcomes[name]) -> None:
            with overall:
                if stop.is_set():
                    outcome.count("failed")
                    return
                try:
                    text = client.complete(request)
                except GeneratorFailed as error:
                    stop.set()
                    outcome.fatal = outcome.fatal or str(error)
                    outcome.count("failed")
                except RequestFailed as error:
                    outcome.count("failed", str(error))
                else:
                    store(request, text)
                finally:
                    outcome.retries = client.retries_used

        futures += [executor.submit(task, request) for request in group]
    return executors, futures


def _run_local(generator: GeneratorConfig, group: list[Request], outcome: GeneratorOutcome, store, log) -> None:
    backend = local_generator(generator)
    try:
        for request, text in backend.generate(group):
            store(request, text)
            log(f"{generator.name}: {outcome.received}/{len(group)} generated")
    except GeneratorFailed as error:
        outcome.fatal = str(error)
        outcome.failed = len(group) - outcome.received
    except Exception as error:  # noqa: BLE001 - one broken local model must not lose the other generators' work
        outcome.fatal = f"generator {generator.name!r} ({generator.backend}) crashed: {type(error).__name__}: {error}"
        outcome.failed = len(group) - outcome.received
