"""Class preference: what a class of people prefers, learned from their blind votes; a reward block like any other.

    >>> reward = PreferenceReward("class-1-food")                                     # doctest: +SKIP
    >>> reward(["", ""], ["and then we baked bread and ate it warm.", "and then the meeting ended."])  # doctest: +SKIP
    [0.93, 0.31]

The model (Bradley-Terry with a linear utility on sentence embeddings): a text x has the score s(x) = w · e(x), e(x)
its all-MiniLM-L6-v2 embedding (384 numbers, unit length; the model coherence, relevance and topic already use), and
a voter prefers a over b with probability

    P(a ≻ b) = σ(s(a) − s(b)),   σ(z) = 1 / (1 + e^−z).

ipa.preferences.learn fits w from the votes (seconds on a CPU). The reward is the chance that the class prefers the
text to a typical one of those it voted on:

    preference(x) = σ(s(x) − c),   c = the mean score of the texts the class voted on,

in (0, 1): 0.5 for a text like the class's typical one, towards 1 for one the class would pick over most. The prompt
is not read: the class compared continuations of one input, so whatever the input adds to both cancels out. Empty
continuation: 0.

A fitted model is a folder under preference_dir() named after it: model.safetensors (w and c, float32) and card.json
(how it was learned: votes, held-out agreement, the class). Nothing is pickled. A block names its model by name
(`{"reward": "preference", "model": "class-1-food"}`), never by path, so an objective from the page or an uploaded
adapter's card cannot make the reward read a file of its choosing.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ipa.errors import NAME, NAME_RULE, UserError, quote
from ipa.files import atomic_directory, recover_directory
from ipa.rewards.params import Param
from ipa.rewards.resources import EmbeddingReward
from ipa.rewards.text import EMPTY_SCORE, check_texts, is_empty

PREFERENCES_ENV = "IPA_PREFERENCES_DIR"
"""The environment variable naming the folder of fitted preference models (the playground sets it to its class
folder's preferences/ at start, so page runs find the models the class learned)."""
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "runs" / "classroom" / "preferences"
"""Where the playground's class keeps its models by default (AppConfig.class_dir's preferences/), so that
`ipa train --objective FILE` finds them without setting anything."""
WEIGHTS, CARD = "model.safetensors", "card.json"
EMBEDDER = "all-MiniLM-L6-v2"


class PreferenceModelError(UserError):
    """A preference model is missing, not valid, or made for another embedding; the message says what to do."""


def preference_dir() -> Path:
    """The folder of fitted preference models: $IPA_PREFERENCES_DIR, else runs/classroom/preferences."""
    return Path(os.environ.get(PREFERENCES_ENV) or DEFAULT_DIR)


@dataclass
class PreferenceModel:
    """A fitted Bradley-Terry utility: score(e) = w · e, reward σ(score − offset)."""

    name: str
    weight: torch.Tensor
    """w, (D,) float32: one number per embedding dimension."""
    offset: float
    """c, the mean score of the texts the class voted on."""
    card: dict = field(default_factory=dict)
    """How it was learned (ipa.preferences.learn): votes, decisive votes, held-out agreement, class, date."""

    def scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """s(x) = w · e(x) for each row of (N, D) embeddings."""
        if embeddings.shape[-1] != self.weight.shape[0]:
            raise PreferenceModelError(f"Preference model {self.name!r} reads {self.weight.shape[0]}-number embeddings, "
                                       f"got {embeddings.shape[-1]}: it was fitted on another embedding model.")
        return embeddings.float() @ self.weight

    def rewards(self, embeddings: torch.Tensor) -> list[float]:
        """σ(s(x) − c) for each row."""
        return torch.sigmoid(self.scores(embeddings) - self.offset).tolist()

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write the model whole (ipa.files.atomic_directory) as folder/NAME; an existing model of that name is never
        written over (PreferenceModelError): a model an adapter was trained on must stay what it was."""
        from safetensors.torch import save_file

        target = Path(folder or preference_dir()) / check_model_name(self.name)
        if (recover_directory(target) / CARD).is_file():
            raise PreferenceModelError(f"A preference model named {self.name!r} exists already: choose another name.")
        with atomic_directory(target) as tmp:
            save_file({"weight": self.weight.float().contiguous(), "offset": torch.tensor([self.offset], dtype=torch.float32)},
                      str(tmp / WEIGHTS))
            (tmp / CARD).write_text(json.dumps({"name": self.name, "embedder": EMBEDDER, **self.card}, indent=2) + "\n",
                                    encoding="utf-8")
        return target

    @classmethod
    def load(cls, name: str, folder: str | os.PathLike | None = None) -> "PreferenceModel":
        """The model called `name` in `folder` (default preference_dir()); PreferenceModelError naming what is wrong."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        where = Path(folder or preference_dir())
        target = recover_directory(where / check_model_name(name))
        if not (target / CARD).is_file() or not (target / WEIGHTS).is_file():
            known = ", ".join(list_models(where)) or "none yet"
            raise PreferenceModelError(f"There is no preference model named {name!r} (learned so far: {known}); learn "
                                       "one from a class's votes first (the Class tab, or python -m ipa.preferences.learn).")
        try:
            card = json.loads((target / CARD).read_text(encoding="utf-8"))
            tensors = load_file(str(target / WEIGHTS))
            weight, offset = tensors["weight"].float(), float(tensors["offset"].reshape(-1)[0])
        except (OSError, ValueError, KeyError, SafetensorError) as err:
            raise PreferenceModelError(f"The preference model {name!r} cannot be read ({type(err).__name__}): learn it "
                                       "again.") from None
        if not isinstance(card, dict) or card.get("embedder") != EMBEDDER or weight.dim() != 1 \
                or not torch.isfinite(weight).all() or not math.isfinite(offset):
            raise PreferenceModelError(f"The preference model {name!r} is not one this project made for {EMBEDDER} "
                                       "embeddings: learn it again.")
        return cls(name, weight, offset, card)


def check_model_name(name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PreferenceModelError(f"A preference model's name must be {NAME_RULE}, got {quote(name)}.")
    return name


def list_models(folder: str | os.PathLike | None = None) -> list[str]:
    """The names of the fitted models in `folder` (default preference_dir()), oldest first."""
    where = Path(folder or preference_dir())
    if not where.is_dir():
        return []
    found = [d for d in where.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / CARD).is_file()]
    return [d.name for d in sorted(found, key=lambda d: ((d / CARD).stat().st_mtime, d.name))]


class PreferenceReward(EmbeddingReward):
    """class preference = σ(w · e(continuation) − c): a class's taste, learned from its blind votes (Bradley-Terry).

    w and c come from the model named `model`, fitted by ipa.preferences.learn on the class's votes (see the module's
    docstring); e = all-MiniLM-L6-v2 sentence embedding (first 128 word pieces), shared with the other embedding
    rewards. The prompt is not read. Empty continuation: 0.

    Example, a class that preferred texts about food: "and then we baked bread and ate it warm." 0.93; "and then the
    meeting ended." 0.31.

    The model: `embedder=` a ipa.rewards.resources.SentenceEmbedder to share, else the process's shared one;
    `folder=` where the fitted models are (default preference_dir()).
    """

    PARAMS = (Param("model", "name", 'the name of a preference model learned from a class\'s votes, e.g. "class-1-food"'),)

    def __init__(self, model: str, device: str = "cpu", embedder=None, folder: str | os.PathLike | None = None):
        self.model = PreferenceModel.load(model, folder)  # first: a missing model fails before MiniLM loads
        super().__init__(device, embedder)

    def __call__(self, prompts, completions, **context) -> list[float]:
        completions = check_texts(completions)
        if not completions:
            return []
        rewards = self.model.rewards(self.embedder.encode(completions))
        return [EMPTY_SCORE if is_empty(c) else r for c, r in zip(completions, rewards)]
