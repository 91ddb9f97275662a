"""Diversity: does a continuation avoid repeating itself? Product of distinct-n over word 2-, 3-, 4-grams.

    >>> scores = DiversityReward()(["", ""], ["the cat sat on the mat and looked out", "I like it. I like it. I like it."])
    >>> [round(s, 2) for s in scores]
    [1.0, 0.08]
"""

from __future__ import annotations

from ipa.rewards.text import EMPTY_SCORE, check_texts, distinct_n, is_empty, words

ORDERS = (2, 3, 4)


def diversity(text: str) -> float:
    """∏_{n=2..4} distinct-n(words): the open-ended generation diversity of Su et al. (2022), as used by
    the paper's open-ended task, computed within one continuation."""
    tokens = words(text)
    score = 1.0
    for n in ORDERS:
        score *= distinct_n(tokens, n)
    return score


class DiversityReward:
    """diversity = ∏_{n=2,3,4} (unique word n-grams / word n-grams) within the continuation, in [0, 1].

    distinct-n is 1 when the text has no repeated n-gram (and when it is shorter than n words);
    an empty continuation scores 0.

    Example: "I like it. I like it. I like it." has words [i like it i like it i like it]:
    distinct-2 = 3/8, distinct-3 = 3/7, distinct-4 = 3/6, product = 0.08; "the cat sat on the mat and looked out" repeats nothing: 1.0.
    """

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        return [EMPTY_SCORE if is_empty(c) else diversity(c) for c in completions]
