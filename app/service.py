"""The playground's service layer: models loaded once, adapters by name, generation with rewards, training jobs.

No Gradio here: the UI (app/ui.py) only wires widgets to these methods, and tests call them directly.

    >>> service = Playground.load(AppConfig(warm_up=False))                      # doctest: +SKIP
    >>> for update in service.generate("toxicity", {"text": "The fans yelled"}, Settings(max_new_tokens=8),
    ...                                adapter="toxicity"):                        # doctest: +SKIP
    ...     pass
    >>> update.base[0].text, update.tailored[0].text, update.tailored_scores[0]["reward"]   # doctest: +SKIP

Models: the base model is loaded once at start and carries every adapter by name (shipped adapters from
`adapters_dir`, and those trained in the page from `runs_dir`); adapters are only ever picked by name from
those two folders, never from a path a user typed, and only JSON and safetensors are read.

Paths: what the service hands out names no path of the server (app.paths' rule, applied by Playground.public): the
errors of its requests, the training status, the problems found at start and the files of a downloaded zip name
files relative to the playground's folders (runs/playground/sentiment-pg-4/adapter).

Threads: one scheduler thread owns the models and decodes every user's request together, one step at a time
(app/scheduler.py: continuous batching); each user's thread waits for its own request's tokens. Rewards of
requests that finish together are scored in one batch. A training run works on its own model copy in a
background thread, so generation keeps working while it trains.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Callable, ClassVar, Iterator

import torch

from ipa.errors import UserError, check_number, quote
from ipa.files import recover_directory
from ipa.loading import load_host, pair
from ipa.models import ModelLoadError, machine_name, model_label, resolve_device, resolve_dtype
from ipa.policy_adapter import AdapterCard, AdapterHost, read_card
from ipa.decoding.engine import Engine
from ipa.decoding.inspection import StepView
from ipa.decoding.inspector import Branch, branch_run, ended_branch
from ipa.decoding.run import Completion, DecodeConfig, DecodeError, DecodeResult, DecodeRun, TailoredPolicy, model_sizes
from app.config import REPO_ROOT, AppConfig, ConfigError
from app.paths import folder_names, public_paths
from app.scheduler import BatchedScorer, Scheduler, decode_in_call
from app.spaces_compat import gpu, zero_gpu_on
from app.training_jobs import TrainingJob, TrainingLimits, TrainingQueue, TrainRequest, ZeroGpuTrain, training_limits
from ipa.rewards.objective import Objective, ObjectiveError
from ipa.rewards.preference import PreferenceModel
from ipa.tasks import TASKS, Task, carry_inputs, get_task
from ipa.tasks.scoring import load_scorer
from ipa.tasks.objective import (CUSTOM_TASK, FILE_PROMPTS, MIN_FILE_PROMPTS, PROMPT_SETS, load_objective, load_objective_scorer, objective_inputs,
                             objective_of_card, objective_task)
from ipa.tasks.data import DataError, data_dir, load_inputs

log = logging.getLogger("ipa.service")

GPU_CALL_SECONDS = 120
"""ZeroGPU: the seconds of GPU one decoding call asks for (spaces.GPU(duration=...)); a call decodes the requests
waiting when it starts, each at most Settings' 128 tokens a column."""
STREAM_INTERVAL = 0.04
"""Seconds between two streamed updates of one request, per request decoding at the same time (one user: every
token; sixteen: about 1.5 updates a second)."""
SHIPPED, TRAINED_HERE, UPLOADED = "shipped", "trained here", "uploaded"
UPLOAD_MARK = "uploaded"
"""A file in a run folder of runs_dir that says its adapter was uploaded, not trained here."""
TOXICITY_TASKS = ("toxicity", "dialogue_safety")
"""Tasks whose reward uses the toxicity classifier (the page names its backend)."""


class ServiceError(UserError):
    """A request the playground cannot serve; the message says what to change."""


PAGE_BLOCKS = 3
"""Reward blocks the Training tab offers for "your own objective" (a file may hold more: ipa.rewards.objective)."""
NO_BLOCK = "none"
"""A block row of the page left empty."""


MAX_PROMPT_LINES = 2000
"""Prompts a user may paste or upload for an objective (one a line, or one a JSONL row)."""
MAX_PROMPTS_KB = 256
"""The most text a user may paste as prompts, and the largest prompts file they may upload."""
PROMPTS_FILE = "prompts.txt"
"""Pasted or uploaded prompts, written into the run's folder beside its objective.json (which names this file);
prompts.jsonl instead when one of them spans several lines (a JSONL row's text may)."""
PROMPT_FILE_TYPES = (".txt", ".jsonl")
"""What the page takes as a prompts file: one prompt a line, or JSONL rows as ipa.tasks.data reads them."""


def pasted_prompts(text: str, max_chars: int) -> list[str]:
    """Prompts pasted in the page, one a line (blank lines left out), checked: at most MAX_PROMPTS_KB of text and
    MAX_PROMPT_LINES lines, none longer than max_chars, at least MIN_FILE_PROMPTS (one in five is held back).

    >>> pasted_prompts("\n".join(f"The harbour {i}" for i in range(12)), 2000)[:2]
    ['The harbour 0', 'The harbour 1']
    """
    if not isinstance(text, str):
        raise ServiceError(f"Pasted prompts must be text, one prompt a line, got {type(text).__name__}.")
    size = len(text.encode("utf-8"))
    if size > MAX_PROMPTS_KB * 1024:
        raise ServiceError(f"The pasted prompts are {size / 1024:,.0f} KB; the page takes at most {MAX_PROMPTS_KB} KB.")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_PROMPT_LINES:
        raise ServiceError(f"{len(lines):,} prompts were pasted; the page takes at most {MAX_PROMPT_LINES:,}, one a line.")
    long = [i for i, line in enumerate(lines, 1) if len(line) > max_chars]
    if long:
        raise ServiceError(f"Pasted prompt{'s' * (len(long) > 1)} {', '.join(map(str, long[:5]))}{' ...' * (len(long) > 5)} "
                           f"{'are' if len(long) > 1 else 'is'} longer than {max_chars:,} characters: shorten them.")
    if len(lines) < MIN_FILE_PROMPTS:
        raise ServiceError(f"{len(lines)} prompt{'s' * (len(lines) != 1)} pasted: give at least {MIN_FILE_PROMPTS}, one a line "
                           "(one in five is held back for the before/after evaluation).")
    return lines


