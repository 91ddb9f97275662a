"""The page's research panels, service side: IPA against its baselines and alpha sweeps on a handful of prompts.

No Gradio here, and no second copy of the methods or the metrics: a comparison is ipa.evaluation.compare's
`compare_methods` and `compare_report`, a sweep ipa.evaluation.evaluate's `alpha_sweep`, both measured with
`metrics_with_intervals` (ipa.tasks.metrics) and the service's own scorers, on the service's loaded models.

    >>> report = compare(service, "sentiment", [{"text": "The day was"}], 1, "sentiment", Settings(seed=0))  # doctest: +SKIP
    >>> report["methods"]["best_of_n"]["mean_reward"], report["best_of_n"]                               # doctest: +SKIP

Decoding goes through the service's scheduler (`drive`), not a second engine of its own: bench's functions take
how a run is decoded as a parameter, so each method's rows join the one running batch beside other users'
requests (a second engine would run forward passes on the same model from another thread, beside the
scheduler's), wait their turn when it is full, and leave it when the page that asked goes away (`in_background`
sets `cancelled`; the run is dropped before the next step). The page's limit (AppConfig.research_samples) bounds
what one click may ask for.
"""

from __future__ import annotations

import dataclasses
import queue
import random
import threading
import time
from typing import Callable, Iterator

from ipa.errors import check_number
from ipa.decoding.engine import Engine, Request
from ipa.decoding.run import DecodeError, DecodeRun, TailoredPolicy
from app.adapter_store import AdapterEntry
from app.config import ServiceError
from app.service import Playground
from app.settings import Settings
from ipa.evaluation.compare import METHODS, compare_methods, compare_report
from ipa.evaluation.evaluate import EVAL_DECODE_FLAGS, alpha_sweep, metrics_with_intervals, parse_alphas
from ipa.tasks import get_task

INPUT_SOURCES = ("input", "demos")
"""Where a panel's prompts come from: the tab's input as typed, or the task's demo inputs."""
DEFAULT_ALPHAS = "0,0.25,0.5,1,1.5,2,3"
"""The sweep's strengths unless the user types others: 0 (the base) to 3, the trained strength 1 among them."""
PROGRESS_EVERY = 0.5
"""Seconds between two progress messages of one decoding run."""


class ResearchCancelled(Exception):
    """The page that asked went away: the work stopped. Not a user error (nobody is left to tell)."""


def ignore(message: str) -> None:
    pass


def research_inputs(service: Playground, task: str, source: str, current: dict) -> list[dict]:
    """The prompts a panel runs on: [the tab's input], checked as Generate checks it, or the task's demo inputs."""
    if source == "input":
        return [service.check_inputs(task, current)]
    if source == "demos":
        return [service.check_inputs(task, dict(demo)) for demo in get_task(task).demos]
    raise ServiceError(f"prompts must be one of {', '.join(INPUT_SOURCES)} (the tab's input or the task's demo inputs), "
                       f"got {source!r}.")


def samples_per_prompt(k) -> int:
    """k, checked against the page's range of samples (Settings.n's)."""
    low, high, _ = Settings.LIMITS["n"]
    return check_number(k, "samples_per_prompt", low, high, whole=True, error=ServiceError)


def page_alphas(text: str) -> list[float]:
    """The sweep's strengths from the page's text, checked against the page's alpha range, without repeats, in order.

    >>> page_alphas("1, 0,0.5,1")
    [0.0, 0.5, 1.0]
    """
    if not isinstance(text, str) or not text.strip():
        raise ServiceError(f"Give the alphas to sweep, separated by commas: for example {DEFAULT_ALPHAS}.")
    try:
        return sorted(set(parse_alphas(text, Settings.LIMITS["alpha"], "The alpha sweep")))
    except DecodeError as err:
        raise ServiceError(f"{str(err).rstrip('.')} (the alphas to sweep, e.g. {DEFAULT_ALPHAS}).") from None


