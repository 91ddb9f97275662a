"""Topic: is the continuation about a subject the user described in words? Sentence-embedding similarity.

    >>> reward = TopicReward("the ocean and the sea")                                      # doctest: +SKIP
    >>> reward(["", ""], ["The waves rolled onto the beach as the tide came in.",
    ...                   "The city council met on Tuesday to discuss the budget."])       # doctest: +SKIP
    [1.0, 0.03]
"""

from __future__ import annotations

from ipa.rewards.params import Param
from ipa.rewards.resources import EmbeddingReward
from ipa.rewards.text import EMPTY_SCORE, check_texts, clip01, is_empty

FULL_TOPIC_COSINE = 0.4
"""MiniLM cosine of a text with a short topic description at which the text counts as fully on topic.
Measured (all-MiniLM-L6-v2, 4 descriptions such as "the ocean and the sea", "cooking and food", 17
one-sentence texts): texts on the topic 0.25-0.49 (median 0.32); texts on the other topics and neutral
news-like sentences 0.00-0.20 (mean 0.06). Hence score = cos / 0.4: off-topic text mostly scores 0-0.4
(mean 0.15), on-topic text 0.6-1.0. The map has no floor above zero on purpose: an off-topic sample still
ranks below a half-on-topic one, which is what the training signal needs (a floor would flatten it)."""


class TopicReward(EmbeddingReward):
    """topic = clip(cos(e(topic description), e(continuation)) / 0.4, 0, 1), in [0, 1].

    e = all-MiniLM-L6-v2 sentence embedding (first 128 word pieces), the model coherence and relevance
    share. The prompt is not read: the topic is the user's, not the input's (relevance rewards the input's).
    Empty continuation: 0.

    Example, topic "the ocean and the sea": "The waves rolled onto the beach as the tide came in." cos 0.49
    -> 1.0; "Fishermen sailed out past the reef at dawn." cos 0.26 -> 0.65; "The city council met on
    Tuesday to discuss the budget." cos 0.01 -> 0.03.

    The model: `embedder=` a ipa.rewards.resources.SentenceEmbedder to share, else the process's shared one.
    """

    PARAMS = (Param("topic", "text", "a description in words of what the text should be about, e.g. \"the ocean and the sea\""),)

    def __init__(self, topic: str, device: str = "cpu", embedder=None):
        if not isinstance(topic, str) or not topic.strip():
            raise ValueError("TopicReward needs a topic: a description in words, e.g. 'the ocean and the sea'.")
        super().__init__(device, embedder)
        self.topic = topic.strip()

    def cosines(self, completions) -> list[float]:
        """The raw cosine of each continuation with the description, in [-1, 1] (0 for an empty one)."""
        completions = check_texts(completions)
        return self.embedder.similarity([self.topic] * len(completions), completions)

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        cosines = self.cosines(completions)
        return [EMPTY_SCORE if is_empty(c) else clip01(cos / FULL_TOPIC_COSINE) for c, cos in zip(completions, cosines)]