def uploaded_prompts(path: str | os.PathLike, max_chars: int) -> list[str]:
    """Prompts from a file uploaded in the page (the path where the upload widget stored it; never one a user
    typed): a .txt, one prompt a line, or a .jsonl, one row a line read as ipa.tasks.data reads rows ({"text": ...},
    {"prompt": ...}, {"prompt": {"text": ...}} or a JSON string). Checked as pasted prompts are (MAX_PROMPTS_KB,
    MAX_PROMPT_LINES, max_chars a prompt, at least MIN_FILE_PROMPTS), and refused with one message naming the file
    (and the line, for a bad row) when it is empty, not UTF-8 text, or a row is not JSON or holds no prompt.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "sea.jsonl"
    >>> _ = f.write_text("".join(f'{{"text": "The tide {i}"}}\\n' for i in range(10)))
    >>> uploaded_prompts(f, 2000)[:2]
    ['The tide 0', 'The tide 1']
    """
    from ipa.tasks.data import read_row  # ipa.tasks.data's reading of one row (a JSON string or object)

    path = Path(path)
    name, kind = path.name, path.suffix.lower()
    if kind not in PROMPT_FILE_TYPES:
        raise ServiceError(f"{name} is not a prompts file the page takes: upload a .txt (one prompt a line) or a .jsonl "
                           '(one JSON row a line, such as {"text": "The harbour was quiet"}).')
    size = path.stat().st_size
    if size > MAX_PROMPTS_KB * 1024:
        raise ServiceError(f"{name} is {size / 1024:,.0f} KB; the page takes prompts files of at most {MAX_PROMPTS_KB} KB.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the first prompt
        junk = raw.index(b"\x00") if b"\x00" in raw else None  # valid UTF-8, but binary files are full of them
    except UnicodeDecodeError as err:
        junk = err.start
    if junk is not None:
        raise ServiceError(f"{name} is not a text file (byte {junk:,} is not text): upload a .txt or .jsonl file saved as "
                           "UTF-8 text.")
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ServiceError(f"{name} is empty: give at least {MIN_FILE_PROMPTS} prompts, one a line.")
    if len(lines) > MAX_PROMPT_LINES:
        raise ServiceError(f"{name} holds {len(lines):,} lines; the page takes at most {MAX_PROMPT_LINES:,} prompts.")
    prompts = []
    for n, line in lines:
        try:
            row = json.loads(line) if kind == ".jsonl" else line
        except json.JSONDecodeError as err:  # worded as ipa.tasks.data words it
            raise ServiceError(f"{name}, line {n}: not valid JSON ({err.msg}).") from None
        item = read_row(FILE_PROMPTS.data_task, row)
        if item is None:
            raise ServiceError(f"{name}, line {n}: " + ('no prompt in this row; give each row a text, such as '
                                                        '{"text": "The harbour was quiet"}.' if kind == ".jsonl" else
                                                        "not usable as a prompt."))
        prompts.append((n, item[1][FILE_PROMPTS.field]))
    long = [n for n, prompt in prompts if len(prompt) > max_chars]
    if long:
        raise ServiceError(f"{name}: the prompt{'s' * (len(long) > 1)} on line{'s' * (len(long) > 1)} "
                           f"{', '.join(map(str, long[:5]))}{' ...' * (len(long) > 5)} {'are' if len(long) > 1 else 'is'} "
                           f"longer than {max_chars:,} characters: shorten {'them' if len(long) > 1 else 'it'}.")
    if len(prompts) < MIN_FILE_PROMPTS:
        raise ServiceError(f"{name} holds {len(prompts)} prompt{'s' * (len(prompts) != 1)}: give at least {MIN_FILE_PROMPTS} "
                           "(one in five is held back for the before/after evaluation).")
    return [prompt for _, prompt in prompts]


def write_prompts(run_dir: Path, prompts: list[str]) -> str:
    """Write a run's pasted or uploaded prompts beside its objective.json; the file's name, for the objective's
    "prompts": PROMPTS_FILE, one a line, or prompts.jsonl when a prompt spans lines."""
    if any("\n" in p or "\r" in p for p in prompts):
        name = Path(PROMPTS_FILE).with_suffix(".jsonl").name
        (run_dir / name).write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts), encoding="utf-8")
        return name
    (run_dir / PROMPTS_FILE).write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return PROMPTS_FILE


def page_objective(name: str, prompts: str, blocks: list[tuple]) -> Objective:
    """The objective the Training tab describes: a name, a prompt set's name (never a file: the page reads no path
    a user typed) and up to PAGE_BLOCKS rows (reward name, weight, its parameters as a JSON object or empty); rows
    whose reward is empty or NO_BLOCK are left out. ONE ObjectiveError listing every problem.

    >>> page_objective("calm-sea", "passages", [("topic", 1, '{"topic": "the sea"}'), ("none", 1, "")]).to_dict()
    {'name': 'calm-sea', 'blocks': [{'reward': 'topic', 'topic': 'the sea', 'weight': 1.0}], 'prompts': 'passages'}
    """
    problems, raw_blocks = [], []
    if len(blocks) > PAGE_BLOCKS:
        problems.append(f"the page takes at most {PAGE_BLOCKS} blocks, got {len(blocks)}")
    for i, (reward, weight, params) in enumerate(blocks, 1):
        if reward in (None, "", NO_BLOCK):
            continue
        text = (params or "").strip() if isinstance(params, str) else params
        try:
            given = json.loads(text) if isinstance(text, str) and text else (text or {})
        except json.JSONDecodeError as err:
            problems.append(f"block {i} ({reward}): its parameters are not valid JSON ({err.msg}); write an object such as "
                            '{"topic": "the ocean and the sea"}, or leave them empty')
            continue
        if not isinstance(given, dict) or {"reward", "weight"} & set(given):
            problems.append(f"block {i} ({reward}): its parameters must be a JSON object of the reward's parameters "
                            '(without "reward" or "weight", which have their own fields), got ' + repr(params))
            continue
        raw_blocks.append({"reward": reward, "weight": weight, **given})
    if prompts not in PROMPT_SETS:
        problems.append(f"prompts must be one of the prompt sets {', '.join(PROMPT_SETS)}, got {prompts!r}")
    name = name.strip() if isinstance(name, str) else name
    if problems:  # worded as Objective.from_dict's own, which checks the rest
        raise ObjectiveError(f"Objective {name!r} is not valid: " + "; ".join(problems) + ".")
    if not raw_blocks:
        raise ObjectiveError(f"Objective {name!r} has no block: choose at least one reward.")
    return Objective.from_dict({"name": name, "blocks": raw_blocks, "prompts": prompts})


USER_ERRORS = UserError
"""Errors caused by a request (shown to the user as they are), as opposed to bugs: every user error of the project
derives from ipa.errors.UserError."""


@dataclass
class Settings(DecodeConfig):
    """Decoding settings of one request (the page's Settings panel): a DecodeConfig within the page's ranges
    (LIMITS, which the page's widgets also take theirs from), plus the samples per column. A value of the wrong
    kind or out of range is a DecodeError naming the field and the page's range."""

    n: int = 3
    """Samples per column: 3 by default, so that one lucky or unlucky sample does not decide the verdict."""

    LIMITS: ClassVar[dict[str, tuple]] = {
        **DecodeConfig.LIMITS, "alpha": (0, 5, False), "temperature": (0, 2, False), "top_p": (0.05, 1, False),
        "max_new_tokens": (1, 128, True), "seed": (0, 2**31 - 1, True), "n": (1, 4, True),
    }
    RANDOM_SEED: ClassVar[int] = -1
    """The page's seed for "draw one" (None does the same)."""

    def __post_init__(self):
        if isinstance(self.seed, (int, float)) and not isinstance(self.seed, bool) and self.seed == self.RANDOM_SEED:
            self.seed = None
        try:
            super().__post_init__()
        except DecodeError as err:
            if str(err).startswith("seed "):
                raise DecodeError(f"{str(err).rstrip('.')}; or {self.RANDOM_SEED} for a random seed.") from None
            raise

    @classmethod
    def for_task(cls, task: str, **overrides) -> "Settings":
        """The task's default decoding settings, with overrides."""
        return cls(**{**get_task(task).decode, **overrides})


