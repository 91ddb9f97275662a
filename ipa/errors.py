"""User errors, and one rule for each kind of value a user gives (flags, API fields, page widgets, files): a number in a
range (whole where it counts something), free text within MAX_TEXT_CHARS, a name; or one message that names the field and
what it takes.

    >>> check_number(3.0, "samples", 1, 4, whole=True)
    3
    >>> check_number(2.7, "samples", 1, 4, whole=True)
    Traceback (most recent call last):
    ValueError: samples must be a whole number from 1 to 4, got 2.7.
    >>> check_number(float("nan"), "alpha", 0, 5)
    Traceback (most recent call last):
    ValueError: alpha must be a number from 0 to 5, got nan.
    >>> check_text("x" * 5000, "topic")
    Traceback (most recent call last):
    ValueError: topic must be text of at most 2,000 characters, got 5,000 characters.
    >>> check_name("../../etc", "task")
    Traceback (most recent call last):
    ValueError: task must be a name of 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit, got '../../etc'.
"""

from __future__ import annotations

import math
import numbers
import re

MAX_TEXT_CHARS = 2000
"""The longest free text one value may hold, wherever it enters: a box of the page (AppConfig.max_input_chars's
default), a reward block's parameter (ipa.rewards.params: from the page, the API, an objective file or an uploaded
adapter's card) and a text field of an adapter's card (ipa.policy_adapter)."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A name (an objective's, a task's on a card): what may be a file or folder name anywhere, and never a path."""
NAME_RULE = "a name of 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"


class UserError(ValueError):
    """A request, flag or file the user can fix; its message says what to change. Every such error of the project
    derives from this class, so that command lines and the page catch one class (one line, exit code 2, a pop-up)
    and everything else is a bug (a traceback)."""


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def describe_range(low: float, high: float | None, whole: bool = False) -> str:
    """'a whole number from 1 to 4', 'a number of at least 0'."""
    kind = "a whole number" if whole else "a number"
    if high is None:
        return f"{kind} of at least {_show(low)}"
    return f"{kind} from {_show(low)} to {_show(high)}"


def check_number(value, name: str, low: float, high: float | None = None, *, whole: bool = False,
                 error: type[Exception] = ValueError):
    """`value` as an int (whole) or float within [low, high] (high None: no upper bound); otherwise `error` with
    one line naming `name` and the range. Booleans, strings, None, NaN, infinities and fractions of a whole
    quantity are refused, never rounded."""
    allowed = describe_range(low, high, whole)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        got = "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]
        raise error(f"{name} must be {allowed}, got {got}.")
    number = float(value)
    if not math.isfinite(number) or number < low or (high is not None and number > high):
        raise error(f"{name} must be {allowed}, got {value!r}.")
    if whole:
        if number != int(number):
            raise error(f"{name} must be {allowed}, got {value!r}.")
        return int(number)
    return number


def quote(value, limit: int = 80) -> str:
    """repr(value) for a message, cut to `limit` characters: an error quotes what it refuses, never all 100 KB of it."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def check_text(value, name: str, max_chars: int = MAX_TEXT_CHARS, *, error: type[Exception] = ValueError) -> str:
    """`value` if it is a string of at most max_chars characters; otherwise `error` with one line naming `name`, the
    limit and what was given (its length, or its kind)."""
    if not isinstance(value, str):
        got = "nothing" if value is None else f"{type(value).__name__} {quote(value)}"
        raise error(f"{name} must be text of at most {max_chars:,} characters, got {got}.")
    if len(value) > max_chars:
        raise error(f"{name} must be text of at most {max_chars:,} characters, got {len(value):,} characters.")
    return value


def check_name(value, name: str, *, error: type[Exception] = ValueError) -> str:
    """`value` if it is a name (NAME: never a path, never markup); otherwise `error` naming `name` and the rule."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise error(f"{name} must be {NAME_RULE}, got {quote(value)}.")
    return value
