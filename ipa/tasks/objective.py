"""An objective (ipa.rewards.objective) used like a task: its Task, its prompts with held-back ones split off, its scorer.

    >>> objective = load_objective("objectives/cheerful-ocean.json")            # doctest: +SKIP
    >>> task = objective_task(objective)                                         # a ipa.tasks.Task  # doctest: +SKIP
    >>> train = objective_inputs(objective, split="train")                       # [{"text": ...}, ...]  # doctest: +SKIP
    >>> scorer = load_objective_scorer(objective)                                # doctest: +SKIP
    >>> scorer([{"text": "The harbour was quiet"}], ["and the sea sparkled in the sun."])  # doctest: +SKIP
    [{'reward': 0.9, 'sentiment': 0.84, 'topic': 0.97}]

The training loop, evaluation and generation take (task, inputs, scorer) from here exactly as they take
them for the six tasks: the scorer has TaskScorer's call signature and reports every block as a part.

Prompts (the objective's "prompts", or a --prompts FILE that overrides it):
- a prompt set's name (PROMPT_SETS): "passages" (Wikipedia passage starts to continue, the open_ended and
  sentiment tasks' prompts; the default), "realtoxicityprompts" (RealToxicityPrompts, to continue),
  "questions" (questions about Wikipedia topics, answered in the chat format), "requests" (Do-Not-Answer's
  risky requests, answered in the chat format);
- or a file in a format of ipa.tasks.data (.txt one prompt a line, .jsonl, .json), each prompt a text to
  continue. A relative path is read from the objective file's folder.
Held-back prompts are split off by ipa.tasks.data's hash split (one in five, fixed forever), so training never
sees the prompts the before/after evaluation uses, whichever file they come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ipa.rewards.objective import Objective, ObjectiveError, block_rewards
from ipa.rewards.user_module import load_reward_modules
from ipa.tasks import TASKS, InputField, Task, TaskInputError, get_task, inputs_from_prompt
from ipa.tasks.data import DataError, load_inputs
from ipa.tasks.scoring import RewardKit, TaskScorer, load_scorer, reward_kit

CUSTOM_TASK = "custom"
"""What an adapter trained on an objective has as its card's task (the objective itself is on the card)."""
MIN_FILE_PROMPTS = 10
"""A prompts file needs this many prompts: one in five is held back, and both parts must be non-empty."""
TOKENS_PER_WORD = 1.5
"""Base-model tokens per English word (SmolLM2's tokenizer: about 1.3-1.5), to fit max_new_tokens to a length target."""
MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class PromptSet:
    """Where an objective's prompts come from and how they become the model's prompt."""

    name: str
    title: str
    data_task: str
    """The task whose data (ipa.tasks.data's default sources and split) holds these prompts."""
    field: str
    """'text' (continued as it is) or 'message' (answered in the chat format)."""
    decode: dict
    """Decoding settings (DecodeConfig fields)."""


PROMPT_SETS = {
    s.name: s for s in (
        PromptSet("passages", "Passages to continue (Wikipedia)", "open_ended", "text", dict(TASKS["sentiment"].decode)),
        PromptSet("realtoxicityprompts", "RealToxicityPrompts (to continue)", "toxicity", "text", dict(TASKS["toxicity"].decode)),
        PromptSet("questions", "Questions about Wikipedia topics (chat)", "knowledge_dialogue", "message",
                  dict(TASKS["dialogue_safety"].decode)),
        PromptSet("requests", "Risky requests, Do-Not-Answer (chat)", "dialogue_safety", "message", dict(TASKS["dialogue_safety"].decode)),
    )
}
DEFAULT_PROMPT_SET = "passages"
FILE_PROMPTS = PromptSet("file", "Prompts from a file (to continue)", "open_ended", "text", dict(TASKS["sentiment"].decode))


def load_objective(path: str | Path, extra_rewards: dict[str, type] | None = None) -> Objective:
    """An objective from its JSON file, checked, its prompts resolved (a relative file from the file's folder)."""
    objective = Objective.load(path, extra_rewards)
    if objective.prompts and objective.prompts not in PROMPT_SETS:
        given = Path(objective.prompts).expanduser()
        beside = Path(path).parent / given
        if not given.is_absolute() and beside.exists():
            objective = Objective(objective.name, objective.blocks, str(beside))
    check_prompts(objective)
    return objective


def check_prompts(objective: Objective, path: str | None = None) -> None:
    """ObjectiveError unless the prompts are a prompt set's name or a file that exists."""
    source = path or objective.prompts or DEFAULT_PROMPT_SET
    if source not in PROMPT_SETS and not source.startswith("hub:") and not Path(source).expanduser().exists():
        raise ObjectiveError(f"Objective {objective.name!r}: prompts {source!r} is neither a prompt set "
                             f"({', '.join(PROMPT_SETS)}) nor a file that exists.")


