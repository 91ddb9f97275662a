"""Concept coverage (CommonGen): the share of the given concepts that the text uses, lemmatised.

    >>> CoverageReward()(["dog frisbee catch"], ["The dogs caught a frisbee."])
    [1.0]
"""

from __future__ import annotations


from ipa.rewards.params import Param
from ipa.rewards.text import (EMPTY_SCORE, RewardInputError, check_context, check_texts, is_empty, lemma_set, lemmas,
                              parse_concepts, words)


def concepts_covered(concepts: list[str], text: str) -> list[bool]:
    """Whether each concept appears in the text: a concept counts when it shares a lemma with any word."""
    text_lemmas = lemma_set(text)
    return [bool(lemmas(c) & text_lemmas) or c in words(text) for c in concepts]


def concept_uses(concepts: list[str], text: str) -> list[int]:
    """How many words of the text use each concept (a word uses it when they share a lemma).

    >>> concept_uses(["dog", "catch"], "The dog caught the ball and the dogs caught it again.")
    [2, 2]
    """
    text_words = words(text)
    return [sum(1 for w in text_words if w == c or lemmas(w) & lemmas(c)) for c in concepts]


def once_coverage(concepts: list[str], text: str) -> float:
    """Coverage that counts each concept once: mean over concepts of 1 / uses (0 when unused), in [0, 1].

    A concept used twice earns 1/2, three times 1/3: padding a sentence with the concepts again ("was caught by the
    cat and caught the dog, making it a successful catch that the dog") no longer pays.

    >>> once_coverage(["dog", "frisbee", "catch"], "The dog caught the frisbee.")
    1.0
    >>> round(once_coverage(["dog", "frisbee", "catch"], "The dog, a frisbee, was caught by the cat and caught the dog, "
    ...     "making it a successful catch that the dog was able to"), 2)      # dog 3 uses, frisbee 1, catch 3
    0.56
    """
    uses = concept_uses(concepts, text)
    return sum(1.0 / n for n in uses if n) / len(concepts) if concepts else 0.0


class CoverageReward:
    """reward = (concepts used) / (concepts given), in [0, 1].

    A concept is used when one of its lemmas equals a lemma of a word of the continuation (lemminflect,
    any part of speech): "dogs" covers "dog", "caught" covers "catch". Empty continuation: 0.

    The concepts: `words=` given once (as a block of an objective: the same words for every text); else
    the context `concepts=[list of concepts, or one string "dog frisbee catch"]`, one per completion (the
    commongen task); else each prompt is read as the concept string.

    Example: concepts {dog, frisbee, catch}, "The dogs caught a frisbee." -> 3 / 3 = 1.0;
    "A dog ran." -> 1 / 3 = 0.33.
    """

    PARAMS = (Param("words", "words", "the words the text should use, e.g. \"boat, harbour, wind\""),)

    def __init__(self, words=None):
        self.words = parse_concepts(words) if words is not None else None

    def __call__(self, prompts, completions, concepts=None, **context) -> list[float]:
        completions = check_texts(completions)
        if self.words is not None:
            concepts = [self.words] * len(completions)
        elif concepts is None:
            concepts = check_texts(prompts, "prompts")
        concepts = check_context("concepts", concepts, len(completions), "concept lists")
        scores = []
        for concept_set, text in zip(concepts, completions):
            wanted = parse_concepts(concept_set)
            if not wanted:
                raise RewardInputError("A concept set is empty: give the concepts the text should use.")
            if is_empty(text):
                scores.append(EMPTY_SCORE)
                continue
            scores.append(sum(concepts_covered(wanted, text)) / len(wanted))
        return scores
