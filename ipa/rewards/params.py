"""The parameters a reward takes as a block of an objective (ipa.rewards.objective), declared on its class.

A reward class lists the parameters a user may set in `PARAMS`, a tuple of Param; its constructor takes
them as keyword arguments, beside the model arguments (device, embedder, ...) that users never set.
check_params validates what a user wrote, with errors that list the valid names and values. Text and words hold at
most ipa.errors.MAX_TEXT_CHARS characters, the one limit of free text, whether the block comes from the page, the
API, an objective file or an uploaded adapter's card (all of them reach Param.check).

    >>> from ipa.rewards.sentiment import SentimentReward
    >>> check_params("sentiment", SentimentReward.PARAMS, {"direction": "negative"})
    {'direction': 'negative'}
    >>> check_params("sentiment", SentimentReward.PARAMS, {"mood": "glad"})
    Traceback (most recent call last):
    ...
    ipa.rewards.params.ParamError: sentiment: unknown parameter 'mood'; valid parameters: direction (positive, negative or neutral; default positive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ipa.errors import NAME, NAME_RULE, UserError, check_text, quote
from ipa.rewards.text import parse_concepts

REQUIRED = object()
"""The default of a parameter the user must give."""
KINDS = ("text", "words", "number", "choice", "name")


class ParamError(UserError):
    """A block's parameters are wrong; the message names the block and lists what is valid."""


@dataclass(frozen=True)
class Param:
    """One parameter of a reward block."""

    name: str
    """The key beside "reward" in the objective file."""
    kind: str
    """'text' (a non-empty string), 'words' (a list of words, or one string separated by spaces or commas),
    'number' (between low and high), 'choice' (one of choices) or 'name' (ipa.errors.NAME: something the reward looks
    up by name in its own folder, such as a fitted preference model; never a path, so an objective from the page or an
    uploaded card cannot make a reward read a file of its choosing)."""
    help: str
    """What it means, for error messages and the page."""
    default: object = REQUIRED
    """The value when not given; REQUIRED when the user must give it."""
    choices: tuple = ()
    """For 'choice': the valid values."""
    low: float = -math.inf
    """For 'number': the smallest valid value."""
    high: float = math.inf
    """For 'number': the largest valid value."""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """'topic (required: a description in words ...)' for error messages."""
        what = " or ".join(self.choices) if self.kind == "choice" else self.help
        if self.kind == "choice" and len(self.choices) > 2:
            what = ", ".join(self.choices[:-1]) + " or " + self.choices[-1]
        if self.required:
            return f"{self.name} (required: {what})"
        return f"{self.name} ({what}{'' if self.default is None else f'; default {self.default}'})"

    def check(self, block: str, value):
        """The value, cleaned; ParamError when it is not valid."""
        if self.kind == "text":
            if not isinstance(value, str) or not value.strip():
                raise ParamError(f"{block}: '{self.name}' must be non-empty text ({self.help}), got {quote(value)}.")
            return check_text(value.strip(), f"{block}: '{self.name}'", error=ParamError)
        if self.kind == "words":
            try:
                words = parse_concepts(value)
            except TypeError:
                words = []
            if not words:
                raise ParamError(f"{block}: '{self.name}' must be a list of words or one string of words ({self.help}), "
                                 f"got {quote(value)}.")
            check_text(value if isinstance(value, str) else ", ".join(value), f"{block}: '{self.name}'", error=ParamError)
            return words
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not self.low <= value <= self.high:
                raise ParamError(f"{block}: '{self.name}' must be a number from {self.low:g} to {self.high:g}, got {quote(value)}.")
            return value
        if self.kind == "name":
            if not isinstance(value, str) or not NAME.fullmatch(value):
                raise ParamError(f"{block}: '{self.name}' must be {NAME_RULE} ({self.help}), got {quote(value)}.")
            return value
        if value not in self.choices:
            raise ParamError(f"{block}: '{self.name}' must be one of {', '.join(map(str, self.choices))}, got {quote(value)}.")
        return value


def check_params(block: str, params: tuple[Param, ...], given: dict) -> dict:
    """The block's parameters with defaults filled in; ONE ParamError naming every unknown or missing one."""
    known = {p.name: p for p in params}
    unknown = [k for k in given if k not in known]
    missing = [p.name for p in params if p.required and p.name not in given]
    if unknown or missing:
        problems = [f"unknown parameter{'s' * (len(unknown) > 1)} {', '.join(map(quote, unknown))}"] if unknown else []
        problems += [f"missing required parameter{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}"] if missing else []
        valid = "; ".join(p.describe() for p in params) if params else "none (it takes no parameters)"
        raise ParamError(f"{block}: {' and '.join(problems)}; valid parameters: {valid}.")
    return {p.name: p.check(block, given[p.name]) if p.name in given else p.default for p in params}
