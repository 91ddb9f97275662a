"""Sentiment: how positive the continuation reads, by VADER's compound score.

    >>> reward = SentimentReward()
    >>> [round(r, 2) for r in reward(["", ""], ["What a wonderful, happy day!", "It was a sad, awful failure."])]
    [0.91, 0.07]
"""

from __future__ import annotations

from rewards.text import EMPTY_SCORE, check_texts, is_empty

VADER_MAX_CHARS = 2000
"""VADER reads word by word in pure Python; a continuation is cut to this many characters first."""


class SentimentReward:
    """positivity = (VADER compound + 1) / 2, in [0, 1]: 0 very negative, 0.5 neutral, 1 very positive.

    VADER (Hutto & Gilbert 2014) is a lexicon-and-rules scorer for English; words it does not know (other
    languages) count as neutral. Empty continuation: 0 (not 0.5: saying nothing must not pay).

    Example: "What a wonderful, happy day!" has compound 0.83 -> 0.91;
    "It was a sad, awful failure." has compound −0.86 -> 0.07.
    """

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def compound(self, texts: list[str]) -> list[float]:
        """VADER's compound score of each text, in [−1, 1]."""
        return [self.analyzer.polarity_scores(t[:VADER_MAX_CHARS])["compound"] for t in check_texts(texts)]

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        return [EMPTY_SCORE if is_empty(c) else (s + 1) / 2 for c, s in zip(completions, self.compound(completions))]
