"""Training runs started from the page: one at a time, in a background thread, on their own model copy.

A job runs `ipa.training.loop.train` (which loads a separate copy of the model, so the playground keeps
generating), records its events (reward and KL per step, sample generations, evaluations), and stops
cleanly on request: `train` finishes the step, evaluates and writes the adapter trained so far.

    >>> request = TrainRequest(task="toxicity", budget="steps", amount=2, batch_size=4, group_size=2)
    >>> config = request.to_config(out="/tmp/run", name="toxicity-pg-1", device="cpu")
    >>> config.run.steps, config.algo.batch_size
    (2, 4)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from ipa.args import field_docs
from ipa.errors import UserError, check_number
from ipa.loading import ModelConfig
from ipa.decoding.run import DecodeConfig
from ipa.training.config import ALGORITHMS, DEFAULT_TASK, AlgoConfig, RunConfig, TrainConfig, find_checkpoint

log = logging.getLogger("ipa.training")

KEEP_SAMPLES = 12
"""Sample generations shown in the page (the most recent ones)."""


class TrainingRequestError(UserError):
    """Bad training settings from the page; the message says what to change."""


@dataclass(frozen=True)
class TrainingLimits:
    """The largest run the Training tab accepts."""

    max_minutes: float = 30.0
    max_steps: int = 2000
    max_batch: int = 256
    max_tokens: int = 64
    """Tokens per sample."""
    max_eval_prompts: int = 64


FULL_LIMITS = TrainingLimits()
"""For a playground on one's own machine."""
SHARED_LIMITS = TrainingLimits(max_minutes=5.0, max_steps=200, max_batch=64, max_tokens=48, max_eval_prompts=16)
"""For a shared playground (a Space, --share, a public host): one run holds the machine for 5 minutes at most, and
the GPU defaults (5 minutes, batch 64, 16 evaluation prompts) still fit."""


def training_limits(setting: str, shared: bool) -> TrainingLimits:
    """The limits for AppConfig.training_limits ('auto', 'full' or 'shared'); auto: shared ones when the page is."""
    return SHARED_LIMITS if setting == "shared" or (setting == "auto" and shared) else FULL_LIMITS


class PageField(NamedTuple):
    """How the Training tab offers one TrainConfig field: its default there and its range. The field's name, type and
    meaning are TrainConfig's (its docstring, with `note` after it)."""

    default: object
    """The page's default on a CPU: a run of about 2 minutes with a tiny batch (GPU_DEFAULTS on a GPU)."""
    low: float | None = None
    """The lowest value the page takes; None: not a number (TrainConfig checks it)."""
    high: float | str | None = None
    """The highest: a number, or the TrainingLimits field that bounds it (the shared page's are lower)."""
    whole: bool = False
    """A whole number."""
    note: str = ""
    """What the page adds to the field's docstring."""

    def bounds(self, limits: TrainingLimits) -> tuple[float, float, bool]:
        """(lowest, highest, whole) under these limits: the shape of Settings.LIMITS' entries."""
        return self.low, getattr(limits, self.high) if isinstance(self.high, str) else self.high, self.whole


PAGE_FIELDS = {
    "task": PageField(DEFAULT_TASK),
    "algo": PageField("pg"),
    "lr": PageField(1e-3, 1e-7, 1e-2, note="High for a 2-minute CPU demo (about 8 steps of 8 samples): at 1e-4 the KL "
                    "to the base stayed near 1e-4 and nothing visible changed; at 1e-3 it reached 0.014 with fluent "
                    "samples (toxicity, 7 steps)."),
    "alpha": PageField(1.0, 0.1, 5, note="The strength during training, and the card's default for generation."),
    "batch_size": PageField(8, 2, "max_batch", whole=True),
    "group_size": PageField(4, 2, "max_batch", whole=True),
    "max_new_tokens": PageField(0, 0, "max_tokens", whole=True, note="In the page, tokens per sample; 0: the task's default."),
    "eval_prompts": PageField(8, 1, "max_eval_prompts", whole=True, note="Scored before and after training (the card's "
                              "'reward before/after'); few prompts make a noisy estimate, so a small change between before "
                              "and after may be chance."),
}
"""The TrainConfig fields the Training tab sets (ipa.training.config: RunConfig, AlgoConfig, DecodeConfig), each with
the page's default and range: the one place they are written."""
GPU_DEFAULTS = {"amount": 5.0, "batch_size": 64, "group_size": 4, "eval_prompts": 16, "lr": 1e-4}
"""The page's defaults where the models run on a GPU: about 5 minutes of a batch of 64 (TrainRequest.for_machine)."""


