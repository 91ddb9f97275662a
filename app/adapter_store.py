"""The playground's adapters by name: the store that knows them, loads them, and adds or removes them.

Adapters are only ever picked by name from the playground's two folders, never from a path a user typed, and only
JSON and safetensors are read: the shipped ones (AppConfig.adapters_dir, by folder name) and those trained or
uploaded here (AppConfig.runs_dir, one run folder each). Who may add or remove them, by training, uploading or
deleting, is one rule (AdapterStore.check_may_change, AppConfig.training).

    >>> store = AdapterStore(AppConfig(warm_up=False), adapter_host, model_lock)     # doctest: +SKIP
    >>> store.load_known_adapters()                                                   # doctest: +SKIP
    >>> store.default_adapter("toxicity"), store.adapter("toxicity").source           # doctest: +SKIP
    ('toxicity', 'shipped')

Paths: what the store hands out names no path of the server (app.paths' rule, applied by public_text): the errors of
its requests, the problems found at start and the files of a downloaded zip name files relative to the playground's
folders (runs/playground/sentiment-pg-4/adapter).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ipa.errors import UserError, check_number, quote
from ipa.files import recover_directory
from ipa.models import model_label
from ipa.policy_adapter import AdapterCard, AdapterHost, read_card
from ipa.rewards.objective import Objective, ObjectiveError
from ipa.tasks import TASKS, Task, get_task
from ipa.tasks.data import data_dir
from ipa.tasks.objective import CUSTOM_TASK, PROMPT_SETS, objective_of_card, objective_task
from app.config import REPO_ROOT, AppConfig, ServiceError
from app.paths import folder_names, public_paths
from app.settings import Settings

log = logging.getLogger("ipa.service")

SHIPPED, TRAINED_HERE, UPLOADED = "shipped", "trained here", "uploaded"
UPLOAD_MARK = "uploaded"
"""A file in a run folder of runs_dir that says its adapter was uploaded, not trained here."""
CHANGES = {"train": "trained", "add or remove": "added or removed"}
"""The ways adapters change here (check_may_change's `action`), and how the refusal words each."""


@dataclass
class AdapterEntry:
    """An adapter the playground can use, by name."""

    name: str
    card: AdapterCard
    source: str
    """'shipped' (adapters_dir), 'trained here' or 'uploaded' (both in runs_dir)."""
    directory: Path
    sizes: str = ""
    """The models' sizes (AdapterStore.sizes): 'LoRA on the 135M base itself'."""


def public_text(config: AppConfig, text: str, named: Mapping | None = None) -> str:
    """`text` as it may leave the playground, naming no path of the server (app.paths.public_paths): a path in the
    playground's folders (runs_dir, adapters_dir, the data folder, the repository) from the folder on, the folder by
    its place in the repository (else its name); `named` paths by the name given (an upload's folder: "the zip");
    any other absolute path by its last part."""
    return public_paths(text, {**playground_folders(config), **(named or {})})


def playground_folders(config: AppConfig) -> dict[str, str]:
    """The playground's folders -> the names they are shown by (app.paths.folder_names)."""
    return folder_names((config.runs_dir, config.adapters_dir, data_dir()), REPO_ROOT)


def public_errors(method):
    """A method of a part of the playground (one with a `config`) whose user errors leave it naming no path of the
    server: the same exception, its message rewritten by public_text."""
    @functools.wraps(method)
    def with_public_errors(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except UserError as err:
            err.args = (public_text(self.config, str(err)),)
            raise

    return with_public_errors


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


class AdapterStore:
    """The adapters the playground can use, by name (AdapterEntry): loaded on `adapter_host` from the playground's
    folders, listed for the page, downloaded, added (trained or uploaded here) and removed."""

    def __init__(self, config: AppConfig, adapter_host: AdapterHost | None, model_lock: threading.Lock, sizes: str = ""):
        self.config = config
        self.adapter_host = adapter_host
        self.model_lock = model_lock
        """Held while an adapter is loaded or deleted: not while a decoding step runs on the model (the scheduler's)."""
        self.sizes = sizes
        """What the page says of the models' sizes wherever it names an adapter: 'LoRA on the 135M base itself'."""
        self.adapters: dict[str, AdapterEntry] = {}
        self.adapters_version = 0
        """Grows whenever an adapter is added, so the page knows when to refresh its choices."""
        self.problems: list[str] = []
        """Adapters that could not be loaded at start (shown in the page)."""
        self.in_use: Callable[[str], bool] = lambda name: False
        """Whether a run is still making the adapter of this name (queued or training): then it cannot be deleted."""
        self.on_removed: list[Callable[[str], None]] = []
        """What else forgets an adapter when it leaves (its objective's scorer)."""
        self._names_lock = threading.Lock()
        """Held while a run folder is reserved (reserve_run_folder)."""
        self._loading: dict[str, threading.Event] = {}
        """Adapters listed but whose weights are not in the model yet (load_known_adapters(later=True)), each set once
        its weights are in, or its loading failed (then in _failed)."""
        self._unstarted: list[str] = []
        """Adapters listed whose loading load_pending has not started yet."""
        self._failed: dict[str, str] = {}
        """Adapters whose weights could not be loaded after they were listed -> why (public)."""

    def load_known_adapters(self, later: bool = False) -> None:
        """Load the shipped adapters (by folder name), then those trained here before (oldest first); record what fails.

        later: only list them now, from their cards (the page is built from the list), and leave their weights to
        load_pending, which puts them into the model on a background thread: injecting them takes seconds at start
        (about 0.6 s each on 2 cores). Whatever decodes with an adapter waits for its weights (wait_loaded)."""
        shipped = Path(self.config.adapters_dir)
        runs = Path(self.config.runs_dir)
        found = [(d.name, d, SHIPPED) for d in _subfolders(shipped) if (d / "card.json").is_file()]
        # recover_directory: a run's previous adapter comes back if the page stopped while saving over it
        trained = [(d.name, d / "adapter", UPLOADED if (d / UPLOAD_MARK).is_file() else TRAINED_HERE) for d in _subfolders(runs)
                   if (recover_directory(d / "adapter") / "card.json").is_file()]
        found += sorted(trained, key=lambda item: (item[1] / "card.json").stat().st_mtime)
        for name, directory, source in found:
            try:
                self.add_adapter(name, directory, source, later=later)
            except UserError as err:  # the page lists it (public), the log names the folder in full
                self.problems.append(self.public(f"{directory}: {err}"))
                log.warning("adapter %s not loaded: %s", directory, err)

    def public(self, text: str, named: Mapping | None = None) -> str:
        """`text` naming no path of the server (public_text)."""
        return public_text(self.config, text, named)

    def add_adapter(self, name: str, directory: Path, source: str, later: bool = False) -> AdapterEntry:
        """Load an adapter from one of the playground's own folders under `name`; an uploaded one (now or before a
        restart) only if this playground can use it (_check_uploaded_card). Its errors name the folder in full: each
        caller hands them on public (the problems at start, a run's status, an upload's refusal).

        later: list it now (its card read and checked) and leave its weights to load_pending."""
        if name in self.adapters:
            raise ServiceError(f"Two adapters are named {name!r}; {directory} was not loaded.")
        card = read_card(directory)
        if source == UPLOADED:
            self._check_uploaded_card(card)
        if later:
            self._loading[name] = threading.Event()
            self._unstarted.append(name)
        else:
            with self.model_lock:  # not while a decoding step runs on the model
                self.adapter_host.load_adapter(name, directory)
        entry = AdapterEntry(name, card, source, Path(directory), self.sizes)
        self.adapters[name] = entry
        self.adapters_version += 1
        return entry

    def load_pending(self) -> threading.Thread | None:
        """Put the weights of the adapters listed by load_known_adapters(later=True) into the model, one after another
        on a background thread: each tab's default adapter first (the first tab's first), then the others. Each goes
        in whole under the model lock, as a trained or uploaded adapter does (add_adapter), so a decoding step never
        sees one half in. One that fails leaves the list with its reason among the problems (as at start), and
        whoever waits for it gets that reason. The thread, or None when nothing is pending."""
        defaults = [self.default_adapter(task) for task in TASKS]
        pending, self._unstarted = self._unstarted, []
        order = [n for n in defaults if n in pending] + [n for n in pending if n not in defaults]
        if not order:
            return None
        thread = threading.Thread(target=self._load_pending, args=(order,), name="load-adapters", daemon=True)
        thread.start()
        return thread

    def _load_pending(self, names: list[str]) -> None:
        started = time.perf_counter()
        for name in names:
            entry = self.adapters.get(name)
            try:
                if entry is None:
                    raise ServiceError(f"The adapter {name!r} left before its weights were loaded.")
                with self.model_lock:  # not while a decoding step runs on the model
                    self.adapter_host.load_adapter(name, entry.directory)
            except BaseException as err:  # noqa: BLE001 - told to whoever waits for it, and in the page's problems
                where = entry.directory if entry is not None else name
                if isinstance(err, UserError):
                    log.warning("adapter %s not loaded: %s", where, err)
                else:
                    log.exception("adapter %s not loaded", where)
                reason = self.public(f"{where}: {err}")
                self._failed[name] = reason
                self.problems.append(reason)
                if self.adapters.pop(name, None) is not None:
                    self.adapters_version += 1
            finally:
                self._loading.pop(name).set()
        log.info("%d adapters loaded behind the page in %.1f s", len(names), time.perf_counter() - started)

    def loading(self, names) -> list[str]:
        """Those of `names` whose weights are not in the model yet (load_pending)."""
        return [n for n in names if n in self._loading]

    def wait_loaded(self, names, timeout: float | None = None) -> bool:
        """Wait until the weights of the adapters `names` are in the model (load_pending; at once for those loaded
        already). False when `timeout` seconds passed first; a ServiceError when one of them could not be loaded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for name in names:
            event = self._loading.get(name)
            if event is not None and not event.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                return False
            if name in self._failed:
                raise ServiceError(f"The adapter {name!r} could not be loaded: {self._failed[name]}")
        return True

    def remove_adapter(self, name: str) -> None:
        """The adapter of a run folder leaves the playground (its run deleted, or removed for the disk budget);
        shipped adapters stay."""
        entry = self.adapters.get(name)
        if entry is None or entry.source == SHIPPED:
            return
        try:
            self.wait_loaded([name])  # its weights are in the model before they leave it
        except ServiceError:
            return  # they never went in: it left the list then
        with self.model_lock:  # not while a decoding step runs on the model
            self.adapter_host.delete_adapter(name)
        del self.adapters[name]
        for forget in self.on_removed:  # a later adapter of this name may have another objective
            forget(name)
        self.adapters_version += 1

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

    def objective_of(self, name: str) -> Objective | None:
        """The objective the adapter was trained for (its card's), or None for an adapter of one of the six tasks."""
        return objective_of_card(self.adapter(name).card)

    def adapter_task(self, name: str) -> Task:
        """What the adapter was trained for, as a Task: its task, or its objective's (objective_task)."""
        objective = self.objective_of(name)
        return objective_task(objective) if objective else get_task(self.adapter(name).card.task)

    def reserve_run_folder(self, names: Callable[[int], str]) -> tuple[str, Path]:
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

    # --- who may change them; adapter files: download, delete, upload --------------------------------------------
    def check_may_change(self, local: bool, action: str = "add or remove") -> None:
        """The one rule for who may change this playground's adapters, by training, uploading or deleting them
        (AppConfig.training): anyone ('open'), a browser on the machine it runs on ('local'), or no one ('off').

        local: whether the request comes from a browser on this machine (app.widgets.local_browser).
        action: 'train' or 'add or remove', as the refusal words it (CHANGES)."""
        if self.config.training == "off":
            raise ServiceError(f"Adapters cannot be {CHANGES[action]} on this playground: its training is switched off; "
                               "the adapters already here can be used in every tab.")
        if self.config.training == "local" and not local:
            raise ServiceError(f"On this playground only a browser on the machine it runs on may {action} adapters; "
                               "the adapters already here can be used in every tab.")

    @public_errors
    def adapter_zip(self, name: str, out_dir: Path) -> Path:
        """A zip of the adapter's safetensors and card (any adapter: shipped, trained here or uploaded), naming no
        path of the server (its JSON through app.paths.public_json)."""
        from app.adapter_files import adapter_zip

        entry = self.adapter(name)
        return adapter_zip(entry.directory, Path(out_dir), entry.name, playground_folders(self.config))

    @public_errors
    def delete_adapter(self, name: str, local: bool = True) -> None:
        """Remove an adapter trained or uploaded here, with its run folder; shipped adapters stay."""
        self.check_may_change(local)
        entry = self.adapter(name)
        if entry.source == SHIPPED:
            raise ServiceError(f"{name!r} is a shipped adapter: only adapters trained or uploaded here can be deleted.")
        if self.in_use(name):
            raise ServiceError(f"{name!r} is still training: stop the run first.")
        self.remove_adapter(name)
        shutil.rmtree(Path(self.config.runs_dir) / name, ignore_errors=True)

    @public_errors
    def upload_adapter(self, zip_path: str | Path, local: bool = True) -> AdapterEntry:
        """Load an adapter zip made by this project (app.adapter_files checks it) into runs_dir under a new name.

        Refused with one message: not a zip, over the size limit, a file that is not JSON or safetensors, a path
        outside its folder, no card, a card with a field that is not valid (AdapterCard.check: types, ranges, known
        values, lengths), or one this playground cannot use (_check_uploaded_card: another base model, a task it does
        not have, an objective it cannot score)."""
        from app.adapter_files import AdapterZipError, unpack_adapter_zip

        self.check_may_change(local)
        zip_path = Path(zip_path)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", zip_path.stem).strip("-.")[:48] or "adapter"
        name, run_dir = self.reserve_run_folder(lambda k: stem if k == 1 else f"{stem}-{k}")
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
        if card.base_model != self.config.models.chosen.base:
            raise ServiceError(f"The adapter was trained to steer {model_label(card.base_model)}, but this "
                               f"playground's base model is {model_label(self.config.models.chosen.base)}.")
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