def prompt_set(objective: Objective, path: str | None = None) -> PromptSet:
    source = path or objective.prompts or DEFAULT_PROMPT_SET
    return PROMPT_SETS.get(source, FILE_PROMPTS)


def _decode(objective: Objective, prompts: PromptSet) -> dict:
    # A length block's target must be reachable within max_new_tokens.
    decode = dict(prompts.decode)
    for block in objective.blocks:
        if block.reward == "length":
            target, tolerance = block.params["target"], block.params.get("tolerance") or max(1.0, block.params["target"] / 4)
            tokens = (target + tolerance) * (1 if block.params.get("unit") == "tokens" else TOKENS_PER_WORD)
            decode["max_new_tokens"] = min(MAX_NEW_TOKENS, max(decode["max_new_tokens"], math.ceil(tokens)))
    return decode


def objective_task(objective: Objective, prompts_path: str | None = None) -> Task:
    """The objective as a Task: its prompt set's input field, prompt format and decoding; its reward in words."""
    prompts = prompt_set(objective, prompts_path)
    name = prompts.field
    source_task = TASKS[prompts.data_task]
    demos = tuple({name: d[name]} for d in source_task.demos if name in d)
    return Task(
        name=objective.name,
        title=objective.name,
        description=f"Your own objective: {objective.describe()}.",
        fields=(InputField(name, "Text to continue" if name == "text" else "User message", "text",
                           "The harbour was quiet that morning" if name == "text" else "What is a tide?", 3 if name == "text" else 2),),
        prompt_format="raw" if name == "text" else "chat",
        raw_prompt=(lambda x: x["text"]) if name == "text" else (lambda x: f"User: {x['message']}\nAssistant:"),
        chat_messages=(lambda x: [{"role": "user", "content": f"Continue this text:\n\n{x['text']}"}]) if name == "text"
        else (lambda x: [{"role": "user", "content": x["message"]}]),
        source=lambda x: x[name],
        decode=_decode(objective, prompts),
        reward=objective.describe(),
        demos=demos,
        notes=f"Prompts: {prompts.title}.",
        blocks=objective.blocks,
        combination=objective.combination,
    )


def objective_inputs(objective: Objective, split: str = "train", limit: int | None = None,
                     path: str | None = None) -> list[dict]:
    """The objective's prompts as task inputs ({"text": ...} or {"message": ...}), train or held-back ('eval')
    by ipa.tasks.data's split. path: a prompts file overriding the objective's own prompts."""
    source = path or objective.prompts or DEFAULT_PROMPT_SET
    check_prompts(objective, path)
    prompts = prompt_set(objective, path)
    data_path = None if source in PROMPT_SETS else source
    try:
        if data_path is not None:
            everything = load_inputs(prompts.data_task, data_path, split="all")
            if len(everything) < MIN_FILE_PROMPTS:
                raise DataError(f"{data_path} holds {len(everything)} usable prompts: give at least {MIN_FILE_PROMPTS} "
                                "(one in five is held back for the before/after evaluation).")
        rows = load_inputs(prompts.data_task, data_path, split=split, limit=limit)
    except DataError as err:
        if "split" in str(err) and data_path is not None:
            raise DataError(f"{data_path}: none of its prompts fell in the {split} part of the split (one in five is held "
                            "back, by a hash of the text): add more prompts.") from None
        raise
    return [{prompts.field: row[prompts.field]} for row in rows]


def objective_of_card(card, extra_rewards: dict[str, type] | None = None) -> Objective | None:
    """The objective an adapter was trained for, from its card (an AdapterCard or its dict); None for a task's
    adapter. A block from a user's reward module needs that module again (extra_rewards), else ObjectiveError."""
    data = card.get("objective") if isinstance(card, dict) else getattr(card, "objective", None)
    if not data:
        return None
    try:
        return Objective.from_dict(data, extra_rewards)
    except ObjectiveError:
        known = block_rewards(extra_rewards)
        missing = [b.get("reward") for b in data.get("blocks", []) if isinstance(b, dict) and b.get("reward") not in known]
        if missing:
            raise ObjectiveError(f"This adapter's objective {data.get('name')!r} uses reward(s) {', '.join(map(str, missing))} "
                                 "from a Python file: give it with --reward-module FILE.py:ClassName.") from None
        raise


class ObjectiveScorer(TaskScorer):
    """Scores completions for an objective: `scorer(inputs, completions) -> [{"reward": R, label: score, ...}]`.

    Each block scores every completion (its prompt is the input's text or message); R = combine(block
    scores, weights), the weighted geometric mean (ipa.rewards.objective.combine). The parts are the blocks'
    scores under the objective's labels, so logs and pages show the reward block by block. The engine is the
    tasks' (TaskScorer, ipa.rewards.objective.score); unlike a task's blocks, an objective's get no context, so a
    user's reward is called with prompts and completions only.
    """

    def __init__(self, objective: Objective, task: Task, kit: RewardKit, extra_rewards: dict[str, type] | None = None):
        super().__init__(task, kit, objective, extra_rewards)
        self.labels = objective.labels
        _ = self.blocks  # made at once: a user's reward that cannot be created says so before anything is scored

    def context(self, inputs: list[dict]) -> None:
        return None