@dataclass
class AdapterEntry:
    """An adapter the playground can use, by name."""

    name: str
    card: AdapterCard
    source: str
    """'shipped' (adapters_dir), 'trained here' or 'uploaded' (both in runs_dir)."""
    directory: Path
    sizes: str = ""
    """The models' sizes (Playground.sizes): 'LoRA on the 135M base itself'."""


@dataclass
class TokenStep:
    """How the adapter acted on one generated token."""

    token: str
    kl: float
    """KL(tailored || base) of the next-token distributions at this step, in nats."""
    base_prob: float
    """The base model's probability of the chosen token."""
    tailored_prob: float
    """The tailored policy's probability of the chosen token."""
    covered: float | None = None
    """With a black-box base: the probability mass of the tokens its server reported at this step (its top k), on
    which the step's distributions were computed; None for a local base (all of it)."""


@dataclass
class Generation:
    """One update of a side-by-side generation: the text so far, and the rewards once done."""

    task: str
    adapter: str | None
    alpha: float
    steered: bool
    """False when the right column is the base itself (no adapter, or alpha = 0)."""
    base: list[Completion]
    tailored: list[Completion]
    done: bool = False
    base_scores: list[dict] | None = None
    tailored_scores: list[dict] | None = None
    seed: int = 0
    warnings: list[str] = field(default_factory=list)
    toxicity_backend: str | None = None
    """The toxicity classifier's label, for tasks whose reward uses it."""
    waiting: int = 0
    """Requests ahead of this one while it waits for room in the running batch (0 once it decodes)."""
    more: list[tuple[str, float]] = field(default_factory=list)
    """Composed adapters after the first: (name, alpha) each (the page's second adapter)."""
    also_scored_by: str | None = None
    """What scores the texts besides the tab's reward: the second adapter's task, or 'objective NAME'."""
    base_scores_2: list[dict] | None = None
    tailored_scores_2: list[dict] | None = None
    """Each column's scores by `also_scored_by` (None without a second adapter, or while decoding)."""
    inputs: dict | None = None
    settings: Settings | None = None
    """The request as checked (for branching from the result: Playground.branch)."""


@dataclass
class Branched:
    """A result continued from one step with another token (Playground.branch): both columns' whole texts, scored."""

    column: str
    sample: int
    """1, 2, ..."""
    step: int
    """0 = the first new token."""
    token_id: int
    token: str
    chosen_id: int
    """The token the generation had chosen there."""
    texts: dict[str, str]
    """Column -> its continuation: the completion's tokens before the step, the token, then what the column wrote."""
    scores: dict[str, dict]
    scores_2: dict[str, dict] | None = None
    also_scored_by: str | None = None


@dataclass
class Continuations:
    """One continuation of one input from each side of a comparison (Playground.continuations), in the sides' order."""

    task: str
    reward: str
    """What scored them: the task's name, or 'objective NAME'."""
    inputs: dict
    """The inputs as checked."""
    texts: list[str]
    scores: list[dict]
    alphas: list[float]
    """The strength each side decoded at (0 for the base)."""


def token_steering(completion: Completion) -> list[TokenStep]:
    """Per-token steering of a tailored completion (EOS left out).

    >>> c = Completion(0, 0, "tailored", [5, 6], "a b", False, [-1.0, -2.0], [-0.5, -0.1], [0.2, 1.5], ["a", " b"])
    >>> [round(s.kl, 1) for s in token_steering(c)], round(token_steering(c)[1].tailored_prob, 2)
    ([0.2, 1.5], 0.9)
    """
    import math

    covered = completion.base_mass or [None] * len(completion.tokens)
    return [TokenStep(token, kl, math.exp(base), math.exp(tailored), mass)
            for token, kl, base, tailored, mass in zip(completion.tokens, completion.kl, completion.base_logprobs,
                                                        completion.tailored_logprobs, covered)]


def public_text(config: AppConfig, text: str, named: Mapping | None = None) -> str:
    """`text` as it may leave the playground, naming no path of the server (app.paths.public_paths): a path in the
    playground's folders (runs_dir, adapters_dir, the data folder, the repository) from the folder on, the folder by
    its place in the repository (else its name); `named` paths by the name given (an upload's folder: "the zip");
    any other absolute path by its last part."""
    return public_paths(text, {**playground_folders(config), **(named or {})})


def playground_folders(config: AppConfig) -> dict[str, str]:
    """The playground's folders -> the names they are shown by (app.paths.folder_names)."""
    return folder_names((config.runs_dir, config.adapters_dir, data_dir()), REPO_ROOT)


