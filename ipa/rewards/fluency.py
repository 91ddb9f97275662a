"""Fluency: is the continuation, read on its own, ordinary well-formed text?

Judged WITHOUT the prompt. Given the prompt, a list that repeats the prompt's words is predictable and
looks fluent (docs/design.md: perplexity fell from 16.7 to 4.9 while the policy learned to write keyword
lists), so the base LM scores the continuation standing alone, and two penalties catch what a small LM
misses: repeated word n-grams and runs of bare comma-separated items.

    >>> reward = FluencyReward()                                              # doctest: +SKIP
    >>> reward(["", ""], ["The dog caught the frisbee in the park.", "glass, hair, hold, lamp, table"])  # doctest: +SKIP
    [1.0, 0.09]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ipa.rewards.diversity import diversity
from ipa.rewards.text import EMPTY_SCORE, check_texts, clip01, is_empty, words

PPL_GOOD = 40.0
"""Per-token perplexity at or below which the token term is 1. Measured under the 135M base from a document
start: plain sentences 15-130 ("The old bridge was closed for repairs, so we took the ferry across the river."
31); CommonGen's human reference sentences (96 of dev): deciles 40 / 70 / 108 (median) / 163 / 354."""
PPL_BAD = 1000.0
"""Per-token perplexity at or above which the token term is 0: word lists score 300-8,500 ("glass, hair, hold,
lamp, table" 320, "great wonderful amazing fantastic excellent superb" 8,500), Latin-script gibberish more."""
NATS_PER_CHAR_GOOD = 1.1
"""Negative log-likelihood per character at or below which the character term is 1 (CommonGen references:
deciles 0.90 / 0.99 / 1.06 (median) / 1.22 / 1.36)."""
NATS_PER_CHAR_BAD = 2.2
"""... at or above which it is 0: gibberish 2.9, other scripts and languages 2.2-3.3 (French 2.25, a line of
Hebrew 3.28), a bare concept list "dog frisbee catch" 2.44."""
MAX_BARE_RUN = 3
"""Up to this many consecutive bare items ("eggs, milk, bread") are ordinary prose; each extra one halves the score."""
CONJUNCTIONS = frozenset({"and", "or", "but", "then", "nor", "so", "yet", "plus"})
SEPARATORS = re.compile(r"[,;\n•·|]+|\s[-–—*]\s|^\s*[-*]\s", re.MULTILINE)


@dataclass
class FluencyDetails:
    """The terms of one continuation's fluency."""

    perplexity: float
    """exp(mean negative log-likelihood) of the continuation's tokens under the base LM, no prompt (inf when empty)."""
    nats_per_char: float
    """Total negative log-likelihood / number of characters: the same likelihood, per character."""
    lm: float
    """min(token term, character term), in [0, 1] (see FluencyReward)."""
    repetition: float
    """∏ distinct-n of the words, n = 2, 3, 4 (ipa.rewards.diversity): 1 without repeated word n-grams."""
    list_penalty: float
    """1, or 0.5 for every bare item beyond MAX_BARE_RUN in a row."""
    fluency: float
    """lm × repetition × list_penalty (0 for an empty continuation)."""


def lm_score(perplexity: float, nats_per_char: float = 0.0) -> float:
    """min of two linear maps of the likelihood: per token, log-linear from PPL_GOOD (1) to PPL_BAD (0); per
    character, linear from NATS_PER_CHAR_GOOD (1) to NATS_PER_CHAR_BAD (0).

    >>> lm_score(40.0), lm_score(1000.0), round(lm_score(200.0), 2), round(lm_score(40.0, 1.65), 2)
    (1.0, 0.0, 0.5, 0.5)
    """
    if not (math.isfinite(perplexity) and math.isfinite(nats_per_char)):
        return 0.0
    token_term = clip01(math.log(PPL_BAD / perplexity) / math.log(PPL_BAD / PPL_GOOD))
    char_term = clip01((NATS_PER_CHAR_BAD - nats_per_char) / (NATS_PER_CHAR_BAD - NATS_PER_CHAR_GOOD))
    return min(token_term, char_term)


