"""Assemble a tailored policy from model names and an adapter directory.

    >>> policy = load_policy("embedded", "adapters/trained/toxicity")   # doctest: +SKIP
"""

from __future__ import annotations

import os

import torch

from adapters.models import EMBEDDED, check_same_tokenizer, load_model
from adapters.policy_adapter import AdapterHost, read_card
from adapters.tailored_decoding import TailoredPolicy


def load_host(name: str = EMBEDDED, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> AdapterHost:
    """A frozen model ready to carry adapters."""
    model, tokenizer = load_model(name, device=device, dtype=dtype)
    return AdapterHost(model, tokenizer, name)


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
    check_same_tokenizer(base.tokenizer, base.model_name, adapter_host.tokenizer, adapter_host.model_name)
    if name not in adapter_host.cards:
        adapter_host.load_adapter(name, adapter_dir)
    return TailoredPolicy(base, adapter_host, name, card.combination)


def load_policy(base_name: str = EMBEDDED, adapter_dir: str | os.PathLike | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TailoredPolicy:
    """The base alone (no adapter_dir) or base plus the adapter saved in adapter_dir."""
    if adapter_dir is not None:
        read_card(adapter_dir)  # a missing or corrupt adapter fails before any model loads
    base = load_host(base_name, device, dtype)
    if adapter_dir is None:
        return TailoredPolicy(base)
    return attach_adapter(base, adapter_dir)
