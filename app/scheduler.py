"""Continuous batching for the playground: one thread owns the models and decodes every user's request together.

On a ZeroGPU Space the models' device exists only inside calls decorated with `spaces.GPU`, each run in a process
forked from the page's, whose arguments and yields cross pickled. There the scheduler's thread batches in GPU calls
(`gpu_call`): the requests waiting when a call starts (up to the engine's `max_rows`) cross as plain data
(`RunSpec`), one engine in the call decodes them together to their end (`decode_in_call`), and after every step the
call yields each run's state, which the page's process takes over (`DecodeRun.restore`) and streams; requests that
arrive meanwhile wait for the next call. The page's process never runs the models.

A request joins the running batch at the next step (ipa.decoding.engine.Engine: prefill, then its KV rows merge into
the batch) and leaves when done or when its user goes away (a closed page or a cancelled API job closes the
generator that waits for it: its rows are dropped at once). Each request streams its own tokens. Requests that
do not fit (the engine's `max_rows` rows a step) wait in order and are told how many are ahead; past `max_waiting` waiting,
a new request is refused with a clear message. Rewards are scored in batches too (BatchedScorer).

    >>> scheduler = Scheduler(Engine(host, max_rows=96), max_waiting=128)     # doctest: +SKIP
    >>> for update in scheduler.submit(DecodeRun(policy, ["The movie was"])):  # doctest: +SKIP
    ...     print(update)   # an int (requests ahead) while waiting, then a DecodeResult per step, the last done
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ipa.errors import UserError
from ipa.decoding.engine import Engine, Request
from ipa.policy_adapter import AdapterHost
from ipa.decoding.run import DecodeConfig, DecodeResult, DecodeRun, TailoredPolicy

log = logging.getLogger("ipa.scheduler")
ADVANCED = "advanced"
"""A request's snapshot after a step: its user reads the run's result itself (Scheduler._updates)."""


class SchedulerBusy(UserError):
    """Too many requests are waiting; the message says so and when to try again."""


@dataclass(frozen=True)
class RunSpec:
    """A DecodeRun as plain data, to cross into a GPU call (pickled), where `run` makes it again on that process's
    models: the same prompts, settings, seed and random numbers, so it decodes exactly what it would have here."""

    adapter: str | None
    combination: str
    more: tuple[tuple[str, float], ...]
    prompt_ids: list[list[int]]
    config: DecodeConfig
    n: int
    columns: tuple[str, ...]
    inspect: bool
    uniforms: torch.Tensor | None
    replay: list[list[int]] | None = None

    @classmethod
    def of(cls, run: DecodeRun) -> "RunSpec":
        policy = run.policy
        if policy.remote_base is not None:
            raise ValueError("A run on a remote base is decoded where it is asked for, not in a GPU call.")
        return cls(policy.adapter_name, policy.combination, policy.more_adapters, run.prompt_ids,
                   dataclasses.replace(run.config, seed=run.seed), run.n, run.columns, run.inspection is not None,
                   run.uniforms, run.replay)

    def run(self, base: AdapterHost, adapter_host: AdapterHost) -> DecodeRun:
        policy = TailoredPolicy(base, adapter_host if self.adapter else None, self.adapter, self.combination,
                                more_adapters=self.more)
        return DecodeRun(policy, self.prompt_ids, self.config, self.n, self.columns, inspect=self.inspect,
                         uniforms=self.uniforms, replay=self.replay)


def decode_in_call(base: AdapterHost, adapter_host: AdapterHost, max_rows: int, specs: list[RunSpec]) -> Iterator[list]:
    """The body of one GPU call: the runs decoded together by one engine on the call's device (the models move there
    first: a ZeroGPU call is the only place where the GPU exists). Yields, after every step, each run's state (None
    for a run that did not advance)."""
    from app.spaces_compat import worker_threads

    worker_threads()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for host in {id(h): h for h in (base, adapter_host)}.values():
        host.to(device)
    runs = [spec.run(base, adapter_host) for spec in specs]
    requests = [Request(run) for run in runs]
    engine = Engine(base, adapter_host, max_rows)
    for request in requests:
        engine.submit(request)
    while not engine.idle:
        advanced = {id(r) for r in engine.step()}
        yield [run.state() if id(request) in advanced else None for run, request in zip(runs, requests)]


class Scheduler:
    """The decoding thread and its inbox. `submit` and `cancel` are called from any thread (one per user request).

    Users never wait for the engine: they post to an inbox that the thread reads before each step. After every step
    the thread wakes each advanced request's user, who reads the run's result at their own pace while the next step
    runs (under the request's lock): building results, streaming and scoring happen on the users' threads, off the
    decoding thread, which only steps."""

    def __init__(self, engine: Engine, max_waiting: int, gpu_call: Callable[[list[RunSpec]], Iterator[list]] | None = None):
        self.engine = engine
        self.max_waiting = max_waiting
        self.gpu_call = gpu_call
        """ZeroGPU: decode_in_call on the engine's models, decorated with spaces.GPU; the engine here is then only the
        queue (see the module's docstring)."""
        self.lock = threading.RLock()
        """Held while the engine steps (take it to change the shared model, e.g. to load an adapter)."""
        self.step_count = 0
        self.active = 0
        """Requests decoding now (written by the decoding thread after each step; users read it, never the engine's
        own lists, which that thread changes)."""
        self.busy_seconds = 0.0
        """Time spent in decoding steps (to tell how busy the engine is under load)."""
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def waiting(self) -> int:
        return len(self.engine.waiting) + self._inbox.qsize()

    def submit(self, run: DecodeRun, every: float = 0.0, background: bool = False) -> Iterator[int | DecodeResult]:
        """Queue a decoding run; returns the generator of its updates (see the module's docstring).
        Closing the generator early cancels the run and frees its rows.

        every: seconds between two results of a running request, per request decoding at the same time (0: one
        a step; math.inf: the last only). A result is made on the user's thread, where it competes with the decoding
        thread for the interpreter: sixteen users reading every step slowed the step itself.
        background: work nobody watches token by token (a class's vote pairs): it yields to the interactive requests
        (ipa.decoding.engine.Engine.background_rows)."""
        if self.waiting >= self.max_waiting:
            raise SchedulerBusy(f"The playground is busy: {self.waiting} requests are already waiting for a free slot. "
                                "Try again in a minute.")
        request = Request(run, background=background)
        self._post("submit", request)
        return self._updates(request, every)

    def cancel(self, request: Request) -> None:
        """Stop a request: its rows are dropped before the next step (or it leaves the queue)."""
        request.cancel()
        self._post("cancel", request)

    def _post(self, what: str, request: Request) -> None:
        self._inbox.put((what, request))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="decode-scheduler", daemon=True)
            self._thread.start()
        self._wake.set()

    def _updates(self, request: Request, every: float) -> Iterator[int | DecodeResult]:
        made = -math.inf
        try:
            while True:
                request.updated.wait()
                request.updated.clear()
                update = request.snapshot
                if isinstance(update, BaseException):
                    raise update
                if update is ADVANCED:
                    if not request.run.done and (every == math.inf or time.monotonic() - made < every * max(1, self.active)):
                        continue  # the next step's wakes this user again; the last step's always makes a result
                    with request.lock:  # the run as of its last step, read whole
                        update = request.run.result(final=request.run.done)
                    made = time.monotonic()
                yield update
                if isinstance(update, DecodeResult) and update.done:
                    return
        finally:
            if not request.run.done:
                self.cancel(request)

    def _loop(self) -> None:
        while not self._stopping:
            if self.engine.idle and self._inbox.empty():
                self._wake.wait()
                self._wake.clear()
                continue
            with self.lock:
                self._read_inbox()
                if self.gpu_call is None:
                    if not self.engine.idle:
                        self._step()
                    continue
                batch = self.engine.admit()
            if batch:
                self._call(batch)  # not under the lock: the call decodes its own copy of the models

    def _call(self, requests: list[Request]) -> None:
        """Decode these requests in one GPU call, streaming each step's state to their users."""
        started = time.perf_counter()
        self.active = len(requests)
        try:
            for states in self.gpu_call([RunSpec.of(request.run) for request in requests]):
                for request, state in zip(requests, states):
                    if state is None or request.cancelled:  # a cancelled request's rows decode on in the call, unseen
                        continue
                    with request.lock:
                        request.run.restore(state)
                    request.snapshot = ADVANCED
                    request.updated.set()
                self.step_count += 1
                with self.lock:
                    self._read_inbox()  # new requests queue for the next call; their users hear their place
        except Exception as err:  # noqa: BLE001 - a failed call fails its requests; the next call serves the next ones
            log.exception("a GPU call failed")
            for request in requests:
                if not request.run.done:
                    request.snapshot = err
                    request.updated.set()
        self.busy_seconds += time.perf_counter() - started

    def _read_inbox(self) -> None:
        while not self._inbox.empty():
            what, request = self._inbox.get()
            if what == "submit" and not request.cancelled:
                self.engine.submit(request)
            elif what == "cancel":
                self.engine.cancel(request)
        for position, request in enumerate(self.engine.waiting):
            if request.snapshot != position:
                request.snapshot = position
                request.updated.set()

    def _step(self) -> None:
        started = time.perf_counter()
        try:
            advanced = self.engine.step()
        except Exception as err:  # noqa: BLE001 - a bug: fail the requests in flight, keep serving the next ones
            log.exception("decoding step failed")
            for request in self.engine.running + self.engine.waiting:
                request.snapshot = err
                request.updated.set()
            self.engine = Engine(self.engine.base, self.engine.adapter, self.engine.max_rows, self.engine.background_rows)
            return
        self.step_count += 1
        self.active = len(self.engine.running)
        self.busy_seconds += time.perf_counter() - started
        failed, self.engine.failed = self.engine.failed, []
        for request in failed:  # its remote base failed: its user hears why, the others decode on
            request.snapshot = request.error
            request.updated.set()
        for request in advanced:
            request.snapshot = ADVANCED
            request.updated.set()
        for position, request in enumerate(self.engine.waiting):
            if request.snapshot != position:
                request.snapshot = position
                request.updated.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()


class BatchedScorer:
    """Scores many requests' texts in one call per task: a request that finds scoring busy leaves its texts, and
    the next pass scores every waiting text together (one batch through each reward model).

    Background texts (a class's vote pairs) are scored BACKGROUND_TEXTS at a time and after every waiting
    interactive text, so that a Generate's scores wait for one small pass at most, not for a class's pile; and on a
    thread of lower priority (Linux: nice +10), so that on a busy CPU the decoding thread runs first."""

    BACKGROUND_TEXTS = 8

    def __init__(self, scorers: dict[str, Callable[[list, list[str]], list[dict]]]):
        self.scorers = scorers
        self._running = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[dict] = []
        self._background = ThreadPoolExecutor(1, thread_name_prefix="background-scoring", initializer=_lower_priority)

    def __call__(self, task: str, inputs: list[dict], texts: list[str], scorer: Callable | None = None,
                 background: bool = False) -> list[dict]:
        """The texts' scores by the task's scorer; `scorer` scores instead where given (an adapter's objective), with
        `task` the key that batches requests for the same scorer together."""
        item = {"task": task, "inputs": inputs, "texts": texts, "scorer": scorer, "background": background,
                "done": False}
        with self._pending_lock:
            self._pending.append(item)
        while not item["done"]:  # whoever holds the lock scores a pass: the waiting interactive texts, else some background
            with self._running:
                if item["done"]:
                    break
                with self._pending_lock:
                    batch = self._next_pass()
                if batch and batch[0]["background"]:
                    self._background.submit(self._score, batch).result()
                else:
                    self._score(batch)
        if "error" in item:
            raise item["error"]
        return item["scores"]

    def _next_pass(self) -> list[dict]:
        """The items of the next pass (taken out of the pending ones): every interactive one, else background ones up
        to BACKGROUND_TEXTS texts (one at least)."""
        interactive = [item for item in self._pending if not item["background"]]
        if interactive:
            batch = interactive
        else:
            batch, texts = [], 0
            for item in self._pending:
                if batch and texts + len(item["texts"]) > self.BACKGROUND_TEXTS:
                    break
                batch.append(item)
                texts += len(item["texts"])
        self._pending = [item for item in self._pending if item not in batch]
        return batch

    def _score(self, batch: list[dict]) -> None:
        for task in {item["task"] for item in batch}:
            items = [item for item in batch if item["task"] == task]
            score = items[0]["scorer"] or self.scorers[task]
            try:
                scores = score([x for item in items for x in item["inputs"]],
                                            [t for item in items for t in item["texts"]])
                for item in items:
                    item["scores"], scores = scores[:len(item["texts"])], scores[len(item["texts"]):]
            except Exception:  # noqa: BLE001 - one request's bad text must not fail the others: score each alone
                for item in items:
                    try:
                        item["scores"] = score(item["inputs"], item["texts"])
                    except Exception as err:  # noqa: BLE001 - handed to its caller, who reports it
                        item["error"] = err
            for item in items:
                item["done"] = True


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (nice +10; Linux, where a thread has its own); elsewhere nothing."""
    if sys.platform.startswith("linux"):
        try:
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + 10))
        except OSError:  # not allowed here: background scoring runs at the same priority
            log.info("could not lower the background scoring thread's priority")
