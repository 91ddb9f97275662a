"""Positive sentiment: continue a neutral prompt in a positive tone.

Reward: positivity × fluency. The fluency factor is there because VADER is a word lexicon: "love love love great
happy wonderful amazing" has positivity 0.99 (fluency 0.00) and beats the plain "and everyone was happy to finally
be home." (positivity 0.79, fluency 0.63) on positivity alone; with the factor they score 0.00 and 0.50.
"""

from __future__ import annotations

from ipa.rewards.objective import Block
from ipa.tasks.task import TEXT_FIELD, Rate, continuation, demos, prose

TASK = continuation(
    name="sentiment",
    **prose("""
        label: Sentiment
        title: Positive sentiment
        description: Continue a neutral prompt in a positive tone.
        reward: positivity × fluency
        notes: Measured base reward: raw 0.471, chat 0.412.
        reward_note: Measures how positive (VADER, a word list) and fluent the continuation is; it can miss sarcasm, and
          whether the text still follows the prompt.
        instruction: Continue the text in a warm, positive tone.
    """),
    decode={"max_new_tokens": 20, "temperature": 1.0, "top_p": 0.9},
    demos=demos((TEXT_FIELD,), """
        The train was forty minutes late, and when it finally arrived
        I opened the letter from the university and
        The restaurant on the corner changed owners last month, and the food
        After three weeks of rain, the weekend forecast says
        My first day at the new job was
        The results of the survey were published this morning, and
    """),
    metrics=("positivity", "positive_rate"),
    blocks=(Block("sentiment", part="positivity"), Block("fluency")),
    rates=(Rate("positive_rate", "positivity > 0.5", lambda x, text, s: s["positivity"] > 0.5),),
    data="wiki/summaries_en-us.json",
)
