"""Assemble a tailored policy from model names and an adapter directory.

    >>> policy = load_policy("embedded", "adapters/trained/toxicity")   # doctest: +SKIP
    >>> both = load_policy("embedded", "adapters/trained/toxicity", more_adapters=[("adapters/trained/sentiment", 0.5)])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from ipa.decoding.run import DecodeError, TailoredPolicy
from ipa.errors import check_number
from ipa.placement import Placement
from ipa.models import EMBEDDED, LIGHT, check_same_tokenizer, light_name, load_model
from ipa.policy_adapter import MAX_ALPHA, AdapterCard, AdapterError, AdapterHost, read_card


@dataclass
class ModelConfig(Placement):
    """Which models run, on which device, in which number format (generate, evaluate, train, benchmarks)."""

    base: str = EMBEDDED
    """The frozen base model: 'embedded', a local directory or a Hugging Face model id."""
    adapter_init: str = ""
    """Training: the adapter's initial model (default: the base itself; 'light': the base's first 4 layers with its
    final norm and output layer, a third of its size, cut once and cached; or any model with the base's tokenizer)."""
    approx_base: str = ""
    """Training: a smaller model with the base's tokenizer that stands in for the base."""

    TRAINING_ONLY = ("adapter_init", "approx_base")

    def load_policy(self, adapter_dir: str | os.PathLike | None = None,
                    more_adapters: list[tuple[str | os.PathLike, float]] = ()) -> TailoredPolicy:
        """The base alone, or with the adapter saved in adapter_dir (and composed ones: (directory, alpha) each), on
        this config's device and dtype."""
        device, dtype = self.resolve()
        return load_policy(self.base, adapter_dir, device, dtype, more_adapters)


def load_host(name: str = EMBEDDED, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> AdapterHost:
    """A frozen model ready to carry adapters."""
    model, tokenizer = load_model(name, device=device, dtype=dtype)
    return AdapterHost(model, tokenizer, name)


def pair(base: AdapterHost, adapter_host: AdapterHost) -> None:
    """Check that an adapter's initial model can steer this base, with one clear message naming both: it shares the
    base's tokenizer, and a light model was cut from this very base (AdapterHost.light_layers)."""
    check_same_tokenizer(base.tokenizer, base.model_name, adapter_host.tokenizer, adapter_host.model_name)
    adapter_host.light_layers(base)


def initial_model_name(adapter_init: str, base: str) -> str:
    """The adapter's initial model: `adapter_init`, the base when it is empty, the base's light cut for 'light'."""
    if adapter_init == LIGHT:
        return light_name(base)
    return adapter_init or base


def attach_adapter(base: AdapterHost, adapter_dir: str | os.PathLike, name: str | None = None,
                   adapter_host: AdapterHost | None = None) -> TailoredPolicy:
    """Load an adapter for `base` and return the tailored policy.

    The adapter sits on the base's own weights when its card names the base as its initial model;
    otherwise its initial model is loaded (or `adapter_host` used), and must share the base's tokenizer.
    """
    card = read_card(adapter_dir)
    name = name or os.path.basename(os.path.normpath(adapter_dir))
    if adapter_host is None:
        if card.adapter_init_model == base.model_name:
            adapter_host = base
        else:
            adapter_host = load_host(card.adapter_init_model, base.base_model.device, base.base_model.dtype)
    pair(base, adapter_host)
    if name not in adapter_host.cards:
        adapter_host.load_adapter(name, adapter_dir)
    return TailoredPolicy(base, adapter_host, name, card.combination)


def check_composable(adapter_dirs: list[str | os.PathLike]) -> list[AdapterCard]:
    """The cards of adapters to decode at once; an AdapterError unless they steer the same base, sit on the same
    initial model (one host runs them all) and combine with the base the same way."""
    cards = [read_card(d) for d in adapter_dirs]
    for what, key in (("steer the same base", "base_model"), ("sit on the same initial model", "adapter_init_model"),
                      ("use the same combination", "combination")):
        values = [getattr(card, key) for card in cards]
        if len(set(values)) > 1:
            other = next(i for i, v in enumerate(values) if v != values[0])
            raise AdapterError(f"Composed adapters must {what}: {adapter_dirs[0]} has {key} {values[0]!r}, "
                               f"{adapter_dirs[other]} has {values[other]!r}.")
    return cards


def compose(policy: TailoredPolicy, more_adapters: list[tuple[str | os.PathLike, float]]) -> TailoredPolicy:
    """`policy` (base + one adapter) with further saved adapters at once, each (directory, alpha), loaded on the
    policy's adapter host under their directories' names (made unique when two are alike)."""
    if not more_adapters:
        return policy
    if policy.adapter is None:
        raise AdapterError("Composed adapters need a first adapter.")
    taken = set(policy.adapter.cards)
    loaded = []
    for directory, alpha in more_adapters:
        stem = name = os.path.basename(os.path.normpath(directory))
        copy = 2
        while name in taken or name == policy.adapter_name:
            name, copy = f"{stem}-{copy}", copy + 1
        policy.adapter.load_adapter(name, directory)
        taken.add(name)
        loaded.append((name, alpha))
    return dataclasses.replace(policy, more_adapters=tuple(loaded))


def load_policy(base_name: str = EMBEDDED, adapter_dir: str | os.PathLike | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                more_adapters: list[tuple[str | os.PathLike, float]] = ()) -> TailoredPolicy:
    """The base alone (no adapter_dir) or base plus the adapter saved in adapter_dir, and composed adapters:
    (directory, alpha) each, decoded at once with it (the first adapter's alpha is DecodeConfig.alpha)."""
    if adapter_dir is not None:
        # a missing, corrupt or mismatched adapter fails before any model loads
        check_composable([adapter_dir] + [directory for directory, _ in more_adapters])
    elif more_adapters:
        raise AdapterError("Composed adapters need a first adapter.")
    base = load_host(base_name, device, dtype)
    if adapter_dir is None:
        return TailoredPolicy(base)
    return compose(attach_adapter(base, adapter_dir), more_adapters)


def adapter_alphas(args, cards) -> list[float]:
    """Each --adapter's alpha: the i-th --alpha, else the adapter card's (1 without an adapter)."""
    adapters, alphas = args.adapter or [], args.alpha or []
    if len(alphas) > max(len(adapters), 1) or (len(adapters) > 1 and alphas and len(alphas) != len(adapters)):
        raise DecodeError(f"Give one --alpha per --adapter, in the same order, or none (each adapter's trained alpha): "
                          f"got {len(adapters)} --adapter and {len(alphas)} --alpha.")
    chosen = alphas or [card.alpha for card in cards] or [1.0]
    for alpha in chosen[1:]:
        check_number(alpha, "alpha", 0, MAX_ALPHA, error=DecodeError)
    return chosen
