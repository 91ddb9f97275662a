"""User errors, and one rule for every number a user gives (flags, API fields, page widgets): a real number in a range, whole where
it counts something, or one message that names the field and the allowed range.

    >>> check_number(3.0, "samples", 1, 4, whole=True)
    3
    >>> check_number(2.7, "samples", 1, 4, whole=True)
    Traceback (most recent call last):
    ValueError: samples must be a whole number from 1 to 4, got 2.7.
    >>> check_number(float("nan"), "alpha", 0, 5)
    Traceback (most recent call last):
    ValueError: alpha must be a number from 0 to 5, got nan.
"""

from __future__ import annotations

import math
import numbers


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