def _page_field(name: str, page: PageField) -> tuple:
    """(name, type, field) of a TrainRequest field made from the TrainConfig field of that name."""
    concern = next(kind for kind in (RunConfig, AlgoConfig, DecodeConfig) if name in {f.name for f in fields(kind)})
    declared = next(f for f in fields(concern) if f.name == name)
    doc = " ".join(filter(None, (field_docs(concern)[name], page.note)))
    return name, declared.type, field(default=page.default, metadata={"doc": doc})


PageTraining = make_dataclass("PageTraining", [_page_field(name, page) for name, page in PAGE_FIELDS.items()])
"""TrainConfig's fields as the page sets them (PAGE_FIELDS): TrainRequest's first fields."""


@dataclass
class TrainRequest(PageTraining):
    """What the Training tab asks for: TrainConfig's fields as the page sets them (PAGE_FIELDS: its defaults fit a
    CPU, about 2 minutes with a tiny batch), the budget, and your own objective with its prompts."""

    budget: str = "minutes"
    """'minutes' (wall-clock training time) or 'steps'."""
    amount: float = 2.0
    """How many minutes or steps."""
    objective: dict | None = None
    """An objective to train for instead of the task (ipa.rewards.objective's dict form, made by app.objective_form.page_objective);
    the service writes it into the run's folder and trains on that file."""
    prompts_text: str = ""
    """With an objective: prompts pasted in the page, one a line, instead of its prompt set (the service checks
    them, app.objective_form.pasted_prompts, and writes them into the run's folder)."""
    prompts_file: str = ""
    """With an objective: a prompts file uploaded in the page (.txt or .jsonl), instead of its prompt set: the path
    where the page's upload widget stored it, never one typed in the page (the service checks it,
    app.objective_form.uploaded_prompts, and writes its prompts into the run's folder)."""

    def check(self, limits: TrainingLimits = FULL_LIMITS) -> None:
        """Raise TrainingRequestError for settings outside the page's limits (one message naming the field and its
        range); TrainConfig then checks what the algorithm needs (a batch a multiple of the group, ...)."""
        def number(name: str, low: float, high: float | None, whole: bool = False, label: str = ""):
            value = check_number(getattr(self, name), label or name, low, high, whole=whole, error=TrainingRequestError)
            setattr(self, name, value)

        if self.algo not in ALGORITHMS:
            raise TrainingRequestError(f"Unknown algorithm {self.algo!r}: pick one of {', '.join(ALGORITHMS)}.")
        if self.budget == "minutes":
            number("amount", 0.05, limits.max_minutes, label="The budget in minutes")
        elif self.budget == "steps":
            number("amount", 1, limits.max_steps, whole=True, label="The budget in steps")
        else:
            raise TrainingRequestError(f"The budget is counted in 'minutes' or 'steps', not {self.budget!r}.")
        for name, page in PAGE_FIELDS.items():
            if page.low is not None:
                number(name, *page.bounds(limits))

    @classmethod
    def for_machine(cls, gpu: bool) -> "TrainRequest":
        """The page's defaults: PAGE_FIELDS' on a CPU, GPU_DEFAULTS' where the models run on a GPU."""
        return cls(**GPU_DEFAULTS) if gpu else cls()

    def to_config(self, out: str, name: str, device: str, base: str = "embedded", approx_base: str = "",
                  limits: TrainingLimits = FULL_LIMITS, objective_file: str = "") -> TrainConfig:
        """The TrainConfig of this request (TrainError for combinations TrainConfig rejects); objective_file: the
        request's objective as written into the run's folder (then the task is not used)."""
        self.check(limits)
        steps = int(self.amount) if self.budget == "steps" else 0
        minutes = float(self.amount) if self.budget == "minutes" else 0.0
        decode = {"alpha": self.alpha, **({"max_new_tokens": self.max_new_tokens} if self.max_new_tokens else {})}
        return TrainConfig.from_fields(
            **({"objective": objective_file} if objective_file else {"task": self.task}), algo=self.algo, steps=steps, minutes=minutes, out=out, name=name,
            batch_size=self.batch_size, group_size=self.group_size, micro_batch_size=min(self.batch_size, 16),
            lr=self.lr, device=device, base=base, approx_base=approx_base, eval_prompts=self.eval_prompts,
            eval_samples=1,
            eval_every=0,          # before and after only: evaluations on a CPU would eat the budget
            samples_every=1,       # every step's samples are already there; showing them costs nothing
            checkpoint_every=0,    # by time (every 2 minutes) and at the end
            **decode,
        )