def check_budget(service: Playground, n_prompts: int, k: int, points: int, what: str) -> None:
    """Refuse a click that asks for more than AppConfig.research_samples samples (prompts × k × points)."""
    asked, most = n_prompts * k * points, service.config.research_samples
    if asked > most:
        raise ServiceError(f"{n_prompts} prompt{'s' * (n_prompts != 1)} × {k} sample{'s' * (k != 1)} × {points} {what} = "
                           f"{asked} samples; this playground decodes at most {most} a click. Use fewer prompts "
                           f"(this tab's input), samples{' or alphas' * (what == 'alphas')}.")


def scheduler_drive(service: Playground, say: Callable[[str], None], cancelled: threading.Event,
                    phase: Callable[[], str]) -> Callable[[DecodeRun], Iterator]:
    """drive(run) for bench's functions: the run decoded by the service's scheduler (batched with every other
    request), saying how far it is (phase() names what is decoding), stopped when `cancelled` is set."""
    def drive(run: DecodeRun) -> Iterator:
        updates = service.scheduler.submit(run)
        said = 0.0
        try:
            for update in updates:
                if cancelled.is_set():
                    raise ResearchCancelled("the page went away")
                if time.monotonic() - said >= PROGRESS_EVERY:
                    said = time.monotonic()
                    where = (f"waiting, {update} request{'s' * (update != 1)} ahead" if isinstance(update, int)
                             else f"token {update.steps} of {run.config.max_new_tokens}")
                    say(f"{phase()}: {where}")
                yield update
        finally:
            updates.close()  # a run left early leaves the batch at the next step
    return drive


def _policy(service: Playground, adapter: str | None, what: str) -> tuple[TailoredPolicy, AdapterEntry]:
    if adapter in (None, ""):
        raise ServiceError(f"{what} needs an adapter: pick one in the tab's Adapter list (or train one in the Training tab).")
    entry = service.adapter(adapter)
    service.store.wait_loaded([entry.name])  # at start, the adapters' weights load behind the page
    return TailoredPolicy(service.base, service.adapter_host, entry.name, entry.card.combination, service.remote_base), entry


def _settings(settings: Settings) -> Settings:
    if not isinstance(settings, Settings):
        raise ServiceError(f"settings must be app.settings.Settings, got {type(settings).__name__}.")
    if settings.seed is None:  # a random seed, drawn here so that the report can say which
        settings = dataclasses.replace(settings, seed=random.randrange(2**31))
    return settings


def _phases(say: Callable[[str], None], cancelled: threading.Event):
    """bench's log callback, which also names the current phase for the progress messages."""
    state = {"phase": "starting"}

    def log(message: str) -> None:
        if cancelled.is_set():
            raise ResearchCancelled("the page went away")
        state["phase"] = message
        say(message)
    return log, lambda: state["phase"]


def locked_drive(service: Playground) -> Callable[[DecodeRun], Iterator[DecodeRun]] | None:
    """How compare decodes the adapter's model alone where the adapters sit on another model than the base (the
    online preset): in an engine of its own, each step under the scheduler's lock, so that it and the page's engine
    take turns on the CPU rather than share its cores (their LoRA layers could run at once: AdapterHost routes them per
    thread). None where they sit on the base: the page's engine serves that policy too (compare_methods' default)."""
    if service.adapter_host is service.base:
        return None

    def drive(run: DecodeRun) -> Iterator[DecodeRun]:
        engine = Engine.for_policy(run.policy)
        engine.submit(Request(run))
        while not run.done:
            with service.scheduler.lock:
                engine.step()
            yield run
    return drive


