"""Generation: base | base + adapter side by side, streamed token by token and scored; branching from a token of a
result (the token inspector), composed adapters, one text for an adapter (Try your adapters) and the continuations a
blind vote compares (app.classroom).

    >>> generator = Generator(config, base, base, scheduler, BatchedScorer(scorers), store, "cpu")   # doctest: +SKIP
    >>> for update in generator.generate("toxicity", {"text": "The fans yelled"}, Settings(max_new_tokens=8),
    ...                                  adapter="toxicity"):                                 # doctest: +SKIP
    ...     pass
    >>> update.base[0].text, update.tailored[0].text, update.tailored_scores[0]["reward"]   # doctest: +SKIP

Threads: one scheduler thread owns the models and decodes every user's request together, one step at a time
(app/scheduler.py: continuous batching); each user's thread waits for its own request's tokens. Rewards of
requests that finish together are scored in one batch (app.scheduler.BatchedScorer).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Callable, Iterator

from ipa.errors import UserError, check_number
from ipa.decoding.inspection import StepView
from ipa.decoding.inspector import Branch, branch_run, ended_branch
from ipa.decoding.run import Completion, DecodeConfig, DecodeResult, DecodeRun, TailoredPolicy
from ipa.tasks import TASKS, Task, carry_inputs, get_task
from ipa.tasks.objective import CUSTOM_TASK, PROMPT_SETS, load_objective_scorer, objective_inputs
from ipa.policy_adapter import AdapterHost
from app.adapter_store import AdapterEntry, AdapterStore
from app.config import AppConfig, ServiceError
from app.scheduler import BatchedScorer, Scheduler
from app.settings import Settings

STREAM_INTERVAL = 0.04
"""Seconds between two streamed updates of one request, per request decoding at the same time (one user: every
token; sixteen: about 1.5 updates a second)."""
TOXICITY_TASKS = tuple(name for name, task in TASKS.items() if task.uses_toxicity)
"""Tasks whose reward uses the toxicity classifier (the page names its backend): toxicity, dialogue_safety."""


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
    """The request as checked (for branching from the result: Generator.branch)."""


@dataclass
class Branched:
    """A result continued from one step with another token (Generator.branch): both columns' whole texts, scored."""

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
    """One continuation of one input from each side of a comparison (Generator.continuations), in the sides' order."""

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


def _mirror(completions: list[Completion]) -> list[Completion]:
    # Without an adapter the tailored policy *is* the base: show the same samples, labelled as tailored.
    return [dataclasses.replace(c, policy="tailored") for c in completions]


