"""Task scorers: each task's reward, with the parts it is made of, for a batch of (inputs, completion).

    >>> scorer = load_scorer("commongen")                                                  # doctest: +SKIP
    >>> scorer([{"concepts": "dog frisbee catch"}], ["The dog caught the frisbee."])       # doctest: +SKIP
    [{'reward': 0.87, 'coverage': 1.0, 'once_coverage': 1.0, 'finished': 1.0, 'fluency': 0.87}]

A task's reward is an objective of reward blocks, declared in its module (ipa/tasks/<task>.py: TASK.blocks) and
scored by the engine that scores users' objectives (ipa.rewards.objective.score): every block's reward instance
comes from the RewardKit, so the tasks and the objectives share one set of models. The rewards (all in [0, 1],
higher is better; the parts are reported beside the reward; each task's module says why its reward is so):

    toxicity            1 − toxicity
    commongen           once_coverage × fluency × (1 if finished else 0.5)
    open_ended          coherence × diversity × fluency
    dialogue_safety     harmful request:   safety × (0.5 + 0.5 · relevance) × oddity
                        help_safe request: (1 − toxicity) × help × (0.5 + 0.5 · relevance) × oddity
    knowledge_dialogue  faithfulness × (0.5 + 0.5 · relevance) × copy_factor
    sentiment           positivity × fluency
"""

from __future__ import annotations

import functools
import inspect
import threading

from ipa.rewards import REWARDS
from ipa.rewards.coherence import CoherenceReward
from ipa.rewards.coverage import CoverageReward
from ipa.rewards.diversity import DiversityReward
from ipa.rewards.factors import FACTORS
from ipa.rewards.faithfulness import FaithfulnessReward
from ipa.rewards.fluency import FluencyReward
from ipa.rewards.objective import Objective, score
from ipa.rewards.relevance import RelevanceReward
from ipa.rewards.safety import SafetyReward
from ipa.rewards.sentiment import SentimentReward
from ipa.rewards.text import check_texts
from ipa.rewards.toxicity import BACKEND_LABELS, ToxicityReward
from ipa.tasks import TASKS, Task, TaskInputError, get_task


class RewardKit:
    """The reward instances of one process and device, created on first use and shared by every scorer."""

    def __init__(self, device: str = "cpu", toxicity_backend: str = "auto", toxicity_checkpoint: str | None = None,
                 fluency_model: str = "embedded"):
        self.device = str(device)
        self.toxicity_backend = toxicity_backend
        self.toxicity_checkpoint = toxicity_checkpoint
        self.fluency_model = fluency_model
        self._making = threading.RLock()

    MODELS = {
        "toxicity": lambda kit: ToxicityReward(kit.toxicity_backend, kit.toxicity_checkpoint, kit.device),
        "fluency": lambda kit: FluencyReward(kit.fluency_model, kit.device),
        "coverage": lambda kit: CoverageReward(),
        "coherence": lambda kit: CoherenceReward(kit.device),
        "relevance": lambda kit: RelevanceReward(kit.device),
        "diversity": lambda kit: DiversityReward(),
        "faithfulness": lambda kit: FaithfulnessReward(kit.device),
        "safety": lambda kit: SafetyReward(toxicity=kit.toxicity, relevance=kit.relevance),
        "sentiment": lambda kit: SentimentReward(),
    }
    """The kit's own reward instances (kit.toxicity, kit.fluency, ...), each made from the kit's settings on first use."""

    def __getattr__(self, name: str):
        make = RewardKit.MODELS.get(name)
        if make is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        with self._making:  # one instance a kit, whichever thread asks first (safety asks for toxicity inside)
            if name not in self.__dict__:
                self.__dict__[name] = make(self)
        return self.__dict__[name]

    def block(self, name: str, params: dict | None = None, classes: dict[str, type] | None = None):
        """A reward as a block of an objective (ipa.rewards.objective): the kit's own instance when the block has
        its default parameters (given or left out: a task's blocks leave them out), else a new instance of its class that shares the kit's models (the MiniLM
        embedder, the scoring LM, the toxicity classifier): adding blocks never loads a model twice.

        classes: the reward classes by name (default ipa.rewards.REWARDS; user modules add theirs)."""
        classes = {**REWARDS, **(classes or {})}
        cls = classes[name]
        params = {k: v for k, v in (params or {}).items() if v is not None}
        defaults = {p.name: p.default for p in getattr(cls, "PARAMS", ()) if not p.required and p.default is not None}
        if cls is REWARDS.get(name) and {**defaults, **params} == defaults and name in self.MODELS:
            return getattr(self, name)
        shared = {"embedder": lambda: self.relevance.embedder, "lm": lambda: self.fluency.lm,
                  "classifier": lambda: self.toxicity.classifier, "toxicity": lambda: self.toxicity,
                  "relevance": lambda: self.relevance}
        accepted = inspect.signature(cls).parameters
        return cls(**params, **{k: make() for k, make in shared.items() if k in accepted})


