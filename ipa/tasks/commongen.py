"""Constrained generation (CommonGen): one plain sentence that uses every given concept.

Reward: once_coverage × fluency × (1 if the sentence is finished else UNFINISHED); reported: coverage (each concept
used at all), once_coverage, finished (0/1) and fluency.

Why not coverage × fluency (issue 15; each case is a test in tests/test_rewards.py): it paid "The dog, a friendly and
energetic frisbee, was caught by the cat and caught the dog, making it a successful catch that the dog was able to"
0.92 against the base's "A dog, a frisbee, and a catch." 0.53: padding repeats the concepts and runs to the token
limit. once_coverage (ipa.rewards.coverage) counts a concept used n times as 1/n (dog 3, frisbee 1, catch 3: 0.56,
not 1.0), and a text that does not end a sentence (ipa.rewards.text.finished_sentence) keeps UNFINISHED = 0.5 of its
score: with the same fluency, 0.92 · 0.56 · 0.5 = 0.26 < 0.53.
"""

from __future__ import annotations

from ipa.rewards.objective import Block
from ipa.rewards.text import finished_sentence
from ipa.tasks.task import InputField, Rate, Task, demos, prose

UNFINISHED = 0.5
"""The share of its CommonGen reward that a text keeps when it does not end a sentence (cut off by the limit)."""
FIELDS = (InputField("concepts", "Concepts (3 to 5 words)", "concepts", "dog, frisbee, catch", 1),)


def _concept_list(inputs: dict) -> str:
    return ", ".join(inputs["concepts"])


TASK = Task(
    name="commongen",
    **prose("""
        label: CommonGen
        title: Constrained generation (CommonGen)
        description: Write one plain sentence that uses every given concept.
        reward: once_coverage × fluency × (1 if the sentence is finished else 0.5)
        notes: Measured base reward: chat 0.411, raw 0.261.
        reward_note: Measures whether each concept appears once, in a fluent and finished sentence; it can miss a sentence
          that uses every word but makes no sense.
        instruction: Write one plain, fluent sentence that uses every one of the given words.
    """),
    fields=FIELDS,
    prompt_format="chat",
    raw_prompt=lambda x: f"Write one sentence that uses all of these words: {_concept_list(x)}.\nSentence:",
    chat_messages=lambda x: [{"role": "user", "content": f"Write one short sentence that uses all of these words: {_concept_list(x)}."}],
    source=_concept_list,
    decode={"max_new_tokens": 32, "temperature": 0.7, "top_p": 0.9},
    demos=demos(FIELDS, """
        dog frisbee catch
        chef knife onion cut
        river boat row bridge
        child kite wind beach run
        guitar stage sing
        snow mountain ski jacket
    """),
    metrics=("coverage", "full_coverage", "finished_rate"),
    blocks=(
        Block("coverage", 0.0),
        Block("once_coverage"),
        Block("finished", 0.0),
        Block("fluency"),
        Block("finished", params={"unfinished": UNFINISHED}, hidden=True),
    ),
    rates=(
        Rate("full_coverage", "coverage = 1: every concept used", lambda x, text, s: s["coverage"] >= 1.0),
        Rate("finished_rate", "the sample ends a sentence (. ! ?) within the token limit",
             lambda x, text, s: finished_sentence(text)),
    ),
    data={"train": "commongen/train.concepts.txt", "eval": "commongen/dev.jsonl"},
)