def compare(service: Playground, task: str, inputs: list[dict], k: int, adapter: str | None, settings: Settings,
            say: Callable[[str], None] = ignore, cancelled: threading.Event | None = None) -> dict:
    """The six methods of ipa.evaluation.compare (base, ipa, best_of_n, prompted, prompted_ipa, adapter_alone) on these inputs, k samples
    each, with the tab's adapter and settings: ipa.evaluation.compare's JSON object (`compare_report`), plus `texts`, the k
    samples of the first input per method, and `inputs`."""
    definition, k = get_task(task), samples_per_prompt(k)
    policy, entry = _policy(service, adapter, "Compare methods")
    settings = _settings(settings)
    check_budget(service, len(inputs), k, len(METHODS), "methods")
    cancelled = cancelled or threading.Event()
    scorer = service.scorers[task]  # waits for the reward models while they load at start
    log, phase = _phases(say, cancelled)
    start = time.time()
    methods, texts = compare_methods(
        policy, definition, inputs, settings, k, batch_size=len(inputs),
        reward=lambda xs, ts: [s["reward"] for s in service.score(task, xs, ts)],
        measure=lambda completions: metrics_with_intervals(task, scorer, inputs, completions, k),
        log=log, warm_up=False, drive=scheduler_drive(service, say, cancelled, phase), alone_drive=locked_drive(service))
    report = compare_report(definition, inputs, k, settings, entry.name, methods, texts, scorer, policy,
                            time.time() - start, examples=len(inputs))
    return {**report, "texts": {name: texts[name][:k] for name in METHODS}, "inputs": inputs}


def sweep(service: Playground, task: str, inputs: list[dict], k: int, adapter: str | None, settings: Settings,
          alphas: str, say: Callable[[str], None] = ignore, cancelled: threading.Event | None = None) -> dict:
    """ipa.evaluation.evaluate's alpha sweep on these inputs: the tailored column at each alpha (the same seed at each),
    with reward, KL per token, perplexity, relevance and distinct-2 and their 95 % intervals; the adapter's
    trained strength (its card's alpha) marked. JSON: ipa.evaluation.evaluate's keys, the points under "alpha_sweep"."""
    definition, k = get_task(task), samples_per_prompt(k)
    strengths = page_alphas(alphas)
    policy, entry = _policy(service, adapter, "The alpha sweep")
    settings = _settings(settings)
    check_budget(service, len(inputs), k, len(strengths), "alphas")
    cancelled = cancelled or threading.Event()
    scorer = service.scorers[task]
    log, phase = _phases(say, cancelled)
    prompts = [definition.build_prompt(x, policy.tokenizer) for x in inputs]
    start = time.time()
    points = alpha_sweep(policy, prompts, settings, k, strengths, len(inputs),
                         lambda completions: metrics_with_intervals(task, scorer, inputs, completions, k),
                         log=log, trained_alpha=entry.card.alpha, drive=scheduler_drive(service, say, cancelled, phase))
    return {
        "task": task,
        "n_prompts": len(inputs),
        "samples_per_prompt": k,
        "adapter": entry.name,
        "alpha": entry.card.alpha,
        "seed": settings.seed,
        "decode": {name: getattr(settings, name) for name in EVAL_DECODE_FLAGS if name != "alpha"},
        "toxicity_backend": scorer.toxicity_backend,
        "toxicity_backend_label": scorer.toxicity_backend_label,
        "device": str(service.device),
        "seconds": round(time.time() - start, 1),
        "alpha_sweep": points,
        "inputs": inputs,
    }


def in_background(work: Callable[[Callable[[str], None], threading.Event], dict]) -> Iterator[str | dict]:
    """Run work(say, cancelled) in a thread; yield each message it says (str), then its result (dict). An error
    in the work is raised here. Closing the iterator early (the page went away) sets `cancelled`, which stops
    the work at its next decoding step."""
    messages: queue.SimpleQueue = queue.SimpleQueue()
    cancelled = threading.Event()

    def run() -> None:
        try:
            messages.put(("done", work(lambda message: messages.put(("say", message)), cancelled)))
        except BaseException as err:  # noqa: BLE001 - handed to the waiting page
            messages.put(("error", err))

    threading.Thread(target=run, name="research", daemon=True).start()
    try:
        while True:
            kind, value = messages.get()
            while kind == "say" and not messages.empty():  # a page that reads slowly gets the latest message only
                kind, value = messages.get()
            if kind == "error":
                raise value
            yield value
            if kind == "done":
                return
    finally:
        cancelled.set()
