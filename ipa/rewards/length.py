"""Length: the continuation is near a target length, in words or in the base model's tokens.

    >>> reward = LengthReward(target=8)
    >>> [round(r, 2) for r in reward(["", "", ""], ["one two three four five six seven eight",
    ...                                              "one two three four five six", "one two"])]
    [1.0, 0.61, 0.01]
"""

from __future__ import annotations

import math

from ipa.rewards.params import Param
from ipa.rewards.text import EMPTY_SCORE, check_texts, is_empty, words

UNITS = ("words", "tokens")
MAX_TARGET = 500


class LengthReward:
    """length = exp(−½ · ((n − target) / tolerance)²), in (0, 1]: 1 at the target, 0.61 one tolerance away,
    0.14 two away, 0.01 three away; a bell, so too long and too short cost alike and there is always a
    direction to improve in (a hard window would give most samples the same 0).

    n = the continuation's words (runs of letters or digits: "don't" is one word) or its tokens under the
    base model's tokenizer (unit="tokens"). tolerance defaults to a quarter of the target (at least 1).
    Empty continuation: 0. Training samples stop at the task's max_new_tokens: a target beyond it cannot be
    reached (the objective bridge raises max_new_tokens to fit the target).

    Example, target 8 words (tolerance 2): 8 words -> 1.0; 6 words -> exp(−½) = 0.61; 2 words -> exp(−4.5) = 0.01.

    The tokenizer (unit="tokens"): `tokenizer=`, else the embedded base model's.
    """

    PARAMS = (
        Param("target", "number", "the length to aim for", low=1, high=MAX_TARGET),
        Param("unit", "choice", "what the length counts", "words", UNITS),
        Param("tolerance", "number", "how far from the target costs 39% of the score (default: target / 4)", None,
              low=1, high=MAX_TARGET),
    )

    def __init__(self, target: float, unit: str = "words", tolerance: float | None = None, tokenizer=None):
        if unit not in UNITS:
            raise ValueError(f"Unknown length unit {unit!r}: use words or tokens.")
        if not 1 <= target <= MAX_TARGET:
            raise ValueError(f"The length target must be from 1 to {MAX_TARGET}, got {target}.")
        self.target, self.unit = float(target), unit
        self.tolerance = float(tolerance) if tolerance else max(1.0, self.target / 4)
        if unit == "tokens" and tokenizer is None:
            from ipa.models import load_tokenizer

            tokenizer = load_tokenizer("embedded")
        self.tokenizer = tokenizer

    def lengths(self, completions) -> list[int]:
        """Each continuation's length in the unit."""
        completions = check_texts(completions)
        if self.unit == "words":
            return [len(words(text)) for text in completions]
        return [len(ids) for ids in self.tokenizer(completions, add_special_tokens=False)["input_ids"]] if completions else []

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        return [EMPTY_SCORE if is_empty(text) else math.exp(-0.5 * ((n - self.target) / self.tolerance) ** 2)
                for text, n in zip(completions, self.lengths(completions))]
