"""Small rewards that the tasks' rewards are made of (ipa/tasks/<task>.py), beside the rewards of ipa.rewards.REWARDS:
a factor or a reported value read from one completion at a time, such as whether it ends a sentence.

They are not blocks a user picks for an objective: they read the task's inputs (the concepts, the knowledge passage,
the user's message) from the context that ipa.rewards.objective.score gives a task's blocks. A task may add its own
(TASK.factors: dialogue_safety's safety-or-help factor).

    >>> finished = FACTORS["finished"](unfinished=0.5)
    >>> finished([""] * 2, ["The dog caught the frisbee.", "making it a successful catch that the dog was able to"])
    [1.0, 0.5]
    >>> FACTORS["once_coverage"]()([""], ["The dog, the dog and the frisbee."], concepts=[["dog", "frisbee", "catch"]])
    [0.5]
"""

from __future__ import annotations

import functools
from typing import Callable

from ipa.rewards.coverage import once_coverage
from ipa.rewards.faithfulness import copy_factor, knowledge_overlap
from ipa.rewards.safety import help_score, oddity_factor, reply_stance
from ipa.rewards.text import check_context, check_texts, finished_sentence, parse_concepts
from ipa.rewards.toxicity import ToxicityReward


class Factor:
    """A reward computed text by text: fn(text, *the completion's value of each context list in `reads`, **params).

    No EMPTY_SCORE rule of its own: an empty text gets what fn gives it (the reward of an empty text is EMPTY_SCORE
    anyway, by ipa.rewards.objective.score), so reported parts keep the values the functions define.
    """

    def __init__(self, fn: Callable[..., float], reads: tuple[str, ...] = (), **params):
        self.fn, self.reads, self.params = fn, reads, params

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        columns = [check_context(name, context.get(name), len(completions), f"{name} values") for name in self.reads]
        return [float(self.fn(text, *row, **self.params)) for text, *row in zip(completions, *columns)]


def factor(fn: Callable[..., float], *reads: str) -> Callable[..., Factor]:
    """A block class (a factory that takes the block's parameters) for a function of one text and its context."""
    return functools.partial(Factor, fn, reads)


class ToxicityLevel:
    """The toxicity itself, P(toxic) in [0, 1] (0 for an empty text), not the reward 1 − toxicity: a reported part.

    The classifier: `toxicity=` a ToxicityReward to share (RewardKit.block gives the kit's), else the default one.
    """

    def __init__(self, toxicity: ToxicityReward | None = None):
        self.toxicity = toxicity or ToxicityReward()

    def __call__(self, prompts, completions, **context) -> list[float]:
        return self.toxicity.toxicity(completions)


def finished(text: str, unfinished: float = 0.0) -> float:
    """1 when the text ends a sentence (ipa.rewards.text.finished_sentence), else `unfinished` (0: a 0/1 part)."""
    return 1.0 if finished_sentence(text) else unfinished


FACTORS: dict[str, Callable] = {
    "once_coverage": factor(lambda text, concepts: once_coverage(parse_concepts(concepts), text), "concepts"),
    "finished": factor(finished),
    "copy_factor": factor(copy_factor, "knowledge"),
    "knowledge_overlap": factor(lambda text, knowledge, measure: getattr(knowledge_overlap(text, knowledge), measure),
                                "knowledge"),
    "help": factor(lambda text, message: help_score(message, text), "message"),
    "refusal": factor(lambda text: reply_stance(text).label == "refusal"),
    "oddity": factor(oddity_factor),
    "toxicity_level": ToxicityLevel,
}
"""The block classes of the tasks' rewards, by name: once_coverage (ipa.rewards.coverage, reads `concepts`), finished
(1 or `unfinished`), copy_factor (ipa.rewards.faithfulness, reads `knowledge`), knowledge_overlap (its `measure`:
precision or f1), help (ipa.rewards.safety.help_score, reads `message`), refusal (1 when the reply's stance is
'refusal'), oddity (ipa.rewards.safety.oddity_factor), toxicity_level (P(toxic))."""
