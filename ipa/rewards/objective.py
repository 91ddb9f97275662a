"""An objective: reward blocks with weights, combined by a weighted geometric mean; written as JSON by hand.

    >>> objective = Objective.from_dict({"name": "cheerful-ocean", "prompts": "passages", "blocks": [
    ...     {"reward": "sentiment", "weight": 1.0},
    ...     {"reward": "topic", "topic": "the ocean and the sea", "weight": 1.0}]})
    >>> objective.labels
    ['sentiment', 'topic']
    >>> round(combine([0.9, 0.4], objective.weights), 2)        # sqrt(0.9 · 0.4)
    0.6

The file format (each block's parameters beside its `reward` name; `weight` defaults to 1; `prompts` is
optional: a prompt set's name or a file, see ipa.tasks.objective):

    {"name": "cheerful-ocean",
     "blocks": [{"reward": "sentiment", "weight": 1.0},
                {"reward": "topic", "topic": "the ocean and the sea", "weight": 1.0}],
     "prompts": "passages"}

Blocks are the rewards of ipa.rewards.REWARDS (their parameters in each class's PARAMS) except those in
NOT_BLOCKS, plus reward classes a user loads from a Python file (ipa.rewards.user_module, command line only).
An unknown reward name or parameter, a missing required parameter or a bad weight is one ObjectiveError
that lists every problem and the valid choices.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ipa.errors import MAX_TEXT_CHARS, NAME, NAME_RULE, UserError, quote
from ipa.rewards import REWARDS
from ipa.rewards.params import ParamError, check_params

NOT_BLOCKS = {
    "faithfulness": "it needs a knowledge passage for every input, which an objective's prompts do not carry",
}
"""Rewards that cannot be a block of an objective, and why."""
PART_NAMES = {"toxicity": "low_toxicity"}
"""A block's part name where its reward's name would mislead: the toxicity reward is 1 − toxicity."""
MAX_WEIGHT = 100.0
MAX_BLOCKS = 12
KEYS = ("name", "blocks", "prompts")


class ObjectiveError(UserError):
    """An objective cannot be read or is not valid; the message lists every problem and what is valid."""


def block_rewards(extra: dict[str, type] | None = None) -> dict[str, type]:
    """The reward classes an objective may use as blocks: REWARDS less NOT_BLOCKS, plus `extra` (user modules)."""
    return {**{k: v for k, v in REWARDS.items() if k not in NOT_BLOCKS}, **(extra or {})}


def combine(scores: list[float], weights: list[float]) -> float:
    """The weighted geometric mean R = Π s_i ^ (w_i / Σ w) = exp(Σ w_i · log s_i / Σ w), in [0, 1].

    A block that scores 0 makes R = 0, whatever the others: no block can be traded away (with an
    arithmetic mean, a fluent off-topic text could make up for missing the topic). Equal scores give that
    score back (R(s, s) = s), and doubling a block's weight counts it as two equal blocks.

    Example, weights (1, 1): scores (0.9, 0.4) -> sqrt(0.36) = 0.6; (0.9, 0.0) -> 0.0;
    weights (2, 1): (0.9, 0.4) -> (0.9² · 0.4)^(1/3) = 0.69.

    >>> combine([0.9, 0.0], [1, 1]), round(combine([0.9, 0.4], [2, 1]), 2)
    (0.0, 0.69)
    """
    if len(scores) != len(weights) or not scores:
        raise ValueError(f"combine: {len(scores)} scores for {len(weights)} weights.")
    if any(s <= 0.0 for s in scores):
        return 0.0
    total = sum(weights)
    return min(1.0, math.exp(sum(w * math.log(s) for s, w in zip(scores, weights)) / total))


@dataclass(frozen=True)
class Block:
    """One reward of an objective, with its parameters and weight."""

    reward: str
    """The reward's name (a key of ipa.rewards.REWARDS, or a user module's class name)."""
    weight: float = 1.0
    """Its exponent in the weighted geometric mean, relative to the other blocks' (> 0)."""
    params: dict = field(default_factory=dict)
    """Its parameters (PARAMS of its class), defaults filled in."""

    def to_dict(self) -> dict:
        return {"reward": self.reward, **{k: v for k, v in self.params.items() if v is not None}, "weight": self.weight}

    def describe(self) -> str:
        """'topic "the ocean and the sea"' for titles and logs."""
        shown = [f'"{v}"' if isinstance(v, str) else ", ".join(v) if isinstance(v, list) else f"{v:g}"
                 for v in self.params.values() if v is not None]
        return " ".join([self.reward, *shown])


