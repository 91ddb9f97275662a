"""The playground's service: the models loaded once, and the parts that use them, one job each. No Gradio here: the
page (app/ui.py) only wires widgets to these methods, and tests call them directly.

    >>> service = Playground.load(AppConfig(warm_up=False))                      # doctest: +SKIP
    >>> for update in service.generate("toxicity", {"text": "The fans yelled"}, Settings(max_new_tokens=8),
    ...                                adapter="toxicity"):                        # doctest: +SKIP
    ...     pass
    >>> update.base[0].text, update.tailored[0].text, update.tailored_scores[0]["reward"]   # doctest: +SKIP

The parts: the adapters by name (app.adapter_store: known adapters, download, upload, delete, and the one rule for
who may change them), generation (app.generation: side by side, branching, continuations, scoring), the training
runs (app.training_service) and the Training tab's own objective (app.objective_form). A Playground owns one of each
on one base model, one scheduler and one set of scorers, and answers for them: `service.generate(...)` is
`service.generation.generate(...)`.

Models: the base model is loaded once at start and carries every adapter by name (shipped adapters from
`adapters_dir`, and those trained in the page from `runs_dir`). One scheduler thread owns the models and decodes
every user's request together (app/scheduler.py); a training run works on its own model copy in a background thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Callable

import torch

from ipa.errors import UserError
from ipa.loading import load_host, pair
from ipa.placement import Placement
from ipa.models import ModelLoadError, machine_name, model_label
from ipa.policy_adapter import AdapterHost
from ipa.decoding.engine import Engine
from ipa.decoding.run import model_sizes
from ipa.tasks import TASKS
from ipa.tasks.scoring import load_scorer
from app.adapter_store import SHIPPED, AdapterStore
from app.config import AppConfig, ConfigError
from app.generation import Generator
from app.scheduler import BatchedScorer, Scheduler, decode_in_call
from app.settings import Settings
from app.spaces_compat import gpu, zero_gpu_on
from app.training_service import TrainingService

log = logging.getLogger("ipa.service")

GPU_CALL_SECONDS = 120
"""ZeroGPU: the seconds of GPU one decoding call asks for (spaces.GPU(duration=...)); a call decodes the requests
waiting when it starts, each at most Settings' 128 tokens a column."""
USER_ERRORS = UserError
"""Errors caused by a request (shown to the user as they are), as opposed to bugs: every user error of the project
derives from ipa.errors.UserError."""
__all__ = ["USER_ERRORS", "Playground", "SHIPPED", "Settings"]
"""What the page's modules take from here; SHIPPED and Settings live in their parts (app.adapter_store, app.settings),
named here for app.classroom, which imports them from here."""


def _part(part: str, name: str) -> property:
    """A member of one of the Playground's parts, answered by the Playground: `_part("store", "adapter")`."""
    return property(lambda self: getattr(getattr(self, part), name), doc=f"The Playground's {part}.{name}.")