@dataclass
class TrainingJob:
    """One run: its settings, what it has reported so far, and how to stop it."""

    name: str
    """The adapter's name in the playground once loaded."""
    request: TrainRequest
    config: TrainConfig
    owner: str | None
    """The browser session that started it (only it may stop the run)."""
    started: float = field(default_factory=time.time)
    phase: str = "Waiting for the runs ahead of it ..."
    history: list[dict] = field(default_factory=list)
    """One record per step: step, reward, kl, elapsed (seconds of training), parts (the reward's parts' batch means)."""
    samples: list[dict] = field(default_factory=list)
    """The most recent sample generations: step, prompt, text, reward."""
    evals: dict = field(default_factory=dict)
    """'before' and 'after': held-back evaluation metrics."""
    state: str = "queued"
    """queued, running, done, cancelled or failed."""
    error: str | None = None
    interrupted: bool = False
    adapter_dir: str | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.state in ("queued", "running")

    # --- events from ipa.training.loop ------------------------------------------------------------------
    def on_event(self, event: dict) -> None:
        with self.lock:
            kind = event["type"]
            if kind == "eval":
                self.evals[event.get("label", "during")] = {k: v for k, v in event.items() if k not in ("type", "examples")}
                if event.get("label") == "before":
                    self.phase = "Training" if not self.stop_event.is_set() else "Stopping ..."
                elif event.get("label") == "after":
                    self.phase = "Saving the adapter ..."
            elif kind == "step":
                self.history.append({"step": event["step"], "reward": event["reward"], "kl": event["kl"],
                                     "elapsed": event.get("elapsed", 0.0),
                                     # the reward's parts (an objective's blocks) as ipa.training.loop logs them: reward_<part>
                                     "parts": {k.removeprefix("reward_"): v for k, v in event.items()
                                               if k.startswith("reward_") and k != "reward_std"
                                               and isinstance(v, (int, float))}})
                if self._budget_spent(event) or self.stop_event.is_set():
                    self.phase = "Evaluating the trained adapter on held-back prompts ..."
            elif kind == "samples":
                rows = [{"step": event["step"], **s} for s in event["samples"]]
                self.samples = (rows + self.samples)[:KEEP_SAMPLES]
            elif kind == "done":
                self.interrupted = bool(event.get("interrupted"))
                self.adapter_dir = event.get("adapter")

    def _budget_spent(self, event: dict) -> bool:
        if self.config.run.steps and event["step"] >= self.config.run.steps:
            return True
        return bool(self.config.run.minutes) and event.get("elapsed", 0.0) >= self.config.run.minutes * 60

    # --- what the page shows ---------------------------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the budget used, in [0, 1]."""
        if not self.history:
            return 0.0
        last = self.history[-1]
        if self.config.run.steps:
            return min(1.0, last["step"] / self.config.run.steps)
        return min(1.0, last["elapsed"] / (self.config.run.minutes * 60))

    def snapshot(self) -> dict:
        """Everything the page and the API report, as plain data."""
        with self.lock:
            return {
                "state": self.state,
                "phase": self.phase,
                "adapter": self.name,
                "task": self.config.run.task,
                "algo": self.config.algo.algo,
                "steps": self.config.run.steps,
                "minutes": self.config.run.minutes,
                "step": self.history[-1]["step"] if self.history else 0,
                "elapsed": self.history[-1]["elapsed"] if self.history else 0.0,
                "wall_seconds": time.time() - self.started,
                "progress": self.progress(),
                "history": list(self.history),
                "samples": list(self.samples),
                "reward_before": self.evals.get("before", {}).get("mean_reward"),
                "reward_after": self.evals.get("after", {}).get("mean_reward"),
                "interrupted": self.interrupted,
                "stop_requested": self.stop_event.is_set(),
                "error": self.error,
            }


