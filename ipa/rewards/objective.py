"""An objective: reward blocks with weights, combined by a weighted geometric mean; written as JSON by hand.
The one reward engine: the six tasks' rewards are objectives too (ipa/tasks/<task>.py), combined as a product.

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

A task's reward (ipa.tasks.<task>.TASK.objective) is an objective built in code, with what a user's file cannot say:
`combination` PRODUCT (R = Π s_i ^ w_i, every weight 1: the shipped rewards' arithmetic), blocks of weight 0 that are
reported but not in the reward (commongen's coverage, the raw toxicity), hidden blocks that are in the reward but not
reported (commongen's unfinished-sentence factor), a block's `floor` (relevance at half weight: 0.5 + 0.5 · relevance)
and rewards of ipa.rewards.factors. `score` scores both kinds the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ipa.errors import MAX_TEXT_CHARS, NAME, NAME_RULE, UserError, quote
from ipa.rewards import REWARDS
from ipa.rewards.params import ParamError, check_params
from ipa.rewards.text import EMPTY_SCORE, is_empty

NOT_BLOCKS = {
    "faithfulness": "it needs a knowledge passage for every input, which an objective's prompts do not carry",
}
"""Rewards that cannot be a block of an objective, and why."""
PART_NAMES = {"toxicity": "low_toxicity"}
"""A block's part name where its reward's name would mislead: the toxicity reward is 1 − toxicity."""
MAX_WEIGHT = 100.0
MAX_BLOCKS = 12
KEYS = ("name", "blocks", "prompts")
GEOMETRIC, PRODUCT = "geometric", "product"
COMBINATIONS = (GEOMETRIC, PRODUCT)
"""How block scores make the reward: the weighted geometric mean (users' objectives) or the weighted product (tasks)."""


class ObjectiveError(UserError):
    """An objective cannot be read or is not valid; the message lists every problem and what is valid."""


def block_rewards(extra: dict[str, type] | None = None) -> dict[str, type]:
    """The reward classes an objective may use as blocks: REWARDS less NOT_BLOCKS, plus `extra` (user modules)."""
    return {**{k: v for k, v in REWARDS.items() if k not in NOT_BLOCKS}, **(extra or {})}


def combine(scores: list[float], weights: list[float], combination: str = GEOMETRIC) -> float:
    """The weighted geometric mean R = Π s_i ^ (w_i / Σ w) = exp(Σ w_i · log s_i / Σ w), in [0, 1]; or, for
    combination PRODUCT, the weighted product R = Π s_i ^ w_i, multiplied in the blocks' order (with weights 1, the
    tasks' products to the last bit: once_coverage × fluency × finished).

    A block that scores 0 makes R = 0, whatever the others: no block can be traded away (with an
    arithmetic mean, a fluent off-topic text could make up for missing the topic). Equal scores give that
    score back (R(s, s) = s), and doubling a block's weight counts it as two equal blocks.

    Example, weights (1, 1): scores (0.9, 0.4) -> sqrt(0.36) = 0.6; (0.9, 0.0) -> 0.0;
    weights (2, 1): (0.9, 0.4) -> (0.9² · 0.4)^(1/3) = 0.69.

    >>> combine([0.9, 0.0], [1, 1]), round(combine([0.9, 0.4], [2, 1]), 2), round(combine([0.9, 0.4], [1, 1], PRODUCT), 2)
    (0.0, 0.69, 0.36)
    """
    if len(scores) != len(weights) or not scores:
        raise ValueError(f"combine: {len(scores)} scores for {len(weights)} weights.")
    if combination not in COMBINATIONS:
        raise ValueError(f"combine: unknown combination {combination!r}; use {' or '.join(COMBINATIONS)}.")
    if any(s <= 0.0 for s in scores):
        return 0.0
    if combination == PRODUCT:
        return math.prod(s ** w for s, w in zip(scores, weights))
    total = sum(weights)
    return min(1.0, math.exp(sum(w * math.log(s) for s, w in zip(scores, weights)) / total))


@dataclass(frozen=True)
class Block:
    """One reward of an objective, with its parameters and weight."""

    reward: str
    """The reward's name (a key of ipa.rewards.REWARDS, or a user module's class name)."""
    weight: float = 1.0
    """Its exponent in the weighted geometric mean, relative to the other blocks' (> 0); in a task's reward, 0 for a
    block that is reported but not part of the reward."""
    params: dict = field(default_factory=dict)
    """Its parameters (PARAMS of its class), defaults filled in."""
    part: str = ""
    """The name its score is reported under; '' for the reward's name (see Objective.labels). Tasks only."""
    floor: float = 0.0
    """The reward takes floor + (1 − floor) · score: 0.5 counts a score at half weight (0.5 + 0.5 · relevance), while
    the part reports the score itself. Tasks only."""
    hidden: bool = False
    """In the reward, but not reported as a part (commongen's unfinished-sentence factor beside its 0/1 `finished`).
    Tasks only."""

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
    combination: str = GEOMETRIC
    """How the blocks make the reward (combine): users' objectives GEOMETRIC, tasks' PRODUCT."""
    order: tuple[str, ...] = ()
    """The order the parts are reported in, when it is not the blocks' (a task scores its blocks in the order they read
    each other's scores, and reports them as it always has)."""

    @property
    def weights(self) -> list[float]:
        return [b.weight for b in self.blocks]

    @property
    def labels(self) -> list[str]:
        """One part name a block, as results report them: the reward's name (or PART_NAMES'), numbered when it repeats."""
        labels, seen = [], {}
        for b in self.blocks:
            name = b.part or PART_NAMES.get(b.reward, b.reward)
            seen[name] = seen.get(name, 0) + 1
            labels.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
        return labels

    def describe(self) -> str:
        """The formula in words: 'sentiment ^1 · topic "the ocean and the sea" ^1 (weighted geometric mean)'."""
        how = "weighted geometric mean" if self.combination == GEOMETRIC else "product"
        return " · ".join(f"{b.describe()} ^{b.weight:g}" for b in self.blocks if b.weight) + f" ({how})"

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


def score(objective: Objective, rewards: list, prompts: list[str], completions: list[str],
          context: dict[str, list] | None = None) -> list[dict]:
    """The reward engine: `[{"reward": R, part: score, ...}]`, one row a completion, for tasks and users' objectives.

    rewards: one reward instance a block (RewardKit.block). Each block scores the whole batch once; a block repeated
    with the same reward and parameters reuses the scores. context: for a task, the inputs' fields, one list each
    (concepts, knowledge, message, category), given to every block with the scores of the blocks before it under
    their labels (a later block reads them: safety the relevance, a factor the help); None (users' objectives): no
    context at all, so a user's reward gets only prompts and completions. R = combine of the blocks of weight > 0,
    each as floor + (1 − floor) · score; EMPTY_SCORE for an empty completion. The parts: every block's score under
    its label, hidden blocks left out, in `order` when the objective gives one.
    """
    labels, scores, done = objective.labels, {}, {}
    for label, block, reward in zip(labels, objective.blocks, rewards):
        key = (block.reward, json.dumps(block.params, sort_keys=True, default=str))
        if key not in done:
            given = {} if context is None else {**context, **scores}
            done[key] = [float(s) for s in reward(prompts, completions, **given)]
        scores[label] = done[key]
    factors = [(label, b) for label, b in zip(labels, objective.blocks) if b.weight > 0]
    weights = [b.weight for _, b in factors]
    shown = objective.order or [label for label, b in zip(labels, objective.blocks) if not b.hidden]
    rows = []
    for i, text in enumerate(completions):
        values = [b.floor + (1.0 - b.floor) * scores[label][i] for label, b in factors]
        reward = EMPTY_SCORE if is_empty(text) else combine(values, weights, objective.combination)
        rows.append({"reward": reward, **{label: scores[label][i] for label in shown}})
    return rows


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