class BackgroundScorers(Mapping):
    """The task scorers (task name -> scorer), loaded in a background thread so that the page is served first;
    reading one waits until they are loaded (and re-raises what went wrong loading them)."""

    def __init__(self, load: Callable[[], dict], start: bool = True):
        self._scorers: dict = {}
        self._error: BaseException | None = None
        self._loaded = threading.Event()
        self._thread = threading.Thread(target=self._load, args=(load,), name="load-scorers", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start loading them (once; `start=False` left it for later: the app starts it once the page is up)."""
        if self._thread.ident is None:
            self._thread.start()

    def _load(self, load) -> None:
        try:
            self._scorers = load()
        except BaseException as err:  # noqa: BLE001 - re-raised to whoever needs a scorer
            log.exception("the reward models could not be loaded")
            self._error = err
        finally:
            self._loaded.set()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self._error is None

    def wait(self) -> dict:
        self._loaded.wait()
        if self._error is not None:
            raise self._error
        return self._scorers

    def __getitem__(self, task: str):
        return self.wait()[task]

    def __iter__(self):
        return iter(self.wait())

    def __len__(self) -> int:
        return len(self.wait())


class Playground:
    """The service: one base model with named adapters (store), generation on it (generation), one scorer per task,
    and a queue of training jobs (training)."""

    def __init__(self, config: AppConfig, base: AdapterHost, adapter_host: AdapterHost, scorers: dict, device: torch.device,
                 zero_gpu: bool = False, remote_base=None):
        self.config = config
        self.zero_gpu = zero_gpu
        """A ZeroGPU Space: the GPU exists only inside spaces.GPU calls, in processes forked from this one. Decoding
        (every tab, the research panels, branching) runs in such calls, batched (app.scheduler), and page training in
        chunks of them (app.training_jobs.ZeroGpuTrain); this process holds the models on the CPU and never runs them."""
        self.base = base
        self.adapter_host = adapter_host
        self.sizes = model_sizes(base, adapter_host)
        """What the page says of the models' sizes wherever it names an adapter: 'LoRA on the 135M base itself'."""
        self.scorers = scorers
        self.device = device
        self.remote_base = remote_base
        """The black-box base behind an API (AppConfig.api), or None for the local base."""
        self.scheduler = Scheduler(Engine(base, adapter_host, config.max_rows, config.background_rows), config.max_waiting,
                                   self._gpu_calls(config.max_rows) if zero_gpu else None)
        self.score = BatchedScorer(scorers)
        self.store = AdapterStore(config, adapter_host, self.scheduler.lock, self.sizes)
        self.generation = Generator(config, base, adapter_host, self.scheduler, self.score, self.store, device, remote_base)
        self.training = TrainingService(config, self.store, device, zero_gpu)
        self.on_close: list[Callable[[], None]] = []
        """What closes with the service (the class's vote database, app.classroom)."""

    # The parts' members, answered here for the page, the class and the tests (service.generate is
    # service.generation.generate).
    adapters = _part("store", "adapters")
    adapters_version = _part("store", "adapters_version")
    problems = _part("store", "problems")
    load_known_adapters = _part("store", "load_known_adapters")
    add_adapter = _part("store", "add_adapter")
    public = _part("store", "public")
    adapter = _part("store", "adapter")
    adapters_for = _part("store", "adapters_for")
    default_adapter = _part("store", "default_adapter")
    objective_of = _part("store", "objective_of")
    adapter_zip = _part("store", "adapter_zip")
    delete_adapter = _part("store", "delete_adapter")
    upload_adapter = _part("store", "upload_adapter")
    generate = _part("generation", "generate")
    branch = _part("generation", "branch")
    base_steps = _part("generation", "base_steps")
    continuations = _part("generation", "continuations")
    try_inputs = _part("generation", "try_inputs")
    check_inputs = _part("generation", "check_inputs")
    toxicity_backend = _part("generation", "toxicity_backend")
    start_training = _part("training", "start")
    training_status = _part("training", "status")
    job = _part("training", "job")
    has_gpu = _part("training", "has_gpu")

    def _gpu_calls(self, max_rows: int):
        """ZeroGPU: the scheduler's GPU call, decode_in_call on this playground's models inside spaces.GPU."""
        base, adapter_host = self.base, self.adapter_host

        @gpu(duration=GPU_CALL_SECONDS)
        def gpu_call(specs):
            yield from decode_in_call(base, adapter_host, max_rows, specs)
        return gpu_call

    # --- start-up ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, config: AppConfig, behind_page: bool = False) -> "Playground":
        """Load the models once, every known adapter, and one scorer per task (sharing reward models).

        behind_page: load only what the page is built from, and leave the rest for `service.load_behind_page()`, which
        the app calls once the page answers: the adapters are listed from their cards, their weights left (injecting
        them took 4-5 s of a 12 s start on 2 cores; on ZeroGPU, whose GPU calls fork the models, they load now), and
        the reward models' thread is not started yet. Requests that need an adapter or a scorer wait for it."""
        torch.set_num_threads(config.models.threads or max(1, (os.cpu_count() or 2) - 1))
        zero_gpu = zero_gpu_on()
        if zero_gpu and config.api:
            raise ConfigError("A black-box base (--base-api) is not served on ZeroGPU hardware: use a CPU or GPU Space.")
        # On ZeroGPU the models wait on the CPU here; each GPU call moves its copy to the GPU.
        device, dtype = (Placement("cpu", config.models.dtype) if zero_gpu else config.models).resolve()
        preset = config.models.chosen
        try:
            base = load_host(preset.base, device, dtype)
            adapter_host = base if preset.adapter_model == preset.base else load_host(preset.adapter_model, device, dtype)
        except ModelLoadError as err:
            if config.models.preset == "online":
                raise ModelLoadError(
                    f"The online preset needs the Hugging Face hub to download {preset.base} and {preset.adapter_model} "
                    f"the first time (they are cached afterwards), and it could not: {err} "
                    "Offline, start with --preset embedded."
                ) from None
            raise
        pair(base, adapter_host)
        remote = None
        if config.api:  # a black-box base: probed now, so a wrong URL or tokenizer fails at start
            from ipa.decoding.remote import ApiBase
            remote = ApiBase.for_host(config.api, base)
        def load_scorers() -> dict:
            scorers = {name: load_scorer(name, device=str(device), fluency_model=preset.fluency_model) for name in TASKS}
            if config.warm_up:  # score one demo per task, so that every reward model is loaded before it is needed
                for name, task in TASKS.items():
                    scorers[name]([task.demos[0]], ["A short and friendly sentence."])
            return scorers

        # The page needs the base and the adapters; the reward models load behind it (first scores wait for them).
        service = cls(config, base, adapter_host, BackgroundScorers(load_scorers, start=not behind_page), device,
                      zero_gpu, remote)
        service.load_known_adapters(later=behind_page and not zero_gpu)
        return service

    def load_behind_page(self) -> None:
        """What Playground.load(behind_page=True) left for once the page is up: the reward models and the adapters'
        weights, each on its own thread (threads started while the page is built slow it: they share the interpreter)."""
        if isinstance(self.scorers, BackgroundScorers):
            self.scorers.start()
        self.store.load_pending()

    # --- facts for the page ------------------------------------------------------------------------------
    def machine(self) -> str:
        dtype = str(self.base.base_model.dtype).replace("torch.", "")
        if self.zero_gpu:
            return f"ZeroGPU (a GPU lent for each call; {dtype} weights from {machine_name(self.device)})"
        return f"{machine_name(self.device)}, {dtype}"

    def base_label(self) -> str:
        if self.remote_base is not None:
            api = self.config.api
            return f"{api.model} served at {api.url} (black box, top-{api.top_logprobs} log-probabilities)"
        return model_label(self.config.models.chosen.base)

    def close(self, timeout: float = 120.0) -> None:
        """Stop the decoding thread and the training queue, and wait for a running job (tests and shutdown)."""
        self.scheduler.close()
        self.training.close(timeout)
        for close in self.on_close:
            close()