def run_job(job: TrainingJob, train: Callable, on_finished: Callable[[TrainingJob, Path], None],
            user_errors: tuple[type[Exception], ...]) -> None:
    """The job's thread: train, then hand the adapter to the playground. Never raises."""
    try:
        adapter_dir = train(job.config, on_event=job.on_event, stop=job.stop_event, progress=False)
        if adapter_dir is None:  # stopped before its first step: nothing learned, nothing to list
            shutil.rmtree(job.config.run.out, ignore_errors=True)
            with job.lock:
                job.state, job.interrupted, job.phase = "done", False, "Stopped before the first step: no adapter was made"
            return
        with job.lock:
            job.phase = "Loading the adapter into the playground ..."
        on_finished(job, Path(adapter_dir))
        with job.lock:
            job.state = "done"
            job.phase = "Stopped early: the adapter trained so far is ready" if job.interrupted else "Done: the adapter is ready"
    except user_errors as err:
        with job.lock:
            job.state, job.error, job.phase = "failed", str(err).strip("'\""), "Failed"
    except Exception as err:  # noqa: BLE001 - a crash in a run must not take the playground down
        log.error("training run %s crashed:\n%s", job.name, traceback.format_exc())
        with job.lock:
            job.state, job.error, job.phase = "failed", f"{type(err).__name__}: {err}", "Failed"


# --- on a ZeroGPU Space: a run in chunks, each inside one GPU call -------------------------------------------------


@dataclass(frozen=True)
class GpuChunks:
    """How a page run is cut into GPU calls on a ZeroGPU Space (app.service.Playground.zero_gpu), where the GPU is
    lent one decorated call at a time, for at most the seconds that call asked for."""

    steps: int = 8
    """Training steps a call. A call also loads the models, resumes the checkpoint and writes the next (the first
    also evaluates before training, the last after): the largest shared run (SHARED_LIMITS: a batch of 64, 48
    tokens) takes a few seconds a step on a GPU, so 8 steps leave room within `duration`."""
    duration: int = 120
    """Seconds of GPU one call asks for (spaces.GPU(duration=...)): a call killed at that limit loses its chunk
    alone; the run continues from the last checkpoint with half as many steps a call."""

    def __post_init__(self):
        if self.steps < 1 or self.duration < 1:
            raise ValueError(f"GpuChunks needs at least 1 step and 1 second a call, got {self.steps} and {self.duration}.")


def config_from_fields(fields: dict) -> TrainConfig:
    """The TrainConfig of dataclasses.asdict(config): plain data, which crosses a process boundary (pickled) where
    the config's cached target (a Task with functions) would not."""
    return TrainConfig(run=RunConfig(**fields["run"]), algo=AlgoConfig(**fields["algo"]), model=ModelConfig(**fields["model"]),
                       decode=DecodeConfig(**fields["decode"]))


def train_chunk(fields: dict, pause_at: int, stopping: bool) -> Iterator[dict]:
    """One GPU call of a chunked run: ipa.training.loop.train (resumed when fields say so) up to step `pause_at`, or to
    the end with `stopping` (the final evaluation and the adapter of a run stopped from the page); its events are
    yielded as they come, which `spaces` passes back to the page's process one by one.

    The loop reports through a callback, so it runs in a thread of the call and the callback feeds a queue."""
    from ipa.training.loop import train
    from app.spaces_compat import worker_threads

    worker_threads()
    config, events, finished = config_from_fields(fields), queue.Queue(), object()
    stop = threading.Event()
    if stopping:
        stop.set()

    def work():
        try:
            train(config, on_event=events.put, stop=stop, progress=False, pause_at=pause_at)
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread, below
            events.put(err)
        finally:
            events.put(finished)

    threading.Thread(target=work, name="training-chunk", daemon=True).start()
    while (event := events.get()) is not finished:
        if isinstance(event, BaseException):
            raise event
        yield event


def checkpoint_step(run_dir: Path) -> int:
    """The step of a run's last complete checkpoint (0: none yet)."""
    found = find_checkpoint(Path(run_dir))
    return json.loads((found / "state.json").read_text())["step"] if found is not None else 0


