"""Rewards: one module each, picked by name from REWARDS.

A reward is a class: `__init__` loads its model once (heavy models come from ipa.rewards.resources and are
shared within a process); `__call__(prompts, completions, **context) -> list[float]`, one score in [0, 1]
per completion, higher is better. An empty continuation scores ipa.rewards.text.EMPTY_SCORE (0.0); a
non-string input raises TypeError; text is cut to each scorer's limit. The parameters a user may set when
the reward is a block of an objective (ipa.rewards.objective) are declared in its class's PARAMS
(ipa.rewards.params): the topic, the words, the target length.

    >>> reward = get_reward("sentiment")
    >>> [round(r, 2) for r in reward(["The day was"], ["lovely and warm."])]
    [0.85]
"""

from __future__ import annotations

from ipa.rewards.avoid_words import AvoidWordsReward
from ipa.rewards.coherence import CoherenceReward
from ipa.rewards.coverage import CoverageReward
from ipa.rewards.diversity import DiversityReward
from ipa.rewards.faithfulness import FaithfulnessReward
from ipa.rewards.fluency import FluencyReward
from ipa.rewards.length import LengthReward
from ipa.rewards.preference import PreferenceReward
from ipa.rewards.relevance import RelevanceReward
from ipa.rewards.safety import SafetyReward
from ipa.rewards.sentiment import SentimentReward
from ipa.rewards.text import EMPTY_SCORE, RewardInputError
from ipa.rewards.topic import TopicReward
from ipa.rewards.toxicity import ToxicityReward

REWARDS = {
    "toxicity": ToxicityReward,
    "coverage": CoverageReward,
    "fluency": FluencyReward,
    "coherence": CoherenceReward,
    "relevance": RelevanceReward,
    "diversity": DiversityReward,
    "faithfulness": FaithfulnessReward,
    "safety": SafetyReward,
    "sentiment": SentimentReward,
    "topic": TopicReward,
    "avoid_words": AvoidWordsReward,
    "length": LengthReward,
    "preference": PreferenceReward,
}


def get_reward(name: str, **kwargs):
    """A reward instance by name; kwargs go to its constructor (e.g. backend="profanity_check", device="cpu")."""
    if name not in REWARDS:
        raise KeyError(f"Unknown reward {name!r}: valid names are {', '.join(REWARDS)}.")
    return REWARDS[name](**kwargs)


__all__ = ["REWARDS", "get_reward", "EMPTY_SCORE", "RewardInputError"]
