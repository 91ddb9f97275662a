"""Share links: one result's task, inputs, adapters with their alphas, settings and seed as a short URL query.

The query's keys are the names of the task's Generate endpoint (`generate_<task>`: its input fields, then
LINK_KEYS), so a link reads like the API call that made the result:

    >>> link_query("sentiment", {"text": "The harbour was quiet", "adapter": "sentiment", "alpha": 1.0, "n": 3,
    ...                          "max_new_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 123})
    'task=sentiment&text=The+harbour+was+quiet&adapter=sentiment&alpha=1&n=3&max_new_tokens=20&temperature=1&top_p=0.9&seed=123'
    >>> read_link("task=sentiment&text=The+harbour+was+quiet&alpha=9&seed=123").problems
    ['alpha must be a number from 0 to 5, got 9.']

Decoding is seeded, so opening a link with the seed a result actually used (Generation.seed: a random seed made
concrete) gives back the same text. Numbers are checked with the page's Settings rules, one message per bad value;
keys the format does not know (a tracker's `fbclid`, Gradio's `__theme`) are ignored. No Gradio here: the page's
wiring is app/share_ui.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote_plus, urlencode

from ipa.errors import UserError
from ipa.tasks import TASKS

ADAPTER_KEYS = ("adapter", "adapter_2")
"""Adapter names (a second adapter composes with the first when the page has one); "none" is the base alone."""
NUMBER_KEYS = ("alpha", "alpha_2", "n", "max_new_tokens", "temperature", "top_p", "seed")
"""Numbers, each checked by Settings' rule for its name (alpha_2 by alpha's)."""
LINK_KEYS = ("adapter", "alpha", "adapter_2", "alpha_2", "n", "max_new_tokens", "temperature", "top_p", "seed")
"""The generate endpoint's parameters after the task's input fields, in the link's order."""
NO_ADAPTER = "none"


class LinkError(UserError):
    """A share link that cannot be read; the message says what is wrong with it."""


@dataclass
class SharedRun:
    """What a share link asks for: the task, the endpoint's parameters it gave (checked), and what was wrong."""

    task: str | None
    values: dict = field(default_factory=dict)
    """Parameter name -> value (inputs as text, adapters as names, numbers as int or float), only those given."""
    problems: list[str] = field(default_factory=list)
    """One sentence per value left out because it was wrong."""

    @property
    def complete(self) -> bool:
        """Every input of the task given and nothing wrong: the page may generate at once."""
        return (self.task is not None and not self.problems
                and all(self.values.get(f.name) for f in TASKS[self.task].fields))


def _number_text(value) -> str:
    """The shortest text that reads back as the same number: 1.0 -> '1', 0.9 -> '0.9'."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def link_query(task: str, values: Mapping[str, object]) -> str:
    """The query (without '?') for a result of `task` made with these Generate parameters; the names the link
    format does not know are left out, and a second adapter only when one was chosen."""
    if task not in TASKS:
        raise LinkError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")
    pairs = [("task", task)]
    for name in [f.name for f in TASKS[task].fields]:
        if values.get(name) is not None:
            pairs.append((name, str(values[name])))
    no_second = values.get("adapter_2") in (None, "", NO_ADAPTER)
    for name in LINK_KEYS:
        value = values.get(name)
        if value is None or value == "" or (no_second and name in ("adapter_2", "alpha_2")):
            continue
        pairs.append((name, _number_text(value) if name in NUMBER_KEYS else str(value)))
    return urlencode(pairs, safe=",", quote_via=quote_plus)


def _read_number(name: str, text: str):
    """A number from a link, checked by the page's rule for `name` (Settings.LIMITS, with -1 = a random seed)."""
    from app.settings import Settings  # it imports torch; a link is read only when the page serves one

    try:
        number = float(text)
    except ValueError:
        raise LinkError(f"{name} must be a number, got {text[:40]!r}.") from None
    if number.is_integer():
        number = int(number)
    rule = "alpha" if name.startswith("alpha") else name
    try:
        Settings(**{rule: number})
    except UserError as err:
        raise LinkError(str(err).replace(rule, name, 1) if rule != name else str(err)) from None
    return number


def read_link(query: str | Mapping[str, str]) -> SharedRun:
    """The run a link's query asks for; its `problems` list each value that was left out (never raises).

    >>> run = read_link("task=commongen&concepts=dog,+frisbee,+catch&n=two&seed=7")
    >>> run.values, run.problems, run.complete
    ({'concepts': 'dog, frisbee, catch', 'seed': 7}, ["n must be a number, got 'two'."], False)
    """
    params = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True)) if isinstance(query, str) else dict(query)
    task = params.get("task")
    if task not in TASKS:
        return SharedRun(None, problems=[f"The link names the task {str(task)[:40]!r}, which this playground does not "
                                         f"have: use one of {', '.join(TASKS)}."])
    run = SharedRun(task)
    for name in [f.name for f in TASKS[task].fields] + list(LINK_KEYS):
        if name not in params:
            continue
        if name in NUMBER_KEYS:
            try:
                run.values[name] = _read_number(name, params[name].strip())
            except LinkError as err:
                run.problems.append(str(err))
        else:
            run.values[name] = params[name]
    return run