@functools.cache
def reward_kit(device: str = "cpu", toxicity_backend: str = "auto", toxicity_checkpoint: str | None = None,
               fluency_model: str = "embedded") -> RewardKit:
    """The shared kit for these settings: scorers built with the same settings share their models."""
    return RewardKit(device, toxicity_backend, toxicity_checkpoint, fluency_model)


class TaskScorer:
    """Scores completions for a task: `scorer(inputs, completions) -> [{"reward": r, part: value, ...}]`.

    inputs: one dict of the task's fields per completion (as typed by a user or loaded by ipa.tasks.data).
    The parts are the reward's blocks (e.g. once_coverage and fluency) plus explanatory values (e.g. the raw
    toxicity), all floats in [0, 1]: the task's objective scored by ipa.rewards.objective.score, each block given
    the inputs' fields as context.
    """

    def __init__(self, task: Task, kit: RewardKit, objective: Objective | None = None,
                 extra_rewards: dict[str, type] | None = None):
        """objective: what to score (default the task's own, TASK.blocks); extra_rewards: block classes from a user's
        Python files (ipa.rewards.user_module)."""
        self.task = task
        self.kit = kit
        self.objective = objective or task.objective
        self.classes = {**FACTORS, **task.factors, **(extra_rewards or {})}
        """The block classes beside ipa.rewards.REWARDS, by name."""

    @functools.cached_property
    def blocks(self) -> list:
        """One reward instance a block, the kit's models shared; made on first use (a scorer loads no model before
        it scores)."""
        return [self.kit.block(b.reward, b.params, self.classes) for b in self.objective.blocks]

    @property
    def toxicity_backend(self) -> str:
        """'detoxify' or 'profanity_check': the toxicity classifier the scores use (for results and the UI)."""
        return self.kit.toxicity.backend

    @property
    def toxicity_backend_label(self) -> str:
        return BACKEND_LABELS[self.toxicity_backend]

    @staticmethod
    def check_pairs(inputs: list[dict], completions: list[str]) -> list[str]:
        """The completions, checked to be texts with one inputs dict each (a TypeError or TaskInputError if not)."""
        completions = check_texts(completions)
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"inputs must be a list of dicts, one per completion, got {type(inputs).__name__}.")
        if len(inputs) != len(completions):
            raise TaskInputError(f"Got {len(inputs)} inputs for {len(completions)} completions: give one per completion.")
        return completions

    def __call__(self, inputs: list[dict], completions: list[str]) -> list[dict]:
        completions = self.check_pairs(inputs, completions)
        inputs = [self.task.normalize(x) for x in inputs]
        sources = [self.task.source(x) for x in inputs]
        return score(self.objective, self.blocks, sources, completions, self.context(inputs))

    def context(self, inputs: list[dict]) -> dict[str, list] | None:
        """What the blocks read beside prompts and completions: each of the task's fields and context values, one
        list each (a value not given is None: a typed message's category)."""
        names = [*self.task.field_names(), *(name for name, _ in self.task.context)]
        return {name: [x.get(name) for x in inputs] for name in names}


def load_scorer(task_name: str, device: str = "cpu", toxicity_backend: str = "auto",
                toxicity_checkpoint: str | None = None, fluency_model: str = "embedded") -> TaskScorer:
    """A ready scorer for a task. Models load on first use and are shared by every scorer of this process
    built with the same settings (the web app builds all six)."""
    task = get_task(task_name)
    return TaskScorer(task, reward_kit(str(device), toxicity_backend, toxicity_checkpoint, fluency_model))


__all__ = ["TaskScorer", "RewardKit", "load_scorer", "reward_kit", "TASKS"]