@dataclass(frozen=True)
class Objective:
    """A user's objective: a name, blocks with weights, and where its prompts come from."""

    name: str
    """Short name, also the adapter's and the run's (letters, digits, '-', '_', '.'; up to 64)."""
    blocks: tuple[Block, ...]
    """The reward blocks, combined by a weighted geometric mean (combine)."""
    prompts: str = ""
    """A prompt set's name or a prompts file (ipa.tasks.objective); '' for the default set."""

    @property
    def weights(self) -> list[float]:
        return [b.weight for b in self.blocks]

    @property
    def labels(self) -> list[str]:
        """One part name a block, as results report them: the reward's name (or PART_NAMES'), numbered when it repeats."""
        labels, seen = [], {}
        for b in self.blocks:
            name = PART_NAMES.get(b.reward, b.reward)
            seen[name] = seen.get(name, 0) + 1
            labels.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
        return labels

    def describe(self) -> str:
        """The formula in words: 'sentiment ^1 · topic "the ocean and the sea" ^1 (weighted geometric mean)'."""
        return " · ".join(f"{b.describe()} ^{b.weight:g}" for b in self.blocks) + " (weighted geometric mean)"

    def to_dict(self) -> dict:
        data = {"name": self.name, "blocks": [b.to_dict() for b in self.blocks]}
        return {**data, "prompts": self.prompts} if self.prompts else data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data, extra_rewards: dict[str, type] | None = None) -> "Objective":
        """Check a parsed objective file; ONE ObjectiveError listing every problem."""
        if not isinstance(data, dict):
            raise ObjectiveError(f"An objective is a JSON object with {', '.join(KEYS)}, got {type(data).__name__}.")
        problems = []
        unknown = [k for k in data if k not in KEYS]
        if unknown:
            problems.append(f"unknown key{'s' * (len(unknown) > 1)} {', '.join(map(quote, unknown))} (valid keys: {', '.join(KEYS)})")
        name = data.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            problems.append(f"'name' must be {NAME_RULE.removeprefix('a name of ')}, got {quote(name)}")
        prompts = data.get("prompts", "")
        if not isinstance(prompts, str) or len(prompts) > MAX_TEXT_CHARS:
            problems.append(f"'prompts' must be a prompt set's name or a file name of at most {MAX_TEXT_CHARS:,} characters, "
                            f"got {quote(prompts)}")
        raw_blocks = data.get("blocks")
        blocks = []
        if not isinstance(raw_blocks, list) or not raw_blocks:
            problems.append("'blocks' must be a non-empty list of {\"reward\": NAME, \"weight\": W, ...parameters}")
            raw_blocks = []
        elif len(raw_blocks) > MAX_BLOCKS:
            problems.append(f"at most {MAX_BLOCKS} blocks, got {len(raw_blocks)}")
        valid = block_rewards(extra_rewards)
        for i, raw in enumerate(raw_blocks, 1):
            try:
                blocks.append(_block(i, raw, valid))
            except ObjectiveError as err:
                problems.append(str(err))
        if problems:
            where = f"Objective {quote(name)}" if isinstance(name, str) and name else "The objective"
            raise ObjectiveError(f"{where} is not valid: " + "; ".join(problems) + ".")
        return cls(name, tuple(blocks), prompts.strip())

    @classmethod
    def from_json(cls, text: str, extra_rewards: dict[str, type] | None = None, source: str = "the objective") -> "Objective":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ObjectiveError(f"{source} is not valid JSON ({err.msg}, line {err.lineno}).") from None
        return cls.from_dict(data, extra_rewards)

    @classmethod
    def load(cls, path: str | Path, extra_rewards: dict[str, type] | None = None) -> "Objective":
        path = Path(path)
        if not path.is_file():
            raise ObjectiveError(f"The objective file {path} does not exist.")
        return cls.from_json(path.read_text(encoding="utf-8", errors="replace"), extra_rewards, str(path))


def _block(i: int, raw, valid: dict[str, type]) -> Block:
    if not isinstance(raw, dict):
        raise ObjectiveError(f"block {i} must be an object {{\"reward\": NAME, \"weight\": W, ...}}, got {quote(raw)}")
    reward = raw.get("reward")
    if not isinstance(reward, str) or reward not in valid:
        excluded = f" ({reward} cannot be a block: {NOT_BLOCKS[reward]})" if isinstance(reward, str) and reward in NOT_BLOCKS else ""
        raise ObjectiveError(f"block {i}: unknown reward {quote(reward)}{excluded}; valid rewards: {', '.join(valid)}")
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= MAX_WEIGHT:
        raise ObjectiveError(f"block {i} ({reward}): 'weight' must be a number above 0 and at most {MAX_WEIGHT:g}, "
                             f"got {quote(weight)} (to drop a block, remove it)")
    given = {k: v for k, v in raw.items() if k not in ("reward", "weight")}
    try:
        params = check_params(f"block {i} ({reward})", getattr(valid[reward], "PARAMS", ()), given)
    except ParamError as err:
        raise ObjectiveError(str(err).rstrip(".")) from None
    return Block(reward, float(weight), params)