class ZeroGpuTrain:
    """ipa.training.loop.train for a ZeroGPU Space, called as the queue calls it: the run goes in chunks of
    GpuChunks.steps steps, each one call of `train_chunk` decorated with the Space's GPU decorator, each resuming
    from the checkpoint the one before wrote. The result is the adapter an unchunked run makes (ipa.training.loop
    resumes exactly). Stop takes effect when the running chunk ends: then one more call evaluates and saves.

        >>> train = ZeroGpuTrain(GpuChunks(steps=8, duration=120))              # doctest: +SKIP
        >>> TrainingQueue(train, on_finished, on_removed, USER_ERRORS, ...)     # doctest: +SKIP

    gpu: the decorator factory (app.spaces_compat.gpu: spaces.GPU on a Space); each call is made from the training
    thread, outside any visitor's request."""

    def __init__(self, chunks: GpuChunks = GpuChunks(), gpu: Callable | None = None,
                 user_errors: tuple[type[Exception], ...] = (UserError,)):
        if gpu is None:
            from app.spaces_compat import gpu
        self.chunks, self.user_errors = chunks, user_errors
        self.chunk = gpu(duration=chunks.duration)(train_chunk)

    def __call__(self, config: TrainConfig, on_event: Callable[[dict], None], stop: threading.Event,
                 progress: bool = False) -> Path | None:
        fields, run_dir = dataclasses.asdict(config), Path(config.run.out)
        steps, last = self.chunks.steps, {"step": 0, "samples": 0}
        while True:
            start = checkpoint_step(run_dir)
            if stop.is_set() and start == 0:  # nothing learned yet: nothing to evaluate or save
                on_event({"type": "done", "adapter": None, "step": 0, "interrupted": True})
                return None
            fields["run"]["resume"] = start > 0
            try:
                done = None
                for event in self.chunk(fields, 0 if stop.is_set() else start + steps, stop.is_set()):
                    if event["type"] in last:
                        if event["step"] <= last[event["type"]]:  # a chunk retried after a failure redoes these, alike
                            continue
                        last[event["type"]] = event["step"]
                    if event["type"] == "done":
                        done = event
                    on_event(event)
            except self.user_errors:
                raise
            except Exception as err:  # noqa: BLE001 - most likely killed at its time limit: retry from the checkpoint
                if steps == 1:
                    raise
                steps = max(1, steps // 2)
                log.warning("a training chunk failed (%s: %s); continuing from step %d with %d steps a call",
                            type(err).__name__, err, checkpoint_step(run_dir), steps)
                continue
            if done is not None:
                return Path(done["adapter"]) if done.get("adapter") else None


# --- the queue: runs one at a time, in order, within a disk budget -------------------------------------------------


def folder_mb(path: Path) -> float:
    """The size of the files under a folder, in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def runs_over_budget(runs_dir: Path, budget_mb: float, keep: set[Path]) -> list[Path]:
    """The oldest runs to remove so that runs_dir fits in budget_mb; never those in `keep` (the newest run, and the
    folders reserved for runs still waiting or running).

    Oldest by the time their folder last changed; only folders of runs_dir, which holds nothing but runs trained
    in the page (the shipped adapters live elsewhere)."""
    runs = sorted((p for p in runs_dir.iterdir() if p.is_dir() and p not in keep), key=lambda p: p.stat().st_mtime)
    sizes = {p: folder_mb(p) for p in runs}
    total = sum(sizes.values()) + sum(folder_mb(p) for p in keep if p.is_dir())
    chosen = []
    for run in runs:
        if total <= budget_mb:
            break
        chosen.append(run)
        total -= sizes[run]
    return chosen


class TrainingQueue:
    """Training runs of the page: one at a time in a worker thread, the others waiting in order.

    Each browser session has at most one run waiting or running; it may stop it (a waiting run leaves the queue at
    once, a running one stops at its next check and keeps what it learned). After each run its checkpoint is
    removed (page runs are not resumed) and the oldest runs go until runs_dir fits in disk_mb.

        >>> queue = TrainingQueue(train, on_finished, on_removed, USER_ERRORS, runs_dir, disk_mb=1000, max_waiting=8)  # doctest: +SKIP
        >>> queue.submit(job)["position"]                                                                               # doctest: +SKIP
        0
    """

    def __init__(self, train: Callable, on_finished: Callable[[TrainingJob, Path], None],
                 on_removed: Callable[[str], None], user_errors: tuple[type[Exception], ...], runs_dir: Path,
                 disk_mb: float, max_waiting: int):
        self.train, self.on_finished, self.on_removed, self.user_errors = train, on_finished, on_removed, user_errors
        self.runs_dir, self.disk_mb, self.max_waiting = Path(runs_dir), disk_mb, max_waiting
        self.jobs: list[TrainingJob] = []
        """Every job of this process, in the order they were submitted."""
        self.changed = threading.Condition()
        self.closed = False
        self.worker: threading.Thread | None = None

    # --- what sessions ask -------------------------------------------------------------------------------------
    def waiting(self) -> list[TrainingJob]:
        return [j for j in self.jobs if j.state == "queued"]

    def current(self) -> TrainingJob | None:
        return next((j for j in self.jobs if j.running), None)

    def job_of(self, owner: str | None) -> TrainingJob | None:
        """The session's latest job (None for an unknown session or none)."""
        mine = [j for j in self.jobs if owner is not None and j.owner == owner]
        return mine[-1] if mine else None

    def snapshot(self, job: TrainingJob) -> dict:
        """The job's snapshot with its place: position 0 = running (or finished), k = k runs ahead of it."""
        with self.changed:
            waiting = self.waiting()
            ahead = waiting.index(job) + (self.current() is not None) if job in waiting else 0
            queued = len(waiting)
        snapshot = job.snapshot()
        snapshot.update(position=ahead, queued=queued)
        if job.state == "queued":
            snapshot["phase"] = f"Waiting: {ahead} run{'s' if ahead != 1 else ''} ahead of this one"
        return snapshot

    def status(self, owner: str | None = None) -> dict:
        """The session's own latest run, else the running one, else the last; {'state': 'idle'} before any."""
        job = self.job_of(owner) or self.current() or (self.jobs[-1] if self.jobs else None)
        if job is None:
            return {"state": "idle", "phase": "No run yet", "history": [], "samples": [], "position": 0,
                    "queued": len(self.waiting())}
        return self.snapshot(job)

    def submit(self, job: TrainingJob) -> dict:
        """Queue a job (TrainingRequestError when the session has one already, or the queue is full)."""
        with self.changed:
            mine = self.job_of(job.owner)
            if mine is not None and mine.active:
                raise TrainingRequestError(f"Your run {mine.name} is still {'waiting' if mine.state == 'queued' else 'running'}: "
                                           "one run a session. Stop it to start another.")
            if len(self.waiting()) >= self.max_waiting:
                raise TrainingRequestError(f"{self.max_waiting} training runs are already waiting; try again later.")
            self.jobs.append(job)
            if self.worker is None:
                self.worker = threading.Thread(target=self._work, name="training-queue", daemon=True)
                self.worker.start()
            self.changed.notify_all()
        return self.snapshot(job)

    def stop(self, owner: str | None) -> dict:
        """Stop the session's run: a waiting one leaves the queue, a running one stops within seconds."""
        with self.changed:
            job = self.job_of(owner)
            if job is None or not job.active:
                running = self.current()
                hint = (f" (the run in progress, {running.name}, was started from another browser session; only that "
                        "session can stop it, and it ends by itself when its budget is spent)") if running else ""
                raise TrainingRequestError(f"No training run is in progress for this session{hint}.")
            job.stop_event.set()
            with job.lock:
                if job.state == "queued":
                    job.state, job.phase = "cancelled", "Cancelled before it started"
                    shutil.rmtree(job.config.run.out, ignore_errors=True)  # an objective run's objective.json, if any
                else:
                    job.phase = "Stopping: evaluating and saving the adapter trained so far ..."
            self.changed.notify_all()
        return self.snapshot(job)

    def close(self, timeout: float = 120.0) -> None:
        """Cancel waiting runs, stop the running one and wait for it (tests and shutdown)."""
        with self.changed:
            self.closed = True
            for job in self.waiting():
                job.state, job.phase = "cancelled", "Cancelled: the playground shut down"
                shutil.rmtree(job.config.run.out, ignore_errors=True)
            running = self.current()
            if running is not None:
                running.stop_event.set()
            self.changed.notify_all()
        if self.worker is not None:
            self.worker.join(timeout)

    # --- the worker ------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self.changed:
                while not self.closed and not self.waiting():
                    self.changed.wait()
                if self.closed:
                    return
                job = self.waiting()[0]
                with job.lock:
                    job.state, job.started, job.phase = "running", time.time(), "Loading a separate copy of the model ..."
            run_job(job, self.train, self.on_finished, self.user_errors)
            self._tidy(job)

    def _tidy(self, job: TrainingJob) -> None:
        """After a run: drop its checkpoint (page runs are not resumed), then the oldest runs beyond the disk budget."""
        run_dir = Path(job.config.run.out)
        try:
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
            if not run_dir.is_dir() or not self.runs_dir.is_dir():
                return
            with self.changed:
                keep = {run_dir} | {Path(j.config.run.out) for j in self.jobs if j.active}
            for old in runs_over_budget(self.runs_dir, self.disk_mb, keep=keep):
                log.info("disk budget of %g MB: removing the oldest run %s", self.disk_mb, old.name)
                self.on_removed(old.name)
                shutil.rmtree(old, ignore_errors=True)
        except Exception:  # noqa: BLE001 - tidying must not stop the queue
            log.exception("tidying up after run %s failed", job.name)
