"""A reward written in Python by the user, as a block of an objective: command line only (the page never loads code).

    python -m ipa.training.loop --objective mine.json --reward-module my_rewards.py:Politeness

my_rewards.py holds a class in the project's reward shape: `__init__` with keyword parameters (declared in
an optional PARAMS, see ipa.rewards.params; without it the block takes no parameters), and `__call__(prompts,
completions, **context) -> list[float]`, one score in [0, 1] per completion. The objective names it by its
class name: {"reward": "Politeness", "weight": 1}.

Whatever the user's code does wrong (a missing file or class, an exception on load or while scoring, a
wrong number of scores, a score outside [0, 1] or not a number) is one RewardModuleError that names the
module and the class.

    >>> name, cls = load_reward_module("my_rewards.py:Politeness")   # doctest: +SKIP
    >>> reward = cls(); reward(["Hi"], ["Thank you kindly."])           # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

from ipa.errors import UserError


class RewardModuleError(UserError):
    """A user's reward module cannot be loaded or failed; the message names it."""


def load_reward_module(spec: str) -> tuple[str, type]:
    """(class name, checked wrapper class) for 'path/to/file.py:ClassName'."""
    path_text, sep, class_name = str(spec).rpartition(":")
    if not sep or not path_text or not class_name.isidentifier():
        raise RewardModuleError(f"--reward-module takes FILE.py:ClassName, got {spec!r}.")
    path = Path(path_text).expanduser()
    if path.suffix != ".py" or not path.is_file():
        raise RewardModuleError(f"The reward module {path} is not a Python file that exists (--reward-module {spec}).")
    module_name = f"ipa_user_reward_{abs(hash(str(path.resolve())))}"
    try:
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        loader.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any failure in the user's code is one user error naming it
        raise RewardModuleError(f"The reward module {spec} raised {type(err).__name__} while loading: {err}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module_name)
        raise RewardModuleError(f"The reward module {path} has no class {class_name!r}"
                                f"{'; its classes: ' + ', '.join(found) if found else ''}.")
    if not callable(getattr(cls, "__call__", None)):
        raise RewardModuleError(f"{spec}: {class_name} has no __call__(prompts, completions, **context).")
    return class_name, user_reward_class(cls, spec)


def load_reward_modules(specs: str | list[str] | tuple[str, ...]) -> dict[str, type]:
    """The reward classes of several 'FILE.py:ClassName' specs (a list, or one string separated by commas), by
    class name, as block classes for an objective (Objective.from_dict's extra_rewards). '' gives {}.

    >>> load_reward_modules("my_rewards.py:Politeness,other.py:Brevity")      # doctest: +SKIP
    {'Politeness': <class 'UserReward[Politeness]'>, 'Brevity': <class 'UserReward[Brevity]'>}
    """
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    classes: dict[str, type] = {}
    for spec in specs:
        name, cls = load_reward_module(spec.strip())
        if name in classes:
            raise RewardModuleError(f"Two reward modules define a class {name!r} ({spec}): an objective names a block "
                                    "by its class name, so rename one.")
        classes[name] = cls
    return classes


def user_reward_class(cls: type, spec: str) -> type:
    """A subclass-free wrapper around a user's reward class: same PARAMS, every error and bad score named."""

    class UserReward:
        PARAMS = tuple(getattr(cls, "PARAMS", ()))
        user_class = cls

        def __init__(self, **params):
            try:
                self.reward = cls(**params)
            except Exception as err:  # noqa: BLE001
                raise RewardModuleError(f"The reward {spec} raised {type(err).__name__} when created: {err}") from None

        def __call__(self, prompts, completions, **context) -> list[float]:
            try:
                scores = list(self.reward(prompts, completions, **context))
            except Exception as err:  # noqa: BLE001
                raise RewardModuleError(f"The reward {spec} raised {type(err).__name__} while scoring: {err}") from None
            if len(scores) != len(completions):
                raise RewardModuleError(f"The reward {spec} returned {len(scores)} scores for {len(completions)} completions.")
            for s in scores:
                if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s <= 1:
                    raise RewardModuleError(f"The reward {spec} returned {s!r}: every score must be a number in [0, 1].")
            return [float(s) for s in scores]

    UserReward.__name__ = UserReward.__qualname__ = f"UserReward[{cls.__name__}]"
    UserReward.__doc__ = cls.__doc__
    return UserReward
