"""Training runs started from the page: one at a time, in a background thread, on their own model copy.

A job runs `adapters.train.train` (which loads a separate copy of the model, so the playground keeps
generating), records its events (reward and KL per step, sample generations, evaluations), and stops
cleanly on request: `train` finishes the step, evaluates and writes the adapter trained so far.

    >>> request = TrainRequest(task="toxicity", budget="steps", amount=2, batch_size=4, group_size=2)
    >>> config = request.to_config(out="/tmp/run", name="toxicity-pg-1", device="cpu")
    >>> config.run.steps, config.algo.batch_size
    (2, 4)
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from adapters.checks import UserError
from adapters.training import ALGORITHMS, TrainConfig

log = logging.getLogger("ipa.training")

MAX_MINUTES = 30.0
MAX_STEPS = 2000
MAX_BATCH = 256
MAX_TRAIN_TOKENS = 64
MAX_EVAL_PROMPTS = 64
KEEP_SAMPLES = 12
"""Sample generations shown in the page (the most recent ones)."""


class TrainingRequestError(UserError):
    """Bad training settings from the page; the message says what to change."""


@dataclass
class TrainRequest:
    """What the Training tab asks for. Defaults fit a CPU: about 2 minutes with a tiny batch."""

    task: str = "toxicity"
    """The task to train an adapter for."""
    algo: str = "pg"
    """'pg' (group-baseline policy gradient) or 'quark' (the paper's algorithm)."""
    budget: str = "minutes"
    """'minutes' (wall-clock training time) or 'steps'."""
    amount: float = 2.0
    """How many minutes or steps."""
    lr: float = 1e-3
    """AdamW learning rate. High for a 2-minute CPU demo (about 8 steps of 8 samples): at 1e-4 the KL to the base
    stayed near 1e-4 and nothing visible changed; at 1e-3 it reached 0.014 with fluent samples (toxicity, 7 steps)."""
    alpha: float = 1.0
    """Adapter strength during training (and the card's default for generation)."""
    batch_size: int = 8
    """Samples per step."""
    group_size: int = 4
    """pg: samples per prompt (the group's mean reward is the baseline)."""
    max_new_tokens: int = 0
    """Tokens per sample (0: the task's default)."""
    eval_prompts: int = 8
    """Held-back prompts scored before and after training (the card's 'reward before/after'); few prompts make
    a noisy estimate, so a small change between before and after may be chance."""

    def check(self) -> None:
        """Raise TrainingRequestError for settings outside the page's limits."""
        if self.algo not in ALGORITHMS:
            raise TrainingRequestError(f"Unknown algorithm {self.algo!r}: pick one of {', '.join(ALGORITHMS)}.")
        if self.budget == "minutes":
            if not 0 < self.amount <= MAX_MINUTES:
                raise TrainingRequestError(f"The time budget must be more than 0 and at most {MAX_MINUTES:g} minutes, got {self.amount:g}.")
        elif self.budget == "steps":
            if not (float(self.amount).is_integer() and 1 <= self.amount <= MAX_STEPS):
                raise TrainingRequestError(f"The step budget must be a whole number from 1 to {MAX_STEPS}, got {self.amount:g}.")
        else:
            raise TrainingRequestError(f"The budget is counted in 'minutes' or 'steps', not {self.budget!r}.")
        if not 0 < self.lr <= 1e-2:
            raise TrainingRequestError(f"The learning rate must be more than 0 and at most 0.01, got {self.lr:g}.")
        if not 2 <= self.batch_size <= MAX_BATCH:
            raise TrainingRequestError(f"The batch size must be from 2 to {MAX_BATCH}, got {self.batch_size}.")
        if not 0 <= self.max_new_tokens <= MAX_TRAIN_TOKENS:
            raise TrainingRequestError(f"Tokens per sample must be from 1 to {MAX_TRAIN_TOKENS} (0: the task's default), got {self.max_new_tokens}.")
        if not 1 <= self.eval_prompts <= MAX_EVAL_PROMPTS:
            raise TrainingRequestError(f"Evaluation prompts must be from 1 to {MAX_EVAL_PROMPTS}, got {self.eval_prompts}.")

    def to_config(self, out: str, name: str, device: str, base: str = "embedded", approx_base: str = "") -> TrainConfig:
        """The TrainConfig of this request (TrainError for combinations TrainConfig rejects)."""
        self.check()
        steps = int(self.amount) if self.budget == "steps" else 0
        minutes = float(self.amount) if self.budget == "minutes" else 0.0
        decode = {"alpha": self.alpha, **({"max_new_tokens": self.max_new_tokens} if self.max_new_tokens else {})}
        return TrainConfig.from_fields(
            task=self.task, algo=self.algo, steps=steps, minutes=minutes, out=out, name=name,
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
    phase: str = "Loading a separate copy of the model ..."
    history: list[dict] = field(default_factory=list)
    """One record per step: step, reward, kl, elapsed (seconds of training)."""
    samples: list[dict] = field(default_factory=list)
    """The most recent sample generations: step, prompt, text, reward."""
    evals: dict = field(default_factory=dict)
    """'before' and 'after': held-back evaluation metrics."""
    state: str = "running"
    """running, done or failed."""
    error: str | None = None
    interrupted: bool = False
    adapter_dir: str | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def running(self) -> bool:
        return self.state == "running"

    # --- events from adapters.train ------------------------------------------------------------------
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
                                     "elapsed": event.get("elapsed", 0.0)})
                if self._budget_spent(event) or self.stop_event.is_set():
                    self.phase = "Evaluating the trained adapter on held-back prompts ..."
            elif kind == "samples":
                rows = [{"step": event["step"], **s} for s in event["samples"]]
                self.samples = (rows + self.samples)[:KEEP_SAMPLES]
            elif kind == "done":
                self.interrupted = bool(event.get("interrupted"))
                self.adapter_dir = event.get("adapter")

    def _budget_spent(self, event: dict) -> bool:
        if self.config.steps and event["step"] >= self.config.steps:
            return True
        return bool(self.config.minutes) and event.get("elapsed", 0.0) >= self.config.minutes * 60

    # --- what the page shows ---------------------------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the budget used, in [0, 1]."""
        if not self.history:
            return 0.0
        last = self.history[-1]
        if self.config.steps:
            return min(1.0, last["step"] / self.config.steps)
        return min(1.0, last["elapsed"] / (self.config.minutes * 60))

    def snapshot(self) -> dict:
        """Everything the page and the API report, as plain data."""
        with self.lock:
            return {
                "state": self.state,
                "phase": self.phase,
                "adapter": self.name,
                "task": self.config.task,
                "algo": self.config.algo,
                "steps": self.config.steps,
                "minutes": self.config.minutes,
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
        if adapter_dir is None:  # stopped before its first step: nothing learned, no adapter
            with job.lock:
                job.state, job.phase = "done", "Stopped before the first step: no adapter was made"
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
