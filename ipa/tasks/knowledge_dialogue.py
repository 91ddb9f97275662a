"""Knowledge-grounded dialogue: answer the user with what the knowledge passage says, and nothing it does not.

Reward: faithfulness × (0.5 + 0.5 · relevance) × copy_factor; reported: faithfulness, relevance, copy_factor,
knowledge_precision and knowledge_f1 (ipa.rewards.faithfulness).

Relevance enters at half weight (the block's floor 0.5): a terse grounded answer shares few words with the question.
copy_factor closes a hole seen in use (issue 15): copying the passage word for word scored 1.00. It falls from 1 at
a 6-word verbatim run to 0.2 at 12 words or more: a copy with faithfulness 1.0 scores 0.2, a reply in its own words
with faithfulness 0.7 and relevance 0.9 scores 0.67.
"""

from __future__ import annotations

from ipa.rewards.faithfulness import COPY_LONG
from ipa.rewards.objective import Block
from ipa.rewards.text import longest_copy
from ipa.tasks.task import InputField, Rate, Task, demos, first_sentences, prose

COPY_WORDS = COPY_LONG
"""A sample copies its passage when it repeats this many consecutive words of it (copy_rate): 12."""
FIELDS = (
    InputField("knowledge", "Knowledge passage", "text", "The Moon is Earth's only natural satellite ...", 5),
    InputField("message", "User message", "text", "How far away is the Moon?", 2),
)

TASK = Task(
    name="knowledge_dialogue",
    **prose("""
        label: Knowledge dialogue
        title: Knowledge-grounded dialogue
        description: Answer the user with what the knowledge passage says, and nothing it does not.
        reward: faithfulness × (0.5 + 0.5 · relevance) × copy_factor
        notes: Measured base reward: chat 0.603, raw 0.589 (a tie).
        reward_note: Measures whether the reply says only what the passage says, on the question's topic, without copying 12
          words or more in a row; it can miss a reply that is faithful but does not answer the question.
        instruction: Answer the question directly, using only facts stated in the knowledge passage.
    """),
    fields=FIELDS,
    prompt_format="chat",
    raw_prompt=lambda x: f"Knowledge: {first_sentences(x['knowledge'])}\nUser: {x['message']}\nAssistant:",
    chat_messages=lambda x: [
        {"role": "system", "content": f"Answer the user's question using only this knowledge:\n{first_sentences(x['knowledge'])}"},
        {"role": "user", "content": x["message"]},
    ],
    source=lambda x: x["message"],
    decode={"max_new_tokens": 48, "temperature": 0.7, "top_p": 0.9},
    demos=demos(FIELDS, """
        The Moon is Earth's only natural satellite. It orbits at an average distance of about 384,400 km and always
            shows the same face to Earth, because it is tidally locked. | Why do we always see the same side of the Moon?
        Honey is made by bees from the nectar of flowers. Because it is very low in water and slightly acidic, bacteria
            cannot grow in it, so sealed honey keeps for years. | How long does honey last?
        The Great Wall of China is a series of fortifications built over many centuries, mostly between the 7th century
            BC and the 17th century, to protect Chinese states from northern raids. | What was the Great Wall built for?
        Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make sugar, releasing
            oxygen as a by-product. | What do plants need for photosynthesis?
        Mount Everest, on the border of Nepal and China, is Earth's highest mountain above sea level, at 8,849 metres.
            It was first climbed in 1953 by Edmund Hillary and Tenzing Norgay. | Who climbed Everest first?
        The violin is a string instrument with four strings tuned in perfect fifths. It is usually played with a bow
            and is the smallest and highest-pitched member of its family. | How many strings does a violin have?
    """),
    metrics=("knowledge_precision", "knowledge_f1", "faithfulness", "copy_rate"),
    blocks=(
        Block("faithfulness"),
        Block("relevance", floor=0.5),
        Block("copy_factor"),
        Block("knowledge_overlap", 0.0, {"measure": "precision"}, part="knowledge_precision"),
        Block("knowledge_overlap", 0.0, {"measure": "f1"}, part="knowledge_f1"),
    ),
    rates=(Rate("copy_rate", f"the sample repeats {COPY_WORDS} or more consecutive words of the passage",
                lambda x, text, s: longest_copy(text, x["knowledge"]) >= COPY_WORDS),),
    data="wiki/summaries_en-us.json",
)