def longest_bare_run(text: str) -> int:
    """The most consecutive comma/line-separated items of one or two words (not led by a conjunction).

    >>> longest_bare_run("A glass, hair, hold, lamp, table uses all the words")
    4
    >>> longest_bare_run("I bought apples, pears, and plums at the market.")
    1
    """
    run = best = 0
    for segment in SEPARATORS.split(text):
        tokens = words(segment)
        if not tokens:
            continue
        bare = len(tokens) <= 2 and tokens[0] not in CONJUNCTIONS
        run = run + 1 if bare else 0
        best = max(best, run)
    return best


def list_penalty(text: str) -> float:
    """0.5 ** (bare items in a row beyond MAX_BARE_RUN)."""
    return 0.5 ** max(0, longest_bare_run(text) - MAX_BARE_RUN)


class FluencyReward:
    """fluency = lm × repetition × list_penalty, in [0, 1]; higher is more fluent.

    lm         = min(clip(log(PPL_BAD / ppl) / log(PPL_BAD / PPL_GOOD), 0, 1),          PPL_GOOD 40, PPL_BAD 1000
                     clip((NPC_BAD − npc) / (NPC_BAD − NPC_GOOD), 0, 1))                  NPC_GOOD 1.1, NPC_BAD 2.2
                 ppl = exp(−mean log p(token)) and npc = −Σ log p(token) / characters, the base LM's likelihood
                 of the continuation alone (from an <|endoftext|> start; first LM_MAX_TOKENS tokens). Both, because
                 each misses something: per token, a line in a script the tokenizer splits into bytes (Hebrew,
                 say) looks likely (ppl 14: its second bytes are near-certain), per character it does not (3.3);
                 per character, a list of long positive words looks ordinary (1.09), per token it does not (8,500).
    repetition = ∏_{n=2,3,4} distinct-n of the continuation's words (ipa.rewards.diversity: 1 without repeats;
                 "cut and cut a piece of lumber into a piece of lumber ..." 0.42). The open_ended task also
                 multiplies by diversity, so repetition counts twice there: degeneration is its main failure.
    list_penalty = 0.5 ** max(0, longest run of bare comma-separated items − 3)
    An empty continuation scores 0. Text in another language mostly scores low: the base LM is English.

    Example: "A glass, hair, hold, lamp, table uses all the words in the sentence." has ppl ≈ 232 and
    npc ≈ 1.44, so lm = min(log(1000/232)/log(25), (2.2 − 1.44)/1.1) = min(0.45, 0.69) = 0.45; no repeated
    n-grams (repetition = 1); a run of 4 bare items ("A glass", "hair", "hold", "lamp"): list_penalty = 0.5;
    fluency = 0.23. "She held a glass of water under the lamp while brushing her hair at the table." has
    ppl ≈ 71, npc ≈ 0.93: lm = min(0.82, 1) = 0.82 = fluency.

    The model: `lm=` a ipa.rewards.resources.ScoringLM to share, else the process's shared one for `model`.
    """

    def __init__(self, model: str = "embedded", device: str = "cpu", lm=None):
        if lm is None:
            from ipa.rewards.resources import scoring_lm

            lm = scoring_lm(model, str(device))
        self.lm = lm

    def details(self, completions: list[str]) -> list[FluencyDetails]:
        # Cut to the tokens the LM scores, so that every term reads the same text.
        completions = self.lm.truncate(check_texts(completions))
        logprobs = self.lm.token_logprobs(completions)
        out = []
        for text, lps in zip(completions, logprobs):
            if is_empty(text) or not lps:
                out.append(FluencyDetails(math.inf, math.inf, 0.0, 0.0, 0.0, EMPTY_SCORE))
                continue
            perplexity = math.exp(min(700.0, -sum(lps) / len(lps)))
            nats_per_char = -sum(lps) / max(1, len(text.strip()))
            lm = lm_score(perplexity, nats_per_char)
            repetition = diversity(text)
            penalty = list_penalty(text)
            out.append(FluencyDetails(perplexity, nats_per_char, lm, repetition, penalty, lm * repetition * penalty))
        return out

    def perplexities(self, completions: list[str]) -> list[float]:
        """Standalone perplexity of each continuation (inf for an empty one)."""
        return [d.perplexity for d in self.details(completions)]

    def __call__(self, prompts, completions, **context) -> list[float]:
        return [d.fluency for d in self.details(completions)]