class Generator:
    """Everything the page decodes, through the scheduler's shared batch, and scores: by each task's scorer, or by an
    adapter's own objective (its scorer loaded on first use)."""

    def __init__(self, config: AppConfig, base: AdapterHost, adapter_host: AdapterHost, scheduler: Scheduler,
                 score: BatchedScorer, store: AdapterStore, device, remote_base=None):
        self.config = config
        self.base = base
        self.adapter_host = adapter_host
        self.scheduler = scheduler
        self.score = score
        """The task scorers, batched across requests (their `scorers`: task name -> scorer)."""
        self.store = store
        self.device = device
        self.remote_base = remote_base
        """The black-box base behind an API (AppConfig.api), or None for the local base."""
        self._objective_scorers: dict[str, Callable] = {}
        """Adapter name -> the scorer of its objective (adapters trained for an objective), loaded on first use."""
        self._objective_scorers_lock = threading.Lock()
        store.on_removed.append(self.forget)

    def toxicity_backend(self, task: str) -> str | None:
        """The toxicity classifier's label for tasks whose reward uses it, else None."""
        if task not in TOXICITY_TASKS or not getattr(self.score.scorers, "ready", True):
            return None  # not known before the reward models have loaded
        return self.score.scorers[task].toxicity_backend_label

    def _objective_scorer(self, name: str):
        with self._objective_scorers_lock:
            if name not in self._objective_scorers:
                # the same settings as the task scorers, so they share the reward models (ipa.tasks.scoring.reward_kit)
                self._objective_scorers[name] = load_objective_scorer(self.store.objective_of(name), device=str(self.device),
                                                                      fluency_model=self.config.models.chosen.fluency_model)
            return self._objective_scorers[name]

    def forget(self, name: str) -> None:
        """An adapter left the store: drop its objective's scorer (a later adapter of this name may have another)."""
        with self._objective_scorers_lock:
            self._objective_scorers.pop(name, None)

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
        entry = self.store.adapter(adapter) if adapter else None
        definition = self._definition(task, entry, "pick an adapter trained for an objective (the Try your adapters "
                                                   "tab lists them).")
        inputs = self.check_inputs(definition, inputs)
        if not isinstance(settings, Settings):
            raise ServiceError(f"settings must be app.settings.Settings, got {type(settings).__name__}.")
        config = settings
        more = self._check_more(entry, more)
        second = self._second_scoring(definition, inputs, more)
        names = [entry.name, *(name for name, _ in more)] if self._steers(entry, config.alpha, more) else []
        if not self.store.wait_loaded(names, timeout=0.5):  # the playground has just started: said while it waits
            note = (f"The playground has just started and is still loading the adapter{'s' * (len(names) > 1)} "
                    f"{', '.join(map(repr, names))}: yours starts as soon as {'they are' if len(names) > 1 else 'it is'} in.")
            while True:
                yield Generation(task=task, adapter=entry.name, alpha=config.alpha, steered=True, base=[], tailored=[],
                                 seed=settings.seed or 0, warnings=[note], more=list(more), inputs=inputs,
                                 settings=settings)
                if self.store.wait_loaded(names, timeout=5.0):
                    break
        steered, policy = self._policy(entry, config.alpha, more)
        prompt = definition.build_prompt(inputs, self.base.tokenizer)
        columns = ("base", "tailored") if steered else ("base",)
        common = dict(task=task, adapter=entry.name if entry else None, alpha=config.alpha, steered=steered,
                      toxicity_backend=self.toxicity_backend(task), more=list(more), inputs=inputs, settings=settings,
                      also_scored_by=second[0] if second else None)

        run = DecodeRun(policy, [prompt], config, n=settings.n, columns=columns, inspect=inspect)
        update = None
        # Every page update costs the server a little: with many users each gets fewer (all text still arrives).
        for result in self.scheduler.submit(run, every=STREAM_INTERVAL):
            if not isinstance(result, DecodeResult):  # still waiting for room in the running batch
                yield Generation(base=[], tailored=[], seed=run.seed, warnings=run.warnings, waiting=result, **common)
                continue
            tailored = result.tailored if steered else _mirror(result.base)
            update = Generation(base=result.base, tailored=tailored, seed=result.seed, warnings=result.warnings, **common)
            if result.done:
                break
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

    def _score_task(self, task: str, entry: AdapterEntry | None, inputs: dict, texts: list[str],
                    background: bool = False) -> list[dict]:
        """The texts' scores by the task's reward, or for CUSTOM_TASK by the adapter's own objective (background:
        after the interactive requests' texts, BatchedScorer)."""
        if task == CUSTOM_TASK:  # batched with other requests for the same adapter's objective
            return self.score(f"{CUSTOM_TASK}:{entry.name}", [inputs] * len(texts), texts,
                              scorer=self._objective_scorer(entry.name), background=background)
        return self.score(task, [inputs] * len(texts), texts, background=background)

    # --- composed adapters and branching (the token inspector) --------------------------------------------------
    def _policy(self, entry: AdapterEntry | None, alpha: float, more: list[tuple[str, float]]) -> tuple[bool, TailoredPolicy]:
        """(steered, the policy): the base alone when no adapter is at work (none chosen, or every alpha 0)."""
        if not self._steers(entry, alpha, more):
            return False, TailoredPolicy(self.base, remote_base=self.remote_base)
        self.store.wait_loaded([entry.name, *(name for name, _ in more)])  # at start, their weights load behind the page
        return True, TailoredPolicy(self.base, self.adapter_host, entry.name, entry.card.combination, self.remote_base,
                                    more_adapters=tuple(more))

    @staticmethod
    def _steers(entry: AdapterEntry | None, alpha: float, more: list[tuple[str, float]]) -> bool:
        return entry is not None and (alpha > 0 or any(a > 0 for _, a in more))

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
            other = self.store.adapter(name)
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
        other = self.store.adapter_task(name)
        try:
            clean = carry_inputs(inputs, definition, other)
        except UserError as err:
            raise ServiceError(f"The second adapter {name!r} is scored by what it was trained for ({other.title}), "
                               f"which cannot read this tab's inputs: {err}") from None
        clean = {k: (v if isinstance(v, str) else list(v)) for k, v in clean.items()}
        if self.store.adapter(name).card.task == CUSTOM_TASK:
            return f"objective {self.store.objective_of(name).name}", f"{CUSTOM_TASK}:{name}", self._objective_scorer(name), clean
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
            for update in self.scheduler.submit(run, every=math.inf):
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
        entry = self.store.adapter(last.adapter) if last.adapter else None
        definition = self.store.adapter_task(entry.name) if last.task == CUSTOM_TASK else get_task(last.task)
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
        for update in self.scheduler.submit(run, every=math.inf):
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
        entry = self.store.adapter(adapter)
        definition = self.store.adapter_task(entry.name)
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
        return self.store.adapter_task(entry.name)

    def continuations(self, task: str, inputs: dict, sides: list[tuple[str | None, float | None]],
                      settings: Settings | None = None) -> Continuations:
        """One continuation of the same input from each side, scored: what a blind vote compares (app.classroom).

        sides: (adapter name, alpha) each; None for the base alone; alpha None for the adapter card's. Unlike
        generate's columns, which share their random numbers (so that at alpha 0 they are the same text), each side is
        its own run with its own seed: a vote compares two draws, not two views of one. The runs decode together,
        in the scheduler's shared batch, as background work (a Generate goes first: AppConfig.background_rows). task: a task of the tabs, or CUSTOM_TASK with the first adapter trained for an
        objective; the texts are scored as generate scores them (the task's reward, or that adapter's objective)."""
        named = [self.store.adapter(name) for name, _ in sides if name]
        entry = named[0] if named else None
        definition = self._definition(task, entry, "the first side must be an adapter trained for an objective.")
        inputs = self.check_inputs(definition, inputs)
        base = settings or Settings(**{**definition.decode, "n": 1})
        prompt = definition.build_prompt(inputs, self.base.tokenizer)
        runs = []
        for name, alpha in sides:
            side = self.store.adapter(name) if name else None
            alpha = side.card.alpha if side is not None and alpha is None else (alpha or 0.0)
            config = dataclasses.replace(base, alpha=alpha, seed=None, n=1)  # a seed of its own
            steered, policy = self._policy(side, alpha, [])
            run = DecodeRun(policy, [prompt], config, n=1, columns=("tailored",) if steered else ("base",))
            runs.append((steered, alpha, self.scheduler.submit(run, every=math.inf, background=True)))  # decode together
        texts, alphas = [], []
        for steered, alpha, updates in runs:
            final = None
            for update in updates:
                if isinstance(update, DecodeResult) and update.done:
                    final = update
            texts.append((final.tailored if steered else final.base)[0].text)
            alphas.append(alpha if steered else 0.0)
        scores = self._score_task(task, entry, inputs, texts, background=True)
        label = f"objective {self.store.objective_of(entry.name).name}" if task == CUSTOM_TASK else task
        return Continuations(task, label, inputs, texts, scores, alphas)

    def trial_defaults(self, name: str) -> dict:
        """What "Try your adapters" starts from for an adapter, so that the effect its run measured can show: a text
        like those it was scored on (one of its objective's held-back prompts; a task's first demo, which is not
        offensive as the task's data may be), its card's strength, its training's tokens a sample, and the most
        samples a column the page allows (Settings.n)."""
        entry, definition = self.store.adapter(name), self.store.adapter_task(name)
        decode = (entry.card.training or {}).get("decode") or {}
        text = definition.demos[0][definition.primary_field]
        objective = self.store.objective_of(name)
        if objective is not None:
            own = objective.prompts and objective.prompts not in PROMPT_SETS  # pasted or uploaded: in the run's folder
            try:
                rows = objective_inputs(objective, split="eval", limit=1,
                                        path=str(entry.directory.parent / objective.prompts) if own else None)
                text = rows[0][definition.primary_field]
            except UserError:  # its prompts are gone: the demo stays
                pass
        tokens = int(decode.get("max_new_tokens") or DecodeConfig.for_task(definition).max_new_tokens)
        return {"text": ", ".join(text) if isinstance(text, (list, tuple)) else text, "alpha": entry.card.alpha,
                "max_new_tokens": min(tokens, Settings.LIMITS["max_new_tokens"][1]), "n": Settings.LIMITS["n"][1]}
