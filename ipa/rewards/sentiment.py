"""Sentiment: how positive (or negative, or neutral) the continuation reads, by VADER's compound score.

    >>> reward = SentimentReward()
    >>> [round(r, 2) for r in reward(["", ""], ["What a wonderful, happy day!", "It was a sad, awful failure."])]
    [0.91, 0.07]
    >>> [round(r, 2) for r in SentimentReward("negative")(["", ""], ["What a wonderful, happy day!", "It was a sad, awful failure."])]
    [0.09, 0.93]
"""

from __future__ import annotations

from ipa.rewards.params import Param
from ipa.rewards.text import EMPTY_SCORE, check_texts, is_empty

VADER_MAX_CHARS = 2000
"""VADER reads word by word in pure Python; a continuation is cut to this many characters first."""
DIRECTIONS = ("positive", "negative", "neutral")


class SentimentReward:
    """The tone VADER reads, in [0, 1], from its compound score c in [−1, 1]:

        positive (default)  (c + 1) / 2     0 very negative, 0.5 neutral, 1 very positive
        negative            (1 − c) / 2     the mirror image
        neutral             1 − |c|         1 for a matter-of-fact text, 0 for a strongly felt one

    VADER (Hutto & Gilbert 2014) is a lexicon-and-rules scorer for English; words it does not know (other
    languages) count as neutral. Empty continuation: 0 (not 0.5: saying nothing must not pay).

    Example: "What a wonderful, happy day!" has compound 0.83 -> positive 0.91, negative 0.09, neutral 0.17;
    "It was a sad, awful failure." has compound −0.86 -> positive 0.07, negative 0.93.
    """

    PARAMS = (Param("direction", "choice", "the tone to reward", "positive", DIRECTIONS),)

    def __init__(self, direction: str = "positive"):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        if direction not in DIRECTIONS:
            raise ValueError(f"Unknown sentiment direction {direction!r}: use one of {', '.join(DIRECTIONS)}.")
        self.direction = direction
        self.analyzer = SentimentIntensityAnalyzer()

    def compound(self, texts: list[str]) -> list[float]:
        """VADER's compound score of each text, in [−1, 1]."""
        return [self.analyzer.polarity_scores(t[:VADER_MAX_CHARS])["compound"] for t in check_texts(texts)]

    def tone(self, compound: float) -> float:
        if self.direction == "positive":
            return (compound + 1) / 2
        if self.direction == "negative":
            return (1 - compound) / 2
        return 1 - abs(compound)

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        return [EMPTY_SCORE if is_empty(c) else self.tone(s) for c, s in zip(completions, self.compound(completions))]
