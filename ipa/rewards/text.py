"""Text helpers shared by the rewards: input checks, words, lemmas, n-grams, function words.

Everything here is plain Python (no models), so it is fast and works on any language: words are
runs of Unicode letters or digits, so "Le chat dort" and "猫が寝ている" are tokenised without errors.

    >>> words("The dogs caught a frisbee!")
    ['the', 'dogs', 'caught', 'a', 'frisbee']
    >>> sorted(lemmas("caught"))
    ['catch', 'caught']
    >>> distinct_n(["a", "b", "a", "b", "a"], 2)
    0.5
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

from lemminflect import getAllLemmas, getAllLemmasOOV

from ipa.errors import UserError

EMPTY_SCORE = 0.0
"""What every reward gives an empty (or whitespace-only) continuation: nothing generated earns nothing,
otherwise stopping at once would be the best policy for rewards such as 1 − toxicity."""

MAX_CHARS = 4000
"""Texts are cut to this many characters before any scorer sees them (each model also truncates to its
own token limit); a 4,000-character continuation is far beyond what the tasks generate."""

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

# Closed-class English words: articles, pronouns, prepositions, conjunctions, auxiliaries. Used to find
# content words (faithfulness, coverage) and to tell a sentence from a bare keyword list (fluency).
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no all both either neither another such what which who whom
whose i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves one ones
and or but nor so yet for if then than because while although though whether unless until since as
of in on at by to from with without into onto upon about above below over under between among through
during before after against along around across behind beyond near off out up down per via within
is am are was were be been being have has had having do does did doing done will would shall should can
could may might must ought let
not no nor very too also just only even still already again ever never always often here there where when
why how now more most less least much many few lot lots other own same just quite rather
's 're 've 'd 'll n't i'm you're it's that's there's don't doesn't didn't can't won't isn't aren't wasn't
""".split())


class RewardInputError(UserError):
    """A reward was called with input it cannot score; the message says what to pass instead."""


def check_texts(texts, what: str = "completions") -> list[str]:
    """A list of strings, each cut to MAX_CHARS; a clear TypeError for anything else.

    >>> check_texts(["ok"])
    ['ok']
    """
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not one string: wrap it as [{texts[:30]!r}].")
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] is a {type(text).__name__}, not a string.")
    return [text[:MAX_CHARS] for text in texts]


def check_pairs(prompts, completions) -> tuple[list[str], list[str]]:
    """Check a batch of (prompt, completion) pairs: both lists of strings of the same length."""
    completions = check_texts(completions, "completions")
    prompts = check_texts(prompts, "prompts")
    if len(prompts) != len(completions):
        raise RewardInputError(f"Got {len(prompts)} prompts for {len(completions)} completions: give one prompt per completion.")
    return prompts, completions


def check_context(name: str, values, n: int, kind: str = "strings") -> list:
    """A per-completion context list (e.g. knowledge passages): present and one per completion."""
    if values is None:
        raise RewardInputError(f"This reward needs `{name}=`: a list of {kind}, one per completion.")
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise TypeError(f"`{name}` must be a list of {kind}, one per completion, got {type(values).__name__}.")
    if len(values) != n:
        raise RewardInputError(f"Got {len(values)} items in `{name}` for {n} completions: give one per completion.")
    return list(values)


def is_empty(text: str) -> bool:
    return not text.strip()


def words(text: str) -> list[str]:
    """Lower-cased words (letters/digits, inner apostrophes kept), any script."""
    return [w.replace("’", "'") for w in WORD.findall(text.lower())]


def content_words(text: str) -> list[str]:
    """Words that carry meaning: not function words, not single characters, not pure numbers."""
    return [w for w in words(text) if w not in FUNCTION_WORDS and len(w) > 1 and not w.isdigit()]


@functools.lru_cache(maxsize=200_000)
def lemmas(word: str) -> frozenset[str]:
    """The word itself and all its lemmas under any part of speech ('caught' -> {caught, catch}).

    Unknown words (e.g. 'frisbees') go through lemminflect's rules for out-of-vocabulary nouns and verbs.
    """
    word = word.lower()
    found = {word}
    known = getAllLemmas(word)
    if known:
        for forms in known.values():
            found.update(forms)
    elif word.isascii() and word.isalpha():
        for upos in ("NOUN", "VERB"):
            for forms in getAllLemmasOOV(word, upos).values():
                found.update(forms)
    return frozenset(f.lower() for f in found)


def lemma_set(text: str, content_only: bool = False) -> set[str]:
    """Every lemma of every (content) word of a text."""
    found: set[str] = set()
    for w in (content_words(text) if content_only else words(text)):
        found |= lemmas(w)
    return found


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams; 1.0 when the text is too short to repeat an n-gram."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def clip01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s*$")


def finished_sentence(text: str) -> bool:
    """Whether the text ends a sentence: its last character, closing quotes and brackets aside, is . ! or ?.
    Decoding stops at the token limit mid-sentence, so an unfinished text is one the limit cut off.

    >>> finished_sentence("The dog caught the frisbee."), finished_sentence('He said "catch!"')
    (True, True)
    >>> finished_sentence("making it a successful catch that the dog was able to")
    False
    """
    return bool(SENTENCE_END.search(text))


def longest_copy(text: str, source: str) -> int:
    """The most consecutive words of `text` that also occur consecutively in `source` (words as `words`:
    lower-cased, punctuation ignored): the length of the longest verbatim copy. Below, "earth's only natural
    satellite" (4 words; "the moon" is 2, the passage's "is" breaks the run):

    >>> longest_copy("The Moon, Earth's only natural satellite, they say.", "The Moon is Earth's only natural satellite.")
    4
    """
    a, b = words(text), words(source)
    best = 0
    previous = [0] * (len(b) + 1)  # previous[j]: the common run ending at a[i - 1] and b[j - 1]
    for i in range(1, len(a) + 1):
        current = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def parse_concepts(concepts) -> list[str]:
    """Concepts from a list, or from one string separated by spaces, commas, '#' or '|'; CommonGen's
    POS tags ('dog_N') are dropped; lower-cased, order kept, duplicates removed.

    >>> parse_concepts("dog, frisbee catch")
    ['dog', 'frisbee', 'catch']
    >>> parse_concepts("field_N#look_V#stand_V")
    ['field', 'look', 'stand']
    """
    if isinstance(concepts, str):
        items = re.split(r"[\s,;#|]+", concepts)
    elif isinstance(concepts, (list, tuple)):
        if not all(isinstance(c, str) for c in concepts):
            raise TypeError("Concepts must be strings.")
        items = [part for c in concepts for part in re.split(r"[\s,;#|]+", c)]
    else:
        raise TypeError(f"Concepts must be a string or a list of strings, got {type(concepts).__name__}.")
    cleaned = [re.sub(r"_[A-Z]+$", "", item).strip().lower() for item in items]
    return list(dict.fromkeys(c for c in cleaned if c))
