"""Avoid words: the continuation does not use any of the given words, in any inflection.

    >>> AvoidWordsReward("rain, cloud")(["", "", ""], ["It rained all day.", "The sun came out.", "Rainy skies and clouds."])
    [0.5, 1.0, 0.5]
"""

from __future__ import annotations

from ipa.rewards.coverage import concepts_covered
from ipa.rewards.text import parse_concepts
from ipa.rewards.params import Param
from ipa.rewards.text import EMPTY_SCORE, check_texts, is_empty


class AvoidWordsReward:
    """avoid_words = 1 − (avoided words used) / (avoided words given), in [0, 1]: the mirror of coverage.

    Inflections are handled as coverage handles them (lemminflect, ipa.rewards.text.lemmas): a given word is used
    when one of its lemmas equals a lemma of a word of the continuation, under any part of speech. So avoiding
    "rain" also catches "rains", "rained", "raining"; avoiding "catch" catches "caught". Derived words with
    another lemma are not caught ("rainy" is its own adjective, lemma "rainy"): list them too. Matching on
    every part of speech errs on the side of avoiding: avoiding "saw" also catches "see" (its past tense).
    Case is ignored; a phrase is split into its words (each avoided alone). Only the continuation is read,
    not the prompt. Empty continuation: 0 (saying nothing must not pay).

    Example: avoid {rain, cloud}: "It rained all day." uses rain -> 1 − 1/2 = 0.5; "The sun came out." ->
    1.0; "Rainy skies and clouds." uses cloud, and "rainy" is not rain -> 0.5.
    """

    PARAMS = (Param("words", "words", "the words the text must not use, e.g. \"rain, cloud\""),)

    def __init__(self, words):
        self.words = parse_concepts(words)
        if not self.words:
            raise ValueError("AvoidWordsReward needs at least one word to avoid.")

    def used(self, completions) -> list[list[str]]:
        """The avoided words each continuation uses."""
        return [[w for w, hit in zip(self.words, concepts_covered(self.words, text)) if hit] for text in check_texts(completions)]

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        return [EMPTY_SCORE if is_empty(text) else 1.0 - len(used) / len(self.words)
                for text, used in zip(completions, self.used(completions))]
