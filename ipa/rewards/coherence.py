"""Coherence: how well the continuation follows on from its prompt, as sentence-embedding similarity.

    >>> CoherenceReward()(["The city council met on Tuesday to discuss"],
    ...                   ["the new budget for road repairs and the library."])   # doctest: +SKIP
    [0.18]
"""

from __future__ import annotations

from ipa.rewards.resources import EmbeddingReward
from ipa.rewards.text import EMPTY_SCORE, check_pairs, clip01, is_empty


class CoherenceReward(EmbeddingReward):
    """coherence = max(0, cos(e(prompt), e(continuation))), in [0, 1].

    e = all-MiniLM-L6-v2 sentence embedding (first 128 word pieces). Negative cosines (rare with MiniLM)
    count as 0. Empty continuation: 0. As in the paper's open-ended task (which uses SimCSE), coherence
    rewards staying on the prompt's topic; diversity and fluency keep it from just copying the prompt.

    Example: "The city council met on Tuesday to discuss" + "the new budget for road repairs and the
    library." -> cos 0.18 -> 0.18; + "I love pizza so much it is great." -> cos 0.06 -> 0.06.

    The model: `embedder=` a ipa.rewards.resources.SentenceEmbedder to share, else the process's shared one.
    """

    def __call__(self, prompts, completions, **context) -> list[float]:
        prompts, completions = check_pairs(prompts, completions)
        cosines = self.embedder.similarity(prompts, completions)
        return [EMPTY_SCORE if is_empty(c) else clip01(cos) for c, cos in zip(completions, cosines)]