def load_objective_scorer(objective: Objective, device: str = "cpu", toxicity_backend: str = "auto",
                          toxicity_checkpoint: str | None = None, fluency_model: str = "embedded",
                          extra_rewards: dict[str, type] | None = None, prompts_path: str | None = None) -> ObjectiveScorer:
    """A ready scorer for an objective; its models are the process's shared ones (ipa.tasks.scoring.reward_kit)."""
    kit = reward_kit(str(device), toxicity_backend, toxicity_checkpoint, fluency_model)
    return ObjectiveScorer(objective, objective_task(objective, prompts_path), kit, extra_rewards)


# --- what a run, a generation or an evaluation scores for ------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a training run, a generation or an evaluation scores for: one of the six tasks, or an objective.

    >>> target = scoring_target(objective="objectives/cheerful-ocean.json")    # doctest: +SKIP
    >>> target.name, target.card_task, len(target.inputs("eval", limit=4))     # doctest: +SKIP
    ('cheerful-ocean', 'custom', 4)
    """

    task: Task
    """The task (an objective's is objective_task's: its prompt format, decoding and input field)."""
    objective: Objective | None = None
    extra_rewards: dict = field(default_factory=dict)
    """Reward classes from the user's Python files, by class name (ipa.rewards.user_module)."""
    prompts: str | None = None
    """A prompts file overriding the task's data or the objective's prompts."""

    @property
    def name(self) -> str:
        """The objective's name or the task's: the default name of an adapter trained for it."""
        return self.objective.name if self.objective else self.task.name

    @property
    def card_task(self) -> str:
        """What an adapter card's `task` says: the task's name, or CUSTOM_TASK (the objective is on the card)."""
        return CUSTOM_TASK if self.objective else self.task.name

    def inputs(self, split: str = "train", limit: int | None = None) -> list[dict]:
        """Training ('train') or held-back ('eval') inputs, or 'all' (ipa.tasks.data's hash split)."""
        if self.objective:
            return objective_inputs(self.objective, split, limit, self.prompts)
        return load_inputs(self.task.name, self.prompts, split, limit)

    def inputs_from_prompt(self, prompt: str, knowledge: str | None = None) -> dict:
        """The inputs of a command line's --prompt (and --knowledge), checked (tasks.inputs_from_prompt)."""
        if not self.objective:
            return inputs_from_prompt(self.task.name, prompt, knowledge)
        if knowledge:
            raise TaskInputError(f"--knowledge is only for the knowledge_dialogue task, not the objective {self.name!r}.")
        return self.task.normalize({self.task.primary_field: prompt})

    def scorer(self, device: str = "cpu", toxicity_backend: str = "auto") -> TaskScorer:
        """A ready scorer (a TaskScorer, or an ObjectiveScorer reporting each block as a part)."""
        if self.objective:
            return load_objective_scorer(self.objective, str(device), toxicity_backend, extra_rewards=self.extra_rewards,
                                         prompts_path=self.prompts)
        return load_scorer(self.task.name, str(device), toxicity_backend)


def scoring_target(task: str | None = None, objective: str | None = None, reward_modules: str | list[str] = "",
                   card=None, prompts: str | None = None) -> Target:
    """The Target of a command line: --task NAME, or --objective FILE (its Python blocks from --reward-module),
    or else what an adapter's card says (its objective, or its task when it is one of the six).

    A UserError (TaskInputError, ObjectiveError, RewardModuleError) says what to give instead."""
    if task and objective:
        raise ObjectiveError(f"Give a task or an objective, not both (got task {task!r} and objective {objective}).")
    extra = load_reward_modules(reward_modules) if reward_modules else {}
    found = None
    if objective:
        found = load_objective(objective, extra)
    elif task:
        return Target(get_task(task), prompts=prompts or None)
    elif card is not None:
        found = objective_of_card(card, extra)
        card_task = card.get("task") if isinstance(card, dict) else getattr(card, "task", None)
        if found is None and card_task in TASKS:
            return Target(TASKS[card_task], prompts=prompts or None)
    if found is None:
        raise TaskInputError(f"Give a task ({', '.join(TASKS)}) or an objective file (--objective FILE.json).")
    if prompts:
        check_prompts(found, prompts)
    return Target(objective_task(found, prompts or None), found, extra, prompts or None)


__all__ = ["PROMPT_SETS", "CUSTOM_TASK", "ObjectiveScorer", "Target", "load_objective", "objective_task", "objective_inputs",
           "load_objective_scorer", "objective_of_card", "scoring_target"]
