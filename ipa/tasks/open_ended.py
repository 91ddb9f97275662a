"""Open-ended generation: continue the start of a passage coherently, without repeating yourself.

Reward: coherence × diversity × fluency (ipa.rewards.coherence, .diversity, .fluency), each reported.
"""

from __future__ import annotations

from ipa.rewards.objective import Block
from ipa.tasks.task import TEXT_FIELD, continuation, demos, prose

TASK = continuation(
    name="open_ended",
    **prose("""
        label: Open-ended
        title: Open-ended generation
        description: Continue the start of a passage coherently, without repeating yourself.
        reward: coherence × diversity × fluency
        notes: Raw continuation, as in the paper. Measured base reward: raw 0.400, chat 0.508 (chat writes a new text
          instead of continuing).
        reward_note: Measures whether the continuation stays on the passage's subject, does not repeat itself and reads
          fluently; it can miss invented facts, and one sample's score is noisy.
        instruction: Continue the passage coherently and on topic, in fluent prose, without repeating yourself.
    """),
    decode={"max_new_tokens": 48, "temperature": 1.0, "top_p": 0.9},
    demos=demos((TEXT_FIELD,), """
        The old lighthouse on the northern cape was built in 1874, and for almost a century
        Bread is one of the oldest prepared foods. Its basic ingredients are
        The first thing you notice when you enter the museum is
        Honeybees communicate the location of flowers to each other by
        In the small mountain village, winter usually arrives in
        The history of the bicycle begins in the early nineteenth century, when
    """),
    metrics=("coherence", "diversity"),
    blocks=(Block("coherence"), Block("diversity"), Block("fluency")),
    data="wiki/summaries_en-us.json",
)
