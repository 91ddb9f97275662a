"""Faithfulness (knowledge-grounded dialogue): does the reply stay within the knowledge passage?

    >>> reward = FaithfulnessReward()                                           # doctest: +SKIP
    >>> reward(["Tell me about the Moon."], ["The Moon orbits the Earth."],
    ...        knowledge=["The Moon is Earth's only natural satellite. It orbits the Earth."])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from ipa.rewards.resources import EmbeddingReward
from ipa.rewards.text import (EMPTY_SCORE, check_context, check_texts, clip01, content_words, is_empty, lemma_set,
                          lemmas, longest_copy)


@dataclass
class KnowledgeOverlap:
    """Content-word overlap of a reply with its knowledge passage (lemmatised)."""

    precision: float
    """Share of the reply's content words that occur in the passage (the paper's knowledge precision)."""
    recall: float
    """Share of the passage's content words that the reply uses."""
    f1: float
    """Harmonic mean of precision and recall (knowledge F1)."""


def knowledge_overlap(reply: str, knowledge: str) -> KnowledgeOverlap:
    """Precision / recall / F1 of the reply's content words against the passage; a word matches when it
    shares a lemma with a passage word ("orbiting" matches "orbits").

    >>> knowledge_overlap("The Moon orbits Earth.", "The Moon is Earth's satellite; it orbits Earth.").precision
    1.0
    """
    reply_words = set(content_words(reply))
    passage_words = set(content_words(knowledge))
    if not reply_words or not passage_words:
        return KnowledgeOverlap(0.0, 0.0, 0.0)
    passage_lemmas = lemma_set(knowledge, content_only=True)
    reply_lemmas = lemma_set(reply, content_only=True)
    precision = sum(1 for w in reply_words if lemmas(w) & passage_lemmas) / len(reply_words)
    recall = sum(1 for w in passage_words if lemmas(w) & reply_lemmas) / len(passage_words)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return KnowledgeOverlap(precision, recall, f1)


COPY_OK = 6
"""A verbatim run of up to this many passage words is a quotation of a name or a phrase, not copying."""
COPY_LONG = 12
"""A run of this many passage words or more is a copy (ipa.tasks.metrics' copy_rate counts these)."""
COPY_FLOOR = 0.2
"""copy_factor of a copy: a copied reply keeps a fifth of its score, so that among copies the faithful one still
ranks first, but any reply in its own words that is half as faithful beats it."""


def copy_factor(reply: str, knowledge: str) -> float:
    """1 for a reply in its own words, falling linearly to COPY_FLOOR as its longest verbatim run of passage words
    (ipa.rewards.text.longest_copy, L) grows from COPY_OK to COPY_LONG:

        copy_factor = 1 − (1 − COPY_FLOOR) · clip((L − COPY_OK) / (COPY_LONG − COPY_OK), 0, 1)

    >>> passage = "The Moon is Earth's only natural satellite. It orbits the Earth at an average distance of 384,400 km."
    >>> copy_factor("It is our only natural satellite, about 384,400 km away.", passage)       # L = 3
    1.0
    >>> round(copy_factor("The Moon is Earth's only natural satellite. It orbits the Earth at an average distance", passage), 2)       # L = 14
    0.2
    """
    run = longest_copy(reply, knowledge)
    return 1.0 - (1.0 - COPY_FLOOR) * clip01((run - COPY_OK) / (COPY_LONG - COPY_OK))


class FaithfulnessReward(EmbeddingReward):
    """faithfulness = 0.5 · knowledge precision + 0.5 · max(0, cos(e(knowledge), e(reply))), in [0, 1].

    Knowledge precision (Dinan et al. 2019; used by the paper's dialogue task) is the share of the reply's
    content words (not function words, lemmatised) found in the passage: it falls when the reply brings in
    words the passage does not support. Precision alone is gamed by a reply of one passage word, and says
    nothing about meaning, so half the score is the MiniLM similarity of reply and passage. Recall is not
    rewarded: a good reply uses a small part of a long passage. Empty reply (or one with no content words
    and no similarity): 0.

    Context: `knowledge=[passage, ...]`, one per completion (required).

    Example: passage "The Moon is Earth's only natural satellite. It orbits the Earth every 27 days.",
    reply "The Moon orbits the Earth every 27 days." -> precision 1.0 (moon, orbits, earth, days all in the
    passage), cos ≈ 0.85 -> 0.93; reply "Bananas are rich in potassium." -> precision 0,
    cos ≈ 0.05 -> 0.03.

    The model: `embedder=` a ipa.rewards.resources.SentenceEmbedder to share, else the process's shared one.
    """

    def overlaps(self, completions, knowledge) -> list[KnowledgeOverlap]:
        completions = check_texts(completions)
        knowledge = check_texts(check_context("knowledge", knowledge, len(completions), "passages"), "knowledge")
        return [knowledge_overlap(c, k) for c, k in zip(completions, knowledge)]

    def __call__(self, prompts, completions, knowledge=None, **context) -> list[float]:
        completions = check_texts(completions)
        knowledge = check_texts(check_context("knowledge", knowledge, len(completions), "passages"), "knowledge")
        cosines = self.embedder.similarity(knowledge, completions)
        scores = []
        for reply, passage, cos in zip(completions, knowledge, cosines):
            if is_empty(reply):
                scores.append(EMPTY_SCORE)
                continue
            scores.append(0.5 * knowledge_overlap(reply, passage).precision + 0.5 * clip01(cos))
        return scores