def _public_errors(method):
    """A Playground method whose user errors leave it naming no path of the server: the same exception, its message
    rewritten by public_text."""
    @functools.wraps(method)
    def with_public_errors(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except UserError as err:
            err.args = (public_text(self.config, str(err)),)
            raise

    return with_public_errors


def _train(*args, **kwargs):
    from ipa.training.loop import train  # imported here: the training loop is only needed once a run starts

    return train(*args, **kwargs)


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def _mirror(completions: list[Completion]) -> list[Completion]:
    # Without an adapter the tailored policy *is* the base: show the same samples, labelled as tailored.
    return [dataclasses.replace(c, policy="tailored") for c in completions]


class BackgroundScorers(Mapping):
    """The task scorers (task name -> scorer), loaded in a background thread so that the page is served first;
    reading one waits until they are loaded (and re-raises what went wrong loading them)."""

    def __init__(self, load: Callable[[], dict]):
        self._scorers: dict = {}
        self._error: BaseException | None = None
        self._loaded = threading.Event()
        threading.Thread(target=self._load, args=(load,), name="load-scorers", daemon=True).start()

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
    """The service: one base model with named adapters, one scorer per task, and a queue of training jobs."""

    def __init__(self, config: AppConfig, base: AdapterHost, adapter_host: AdapterHost, scorers: dict, device: torch.device,
                 zero_gpu: bool = False):
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
        self.adapters: dict[str, AdapterEntry] = {}
        self.adapters_version = 0
        """Grows whenever an adapter is added, so the page knows when to refresh its choices."""
        self.problems: list[str] = []
        """Adapters that could not be loaded at start (shown in the page)."""
        train = ZeroGpuTrain(user_errors=(USER_ERRORS,)) if zero_gpu else _train
        self.training = TrainingQueue(train, self._training_finished, self._run_removed, USER_ERRORS,
                                      Path(config.runs_dir), config.runs_disk_mb, config.max_waiting_runs)
        self.remote_base = None
        """The black-box base behind an API (AppConfig.base_api), or None for the local base."""
        self.scheduler = Scheduler(Engine(base, adapter_host, config.max_rows), config.max_waiting,
                                   self._gpu_calls(config.max_rows) if zero_gpu else None)
        self.score = BatchedScorer(scorers)
        self._objective_scorers: dict[str, Callable] = {}
        """Adapter name -> the scorer of its objective (adapters trained for an objective), loaded on first use."""
        self._objective_scorers_lock = threading.Lock()
        self._names_lock = threading.Lock()
        """Held while a run folder is reserved (_reserve_run_folder)."""
        self.on_close: list[Callable[[], None]] = []
        """What closes with the service (the class's vote database, app.classroom)."""

    def _gpu_calls(self, max_rows: int):
        """ZeroGPU: the scheduler's GPU call, decode_in_call on this playground's models inside spaces.GPU."""
        base, adapter_host = self.base, self.adapter_host

        @gpu(duration=GPU_CALL_SECONDS)
        def gpu_call(specs):
            yield from decode_in_call(base, adapter_host, max_rows, specs)
        return gpu_call

    # --- start-up ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, config: AppConfig) -> "Playground":
        """Load the models once, every known adapter, and one scorer per task (sharing reward models)."""
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 2) - 1))
        zero_gpu = zero_gpu_on()
        if zero_gpu and config.base_api:
            raise ConfigError("A black-box base (--base-api) is not served on ZeroGPU hardware: use a CPU or GPU Space.")
        # On ZeroGPU the models wait on the CPU here; each GPU call moves its copy to the GPU.
        device = resolve_device("cpu" if zero_gpu else config.device)
        dtype = resolve_dtype(config.dtype, device)
        preset = config.models
        try:
            base = load_host(preset.base, device, dtype)
            adapter_host = base if preset.adapter_model == preset.base else load_host(preset.adapter_model, device, dtype)
        except ModelLoadError as err:
            if config.preset == "online":
                raise ModelLoadError(
                    f"The online preset needs the Hugging Face hub to download {preset.base} and {preset.adapter_model} "
                    f"the first time (they are cached afterwards), and it could not: {err} "
                    "Offline, start with --preset embedded."
                ) from None
            raise
        pair(base, adapter_host)
        remote = None
        if config.base_api:  # a black-box base: probed now, so a wrong URL or tokenizer fails at start
            from ipa.decoding.remote import ApiBase, ApiBaseConfig
            remote = ApiBase.for_host(ApiBaseConfig(url=config.base_api, model=config.base_api_model,
                                                    top_logprobs=config.top_logprobs, draft_tokens=config.draft_tokens,
                                                    served_adapters=config.base_api_adapters,
                                                    api_key_env=config.api_key_env or None), base)
        def load_scorers() -> dict:
            scorers = {name: load_scorer(name, device=str(device), fluency_model=preset.fluency_model) for name in TASKS}
            if config.warm_up:  # score one demo per task, so that every reward model is loaded before it is needed
                for name, task in TASKS.items():
                    scorers[name]([task.demos[0]], ["A short and friendly sentence."])
            return scorers

        # The page needs the base and the adapters; the reward models load behind it (first scores wait for them).
        service = cls(config, base, adapter_host, BackgroundScorers(load_scorers), device, zero_gpu)
        service.remote_base = remote
        service.load_known_adapters()
        return service

    def load_known_adapters(self) -> None:
        """Load the shipped adapters (by folder name), then those trained here before (oldest first); record what fails."""
        shipped = Path(self.config.adapters_dir)
        runs = Path(self.config.runs_dir)
        found = [(d.name, d, SHIPPED) for d in _subfolders(shipped) if (d / "card.json").is_file()]
        # recover_directory: a run's previous adapter comes back if the page stopped while saving over it
        trained = [(d.name, d / "adapter", UPLOADED if (d / UPLOAD_MARK).is_file() else TRAINED_HERE) for d in _subfolders(runs)
                   if (recover_directory(d / "adapter") / "card.json").is_file()]
        found += sorted(trained, key=lambda item: (item[1] / "card.json").stat().st_mtime)
        for name, directory, source in found:
            try:
                self.add_adapter(name, directory, source)
            except USER_ERRORS as err:  # the page lists it (public), the log names the folder in full
                self.problems.append(self.public(f"{directory}: {err}"))
                log.warning("adapter %s not loaded: %s", directory, err)

    def public(self, text: str, named: Mapping | None = None) -> str:
        """`text` naming no path of the server (public_text)."""
        return public_text(self.config, text, named)

    def add_adapter(self, name: str, directory: Path, source: str) -> AdapterEntry:
        """Load an adapter from one of the playground's own folders under `name`; an uploaded one (now or before a
        restart) only if this playground can use it (_check_uploaded_card). Its errors name the folder in full: each
        caller hands them on public (the problems at start, a run's status, an upload's refusal)."""
        if name in self.adapters:
            raise ServiceError(f"Two adapters are named {name!r}; {directory} was not loaded.")
        card = read_card(directory)
        if source == UPLOADED:
            self._check_uploaded_card(card)
        with self.scheduler.lock:  # not while a decoding step runs on the model
            self.adapter_host.load_adapter(name, directory)
        entry = AdapterEntry(name, card, source, Path(directory), self.sizes)
        self.adapters[name] = entry
        self.adapters_version += 1
        return entry

    # --- facts for the page ------------------------------------------------------------------------------
    @property
    def has_gpu(self) -> bool:
        """Whether the models run on a GPU: this process's device, or ZeroGPU's calls."""
        return self.device.type == "cuda" or self.zero_gpu

    def machine(self) -> str:
        dtype = str(self.base.base_model.dtype).replace("torch.", "")
        if self.zero_gpu:
            return f"ZeroGPU (a GPU lent for each call; {dtype} weights from {machine_name(self.device)})"
        return f"{machine_name(self.device)}, {dtype}"

    def base_label(self) -> str:
        if self.remote_base is not None:
            return f"{self.config.base_api_model} served at {self.config.base_api} (black box, top-{self.config.top_logprobs} log-probabilities)"
        return model_label(self.config.models.base)

    def adapters_for(self, task: str) -> list[AdapterEntry]:
        """The adapters trained for a task: shipped ones first, then those trained here, newest last."""
        entries = [e for e in list(self.adapters.values()) if e.card.task == task]  # a copy: runs add adapters from their thread
        return sorted(entries, key=lambda e: e.source != SHIPPED)

    def default_adapter(self, task: str) -> str | None:
        """The adapter a task's tab starts with: its shipped one, else the newest trained here, else none."""
        entries = self.adapters_for(task)
        shipped = [e for e in entries if e.source == SHIPPED]
        if shipped:
            return shipped[0].name
        return entries[-1].name if entries else None

    def adapter(self, name: str) -> AdapterEntry:
        """The adapter by name; an unknown name is a ServiceError listing the known ones."""
        if name not in self.adapters:
            known = ", ".join(self.adapters) or "none yet (train one in the Training tab)"
            raise ServiceError(f"There is no adapter named {name!r}. Available adapters: {known}.")
        return self.adapters[name]

    def toxicity_backend(self, task: str) -> str | None:
        """The toxicity classifier's label for tasks whose reward uses it, else None."""
        if task not in TOXICITY_TASKS or not getattr(self.scorers, "ready", True):
            return None  # not known before the reward models have loaded
        return self.scorers[task].toxicity_backend_label

    def objective_of(self, name: str) -> Objective | None:
        """The objective the adapter was trained for (its card's), or None for an adapter of one of the six tasks."""
        return objective_of_card(self.adapter(name).card)

    def adapter_task(self, name: str) -> Task:
        """What the adapter was trained for, as a Task: its task, or its objective's (objective_task)."""
        objective = self.objective_of(name)
        return objective_task(objective) if objective else get_task(self.adapter(name).card.task)

    def _objective_scorer(self, name: str):
        with self._objective_scorers_lock:
            if name not in self._objective_scorers:
                # the same settings as the task scorers, so they share the reward models (ipa.tasks.scoring.reward_kit)
                self._objective_scorers[name] = load_objective_scorer(self.objective_of(name), device=str(self.device),
                                                                      fluency_model=self.config.models.fluency_model)
            return self._objective_scorers[name]

    # --- generation ------------------------------------------------------------------------------------
    def check_inputs(self, task: str | Task, inputs: dict) -> dict:
        """The task's inputs, checked: every field given, none longer than max_input_chars."""
        definition = task if isinstance(task, Task) else get_task(task)
        if not isinstance(inputs, dict):
            raise ServiceError(f"Inputs must be a dict with {', '.join(definition.field_names())}.")
        limit = self.config.max_input_chars
        for f in definition.fields:
            value = inputs.get(f.name)
            text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            if isinstance(text, str) and len(text) > limit:
                raise ServiceError(f"The {f.label.lower()} is {len(text):,} characters long; the playground takes at most "
                                   f"{limit:,}. Shorten it and try again.")
        clean = definition.normalize({f.name: inputs.get(f.name) for f in definition.fields})
        return {k: (v if isinstance(v, str) else list(v)) for k, v in clean.items()}

    def generate(self, task: str, inputs: dict, settings: Settings, adapter: str | None = None,
                 more: list[tuple[str, float]] = (), inspect: bool = False) -> Iterator[Generation]:
        """Stream base | base + adapter side by side, token by token; the last update carries the rewards.

        task: one of the six tasks, or CUSTOM_TASK ('custom') with an adapter trained for an objective: the prompt
        is built and the texts scored as that objective says, its blocks as the parts.
        more: further adapters composed with the first, (name, alpha) each, any task's or objective's; both columns
        are then also scored by the reward each was trained for (Generation.also_scored_by: the first of them).
        inspect: record the token inspector's data (each Completion's `steps`; ipa.decoding.inspector).

        Every check happens before the first token, so a bad request fails at once with a ServiceError,
        DecodeError or TaskInputError whose message can be shown as it is.
        """
        entry = self.adapter(adapter) if adapter else None
        definition = self._definition(task, entry, "pick an adapter trained for an objective (the Try your adapters "
                                                   "tab lists them).")
        inputs = self.check_inputs(definition, inputs)
        if not isinstance(settings, Settings):
            raise ServiceError(f"settings must be app.service.Settings, got {type(settings).__name__}.")
        config = settings
        more = self._check_more(entry, more)
        second = self._second_scoring(definition, inputs, more)
        steered, policy = self._policy(entry, config.alpha, more)
        prompt = definition.build_prompt(inputs, self.base.tokenizer)
        columns = ("base", "tailored") if steered else ("base",)
        common = dict(task=task, adapter=entry.name if entry else None, alpha=config.alpha, steered=steered,
                      toxicity_backend=self.toxicity_backend(task), more=list(more), inputs=inputs, settings=settings,
                      also_scored_by=second[0] if second else None)

        run = DecodeRun(policy, [prompt], config, n=settings.n, columns=columns, inspect=inspect)
        update, shown = None, 0.0
        for result in self.scheduler.submit(run):
            if not isinstance(result, DecodeResult):  # still waiting for room in the running batch
                yield Generation(base=[], tailored=[], seed=run.seed, warnings=run.warnings, waiting=result, **common)
                continue
            tailored = result.tailored if steered else _mirror(result.base)
            update = Generation(base=result.base, tailored=tailored, seed=result.seed, warnings=result.warnings, **common)
            if result.done:
                break
            # Every page update costs the server a little: with many users each gets fewer (all text still arrives).
            if time.monotonic() - shown >= STREAM_INTERVAL * max(1, self.scheduler.active):
                shown = time.monotonic()
                yield update

        texts = [c.text for c in update.base] + ([c.text for c in update.tailored] if steered else [])
        scores = self._score_task(task, entry, inputs, texts)
        update.toxicity_backend = self.toxicity_backend(task)
        update.base_scores = scores[: len(update.base)]
        update.tailored_scores = scores[len(update.base):] if steered else [dict(s) for s in update.base_scores]
        if second:
            scores_2 = self._score_second(second, texts)
            update.base_scores_2 = scores_2[: len(update.base)]
            update.tailored_scores_2 = scores_2[len(update.base):] if steered else [dict(s) for s in update.base_scores_2]
        update.done = True
        yield update

    def _score_task(self, task: str, entry: AdapterEntry | None, inputs: dict, texts: list[str]) -> list[dict]:
        """The texts' scores by the task's reward, or for CUSTOM_TASK by the adapter's own objective."""
        if task == CUSTOM_TASK:  # batched with other requests for the same adapter's objective
            return self.score(f"{CUSTOM_TASK}:{entry.name}", [inputs] * len(texts), texts,
                              scorer=self._objective_scorer(entry.name))
        return self.score(task, [inputs] * len(texts), texts)

    # --- composed adapters and branching (the token inspector) --------------------------------------------------
    def _policy(self, entry: AdapterEntry | None, alpha: float, more: list[tuple[str, float]]) -> tuple[bool, TailoredPolicy]:
        """(steered, the policy): the base alone when no adapter is at work (none chosen, or every alpha 0)."""
        steered = entry is not None and (alpha > 0 or any(a > 0 for _, a in more))
        if not steered:
            return False, TailoredPolicy(self.base, remote_base=self.remote_base)
        return True, TailoredPolicy(self.base, self.adapter_host, entry.name, entry.card.combination, self.remote_base,
                                    more_adapters=tuple(more))

    def _check_more(self, entry: AdapterEntry | None, more) -> list[tuple[str, float]]:
        """The composed adapters, checked: known names, alphas in the page's range, the first adapter's combination."""
        more = [] if more is None else list(more)
        if more and entry is None:
            raise ServiceError("A second adapter composes with the first: choose the first adapter too (or choose this "
                               "one as the first).")
        checked = []
        low, high, _ = Settings.LIMITS["alpha"]
        for i, item in enumerate(more, 2):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ServiceError(f"Composed adapters are (name, alpha) pairs, got {item!r}.")
            name, alpha = item
            other = self.adapter(name)
            alpha = check_number(alpha, f"alpha_{i}", low, high, error=ServiceError)
            if other.name == entry.name:
                raise ServiceError(f"Adapter {name!r} is already the first adapter: choose another one as adapter {i}, "
                                   "or raise the first one's alpha.")
            if other.card.combination != entry.card.combination:
                raise ServiceError(f"Adapter {name!r} was trained with the {other.card.combination} combination and "
                                   f"{entry.name!r} with the {entry.card.combination} one: composed adapters must share it.")
            checked.append((other.name, alpha))
        return checked

    def _second_scoring(self, definition: Task, inputs: dict, more: list[tuple[str, float]]) -> tuple | None:
        """(label, batching key, scorer or None for the task's own, inputs) that score the texts by the first composed
        adapter's reward, or None. Its inputs are the tab's: the same field, or the tab's main text for its main field."""
        if not more:
            return None
        name = more[0][0]
        other = self.adapter_task(name)
        try:
            clean = carry_inputs(inputs, definition, other)
        except USER_ERRORS as err:
            raise ServiceError(f"The second adapter {name!r} is scored by what it was trained for ({other.title}), "
                               f"which cannot read this tab's inputs: {err}") from None
        clean = {k: (v if isinstance(v, str) else list(v)) for k, v in clean.items()}
        if self.adapter(name).card.task == CUSTOM_TASK:
            return f"objective {self.objective_of(name).name}", f"{CUSTOM_TASK}:{name}", self._objective_scorer(name), clean
        return other.name, other.name, None, clean

    def _score_second(self, second: tuple, texts: list[str]) -> list[dict]:
        _, key, scorer, inputs = second
        return self.score(key, [inputs] * len(texts), texts, scorer=scorer)

    def branch(self, last: Generation, column: str, sample: int, step: int, token_id: int) -> Branched:
        """Continue sample `sample` (1, 2, ...) of `column` of a finished generation from its step `step` (0 = the
        first new token) with `token_id` there, both columns, scored as the generation was.

        Decoded through the scheduler, as one more request in the shared batch: the scheduler's thread owns the
        models (running the branch here would race its per-row adapters, and holding its lock would stall every
        other user's stream). The same random numbers as the generation's: the token that was chosen gives back
        the same text (ipa.decoding.inspector.branch_run).
        """
        if not isinstance(last, Generation) or not last.done or last.settings is None:
            raise ServiceError("There is no result to branch from yet: press Generate first, then click a token.")
        if column not in ("base", "tailored"):
            raise ServiceError(f"column must be 'base' or 'tailored', got {column!r}.")
        completions = getattr(last, column)
        sample = check_number(sample, "sample", 1, len(completions), whole=True, error=ServiceError)
        completion = completions[sample - 1]
        step = check_number(step, "step", 0, len(completion.token_ids) - 1, whole=True, error=ServiceError)
        vocabulary = len(self.base.tokenizer)
        token_id = check_number(token_id, "token_id", 0, vocabulary - 1, whole=True, error=ServiceError)
        entry, definition, steered, policy, prompt = self._made_of(last)
        result = DecodeResult(last.base, last.tailored if steered else [], seed=last.seed, done=True)
        prefix, run = branch_run(policy, prompt, result, column if steered else "base", sample - 1, step, token_id,
                                 last.settings)
        if run is None:
            branched = ended_branch(policy, prefix, result)
        else:
            final = None
            for update in self.scheduler.submit(run):
                if isinstance(update, DecodeResult) and update.done:
                    final = update
            branched = Branch(prefix, final, self.base.tokenizer)
        texts = {c: branched.text(c if steered else "base") for c in ("base", "tailored")}
        order = ("base", "tailored") if steered else ("base",)
        scores = self._score_task(last.task, entry, last.inputs, [texts[c] for c in order])
        second = self._second_scoring(definition, last.inputs, last.more)
        scores_2 = self._score_second(second, [texts[c] for c in order]) if second else None
        def per_column(values):  # unsteered: one text, shown in both columns
            return None if values is None else {"base": values[0], "tailored": values[-1]}

        return Branched(column=column, sample=sample, step=step, token_id=token_id,
                        token=self.base.tokenizer.decode([token_id]), chosen_id=completion.token_ids[step],
                        texts=texts, scores=per_column(scores), scores_2=per_column(scores_2),
                        also_scored_by=second[0] if second else None)

    def _made_of(self, last: Generation) -> tuple[AdapterEntry | None, Task, bool, TailoredPolicy, str]:
        """What a finished generation was decoded with: (adapter entry, task, steered, policy, prompt)."""
        entry = self.adapter(last.adapter) if last.adapter else None
        definition = self.adapter_task(entry.name) if last.task == CUSTOM_TASK else get_task(last.task)
        steered, policy = self._policy(entry, last.alpha, last.more)
        return entry, definition, steered, policy, definition.build_prompt(last.inputs, self.base.tokenizer)

    def base_steps(self, last: Generation, sample: int) -> Sequence[StepView]:
        """The token inspector's steps of base sample `sample` (1, 2, ...) of a finished generation, whole: a base
        sample is decoded without adapter rows, so what the adapters and the tailored policy make of its text is
        found when asked, by replaying its tokens with the adapters beside them (DecodeRun.replaying), through the
        scheduler as one more request in the shared batch."""
        if not isinstance(last, Generation) or not last.done or last.settings is None:
            raise ServiceError("There is no result to inspect yet: press Generate first, then click a token.")
        sample = check_number(sample, "sample", 1, len(last.base), whole=True, error=ServiceError)
        _, _, steered, policy, prompt = self._made_of(last)
        if not steered:  # no adapter at work: the base's steps are whole already
            raise ServiceError("No adapter steered this result: its base steps have nothing to replay.")
        run = DecodeRun.replaying(policy, [prompt], last.settings, [last.base[sample - 1].token_ids])
        final = None
        for update in self.scheduler.submit(run):
            if isinstance(update, DecodeResult) and update.done:
                final = update
        return final.base[0].steps

    def try_adapter(self, adapter: str, text: str, settings: Settings) -> Iterator[Generation]:
        """Base | base + adapter on one text (the "Try your adapters" tab), scored as the adapter was trained: by its
        task's reward, or by its own objective (block by block). The text fills the task's main field (the text to
        continue, the concepts, the user's message); knowledge_dialogue's passage needs its own tab."""
        task, inputs, name = self.try_inputs(adapter, text, "try it in that task's tab.")
        return self.generate(task, inputs, settings, name)

    def try_inputs(self, adapter: str, text: str, elsewhere: str) -> tuple[str, dict, str]:
        """(task, inputs, adapter name) of one text for an adapter, as "Try your adapters" uses it: the adapter's task
        ('custom' for an objective's), the text in its main field. elsewhere: the message's advice for a task with
        more fields."""
        entry = self.adapter(adapter)
        definition = self.adapter_task(entry.name)
        others = [f.label.lower() for f in definition.fields if f.name != definition.primary_field]
        if others:
            raise ServiceError(f"The adapter {entry.name!r} is for {definition.title}, which also needs a {', '.join(others)}: "
                               f"{elsewhere}")
        return entry.card.task, {definition.primary_field: text}, entry.name

    def _definition(self, task: str, entry: AdapterEntry | None, advice: str) -> Task:
        """The task a request is scored by: a tab's, or for CUSTOM_TASK the objective of the adapter `entry`."""
        if task != CUSTOM_TASK:
            return get_task(task)
        if entry is None or entry.card.task != CUSTOM_TASK:
            raise ServiceError(f"Task {CUSTOM_TASK!r} scores with an adapter's own objective: {advice}")
        return self.adapter_task(entry.name)

    def continuations(self, task: str, inputs: dict, sides: list[tuple[str | None, float | None]],
                      settings: Settings | None = None) -> Continuations:
        """One continuation of the same input from each side, scored: what a blind vote compares (app.classroom).

        sides: (adapter name, alpha) each; None for the base alone; alpha None for the adapter card's. Unlike
        generate's columns, which share their random numbers (so that at alpha 0 they are the same text), each side is
        its own run with its own seed: a vote compares two draws, not two views of one. The runs decode together,
        in the scheduler's shared batch. task: a task of the tabs, or CUSTOM_TASK with the first adapter trained for an
        objective; the texts are scored as generate scores them (the task's reward, or that adapter's objective)."""
        named = [self.adapter(name) for name, _ in sides if name]
        entry = named[0] if named else None
        definition = self._definition(task, entry, "the first side must be an adapter trained for an objective.")
        inputs = self.check_inputs(definition, inputs)
        base = settings or Settings(**{**definition.decode, "n": 1})
        prompt = definition.build_prompt(inputs, self.base.tokenizer)
        runs = []
        for name, alpha in sides:
            side = self.adapter(name) if name else None
            alpha = side.card.alpha if side is not None and alpha is None else (alpha or 0.0)
            config = dataclasses.replace(base, alpha=alpha, seed=None, n=1)  # a seed of its own
            steered, policy = self._policy(side, alpha, [])
            run = DecodeRun(policy, [prompt], config, n=1, columns=("tailored",) if steered else ("base",))
            runs.append((steered, alpha, self.scheduler.submit(run)))  # queued at once: the runs decode together
        texts, alphas = [], []
        for steered, alpha, updates in runs:
            final = None
            for update in updates:
                if isinstance(update, DecodeResult) and update.done:
                    final = update
            texts.append((final.tailored if steered else final.base)[0].text)
            alphas.append(alpha if steered else 0.0)
        scores = self._score_task(task, entry, inputs, texts)
        label = f"objective {self.objective_of(entry.name).name}" if task == CUSTOM_TASK else task
        return Continuations(task, label, inputs, texts, scores, alphas)

    def trial_defaults(self, name: str) -> dict:
        """What "Try your adapters" starts from for an adapter, so that the effect its run measured can show: a text
        like those it was scored on (one of its objective's held-back prompts; a task's first demo, which is not
        offensive as the task's data may be), its card's strength, its training's tokens a sample, and the most
        samples a column the page allows (Settings.n)."""
        entry, definition = self.adapter(name), self.adapter_task(name)
        decode = (entry.card.training or {}).get("decode") or {}
        text = definition.demos[0][definition.primary_field]
        objective = self.objective_of(name)
        if objective is not None:
            own = objective.prompts and objective.prompts not in PROMPT_SETS  # pasted or uploaded: in the run's folder
            try:
                rows = objective_inputs(objective, split="eval", limit=1,
                                        path=str(entry.directory.parent / objective.prompts) if own else None)
                text = rows[0][definition.primary_field]
            except USER_ERRORS:  # its prompts are gone: the demo stays
                pass
        tokens = int(decode.get("max_new_tokens") or DecodeConfig.for_task(definition).max_new_tokens)
        return {"text": ", ".join(text) if isinstance(text, (list, tuple)) else text, "alpha": entry.card.alpha,
                "max_new_tokens": min(tokens, Settings.LIMITS["max_new_tokens"][1]), "n": Settings.LIMITS["n"][1]}

    # --- training ------------------------------------------------------------------------------------
    def training_defaults(self) -> TrainRequest:
        """Defaults for the Training tab: about 2 minutes with a tiny batch on a CPU, 5 minutes on a GPU."""
        if self.has_gpu:
            return TrainRequest(amount=5.0, batch_size=64, group_size=4, eval_prompts=16, lr=1e-4)
        return TrainRequest()

    def _reserve_run_folder(self, names: Callable[[int], str]) -> tuple[str, Path]:
        """A new run folder under runs_dir and its name: the first of names(1), names(2), ... that no adapter has and
        no folder holds, created here, under one lock, so that no two runs (queued together, or an upload beside
        them) can get one name or write into one folder."""
        runs = Path(self.config.runs_dir)
        runs.mkdir(parents=True, exist_ok=True)
        with self._names_lock:
            for k in itertools.count(1):
                name = names(k)
                if name in self.adapters:
                    continue
                try:
                    (runs / name).mkdir()
                except FileExistsError:
                    continue
                return name, runs / name

    @property
    def training_limits(self) -> TrainingLimits:
        """The largest run the page accepts: conservative when others can reach the page (AppConfig.training_limits)."""
        return training_limits(self.config.training_limits, self.config.shared)

    @property
    def job(self) -> TrainingJob | None:
        """The latest training job (queued, running or finished), or None before the first."""
        return self.training.jobs[-1] if self.training.jobs else None

    @_public_errors
    def start_training(self, request: TrainRequest, owner: str | None = None, local: bool = True) -> dict:
        """Queue a run (it starts when the runs ahead of it are done) and return its first snapshot.

        owner: the browser session (one run waiting or running a session; only it may stop the run).
        local: whether the request comes from a browser on this machine (AppConfig.training = 'local' needs it)."""
        if self.config.training == "off":
            raise ServiceError("Training is switched off on this playground; the adapters already here can be used in every tab.")
        if self.config.training == "local" and not local:
            raise ServiceError("On this playground only a browser on the machine it runs on may train adapters; "
                               "the adapters already here can be used in every tab.")
        objective = None
        if request.objective is not None:  # the page's own objective (page_objective), never a file it names
            objective = Objective.from_dict(request.objective)
            if objective.prompts and objective.prompts not in PROMPT_SETS:
                raise ServiceError(f"An objective trained from the page takes one of the prompt sets {', '.join(PROMPT_SETS)}, "
                                   f"not {objective.prompts!r}.")
            for block in objective.blocks:  # a class preference that was never learned fails now, not in the run
                if block.reward == "preference":
                    PreferenceModel.load(block.params["model"])
        else:
            get_task(request.task)
        pasted = pasted_prompts(request.prompts_text, self.config.max_input_chars) if request.prompts_text.strip() else None
        if request.prompts_file:
            if pasted:
                raise ServiceError("Paste prompts or upload a file of them, not both: clear one.")
            pasted = uploaded_prompts(request.prompts_file, self.config.max_input_chars)
        if pasted and objective is None:
            raise ServiceError(f"{'Pasted' if request.prompts_text.strip() else 'Uploaded'} prompts are for your own "
                               "objective: a task trains on its own data.")
        request.check(self.training_limits)  # before a folder is made
        stem = f"{objective.name if objective else request.task}-{request.algo}"
        name, run_dir = self._reserve_run_folder(lambda k: f"{stem}-{k}")
        preset = self.config.models
        approx = preset.adapter_model if preset.adapter_model != preset.base else ""
        # On a ZeroGPU Space the run's chunks train inside GPU calls (ZeroGpuTrain): "auto" finds the GPU there.
        device = "auto" if self.zero_gpu else str(self.device)
        objective_file = run_dir / "objective.json"
        try:
            if objective:
                if pasted:  # beside objective.json, which names it (a relative file is read from the objective's folder)
                    objective = dataclasses.replace(objective, prompts=write_prompts(run_dir, pasted))
                objective.save(objective_file)
            config = request.to_config(out=str(run_dir), name=name, device=device, base=preset.base, approx_base=approx,
                                       limits=self.training_limits, objective_file=str(objective_file) if objective else "")
            try:  # fail now, not in the thread, when the training data is missing
                if pasted:  # both parts of the split must hold prompts
                    for split in ("train", "eval"):
                        objective_inputs(load_objective(objective_file), split=split, limit=1)
                elif objective:
                    objective_inputs(objective, split="train", limit=1)
                else:
                    load_inputs(request.task, None, split="train", limit=1)
            except DataError as err:
                if pasted:  # the server's folders are not the user's business
                    mine = f"Your uploaded prompts ({Path(request.prompts_file).name})" if request.prompts_file else "Your pasted prompts"
                    raise ServiceError(self.public(str(err), {run_dir / objective.prompts: mine})) from None
                raise ServiceError(f"There is no training data for this {'objective' if objective else 'task'} on this machine "
                                   f"({err}) Point $IPA_DATA_DIR at the project's data folder.") from None
            return self.training.submit(TrainingJob(name=name, request=request, config=config, owner=owner))
        except BaseException:  # nothing was queued: the reserved folder goes
            shutil.rmtree(run_dir, ignore_errors=True)
            raise

    def _training_finished(self, job: TrainingJob, adapter_dir: Path) -> None:
        self.add_adapter(job.name, adapter_dir, TRAINED_HERE)

    def _run_removed(self, name: str) -> None:
        """A run removed for the disk budget: its adapter leaves the playground."""
        entry = self.adapters.get(name)
        if entry is None or entry.source == SHIPPED:
            return
        with self.scheduler.lock:  # not while a decoding step runs on the model
            self.adapter_host.delete_adapter(name)
        del self.adapters[name]
        with self._objective_scorers_lock:  # a later adapter of this name may have another objective
            self._objective_scorers.pop(name, None)
        self.adapters_version += 1

    def stop_training(self, owner: str | None = None) -> dict:
        """Stop this session's run: a waiting one leaves the queue; a running one stops within seconds, then
        evaluates and saves what it has learned."""
        return self.training.stop(owner)

    def training_status(self, owner: str | None = None) -> dict:
        """This session's latest run, else the running one, else the last; {'state': 'idle'} before the first."""
        return self._public_status(self.training.status(owner))

    def _public_status(self, status: dict) -> dict:
        """A run's snapshot as it leaves the playground: its error (a run's failure quotes what failed) public."""
        return {**status, "error": self.public(status["error"])} if status.get("error") else status

    # --- adapter files: download, delete, upload ------------------------------------------------------------
    def _check_may_change_adapters(self, local: bool) -> None:
        """Deleting and uploading adapters follow the training access rule (AppConfig.training)."""
        if self.config.training == "off":
            raise ServiceError("Adapters cannot be added or removed on this playground; the ones here can be used in every tab.")
        if self.config.training == "local" and not local:
            raise ServiceError("On this playground only a browser on the machine it runs on may add or remove adapters.")

    @_public_errors
    def adapter_zip(self, name: str, out_dir: Path) -> Path:
        """A zip of the adapter's safetensors and card (any adapter: shipped, trained here or uploaded), naming no
        path of the server (its JSON through app.paths.public_json)."""
        from app.adapter_files import adapter_zip

        entry = self.adapter(name)
        return adapter_zip(entry.directory, Path(out_dir), entry.name, playground_folders(self.config))

    @_public_errors
    def delete_adapter(self, name: str, local: bool = True) -> None:
        """Remove an adapter trained or uploaded here, with its run folder; shipped adapters stay."""
        self._check_may_change_adapters(local)
        entry = self.adapter(name)
        if entry.source == SHIPPED:
            raise ServiceError(f"{name!r} is a shipped adapter: only adapters trained or uploaded here can be deleted.")
        if any(job.name == name and job.active for job in self.training.jobs):
            raise ServiceError(f"{name!r} is still training: stop the run first.")
        self._run_removed(name)
        shutil.rmtree(Path(self.config.runs_dir) / name, ignore_errors=True)

    @_public_errors
    def upload_adapter(self, zip_path: str | Path, local: bool = True) -> AdapterEntry:
        """Load an adapter zip made by this project (app.adapter_files checks it) into runs_dir under a new name.

        Refused with one message: not a zip, over the size limit, a file that is not JSON or safetensors, a path
        outside its folder, no card, a card with a field that is not valid (AdapterCard.check: types, ranges, known
        values, lengths), or one this playground cannot use (_check_uploaded_card: another base model, a task it does
        not have, an objective it cannot score)."""
        from app.adapter_files import AdapterZipError, unpack_adapter_zip

        self._check_may_change_adapters(local)
        zip_path = Path(zip_path)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", zip_path.stem).strip("-.")[:48] or "adapter"
        name, run_dir = self._reserve_run_folder(lambda k: stem if k == 1 else f"{stem}-{k}")
        try:
            unpack_adapter_zip(zip_path, run_dir / "adapter")
            (run_dir / UPLOAD_MARK).write_text("")
            return self.add_adapter(name, run_dir / "adapter", UPLOADED)
        except UserError as err:
            shutil.rmtree(run_dir, ignore_errors=True)
            reason = self.public(str(err), {run_dir / "adapter": "the zip"})  # the server's folders are not the user's business
            raise AdapterZipError(f"The adapter zip was refused: {reason}") from None

    def _check_uploaded_card(self, card: AdapterCard) -> None:
        """What an uploaded card must say besides being a card (read_card checked every field): made by this project
        (its model's fingerprint) to steer this playground's base model; for one of its tasks with no objective, or
        for an objective (task 'custom') it can score: its blocks valid (ipa.rewards.objective: the same limits as the
        page's), its prompts a prompt set or a file named relative to it; trained at an alpha the page's slider has.
        Checked on upload and again when the playground starts (add_adapter: the rules may have changed since)."""
        if card.base_model != self.config.models.base:
            raise ServiceError(f"The adapter was trained to steer {model_label(card.base_model)}, but this "
                               f"playground's base model is {model_label(self.config.models.base)}.")
        if not card.init_fingerprint:
            raise ServiceError("The adapter's card has no fingerprint of its model: it was not made by this project.")
        if card.task == CUSTOM_TASK:
            if not card.objective:
                raise ServiceError(f"The adapter's card says task {CUSTOM_TASK!r} (an objective's) but holds no objective.")
            try:  # the page's blocks only: this playground loads no reward module
                objective = Objective.from_dict(card.objective)
            except ObjectiveError as err:
                raise ServiceError(f"The adapter's objective cannot be scored here: {err}") from None
            source = objective.prompts.removeprefix("hub:")
            where = Path(source.replace("\\", "/"))
            if objective.prompts not in PROMPT_SETS and (where.is_absolute() or ".." in where.parts or ":" in source
                                                         or source.startswith("~")):
                raise ServiceError(f"The adapter's objective reads its prompts from {quote(objective.prompts)}, outside the "
                                   f"objective's folder: a card names a prompt set ({', '.join(PROMPT_SETS)}) or a file beside "
                                   "its objective.")
        elif card.task not in TASKS:
            raise ServiceError(f"The adapter was trained for the task {quote(card.task)}, which this playground does not have: "
                               f"it has {', '.join(TASKS)}, and {CUSTOM_TASK!r} for an adapter of your own objective.")
        elif card.objective:
            raise ServiceError(f"The adapter's card is for the task {card.task!r} but also holds an objective: one or the other.")
        low, high, _ = Settings.LIMITS["alpha"]
        check_number(card.alpha, "The adapter's alpha", low, high, error=ServiceError)

    def close(self, timeout: float = 120.0) -> None:
        """Stop the decoding thread and the training queue, and wait for a running job (tests and shutdown)."""
        self.scheduler.close()
        self.training.close(timeout)
        for close in self.on_close:
            close()
