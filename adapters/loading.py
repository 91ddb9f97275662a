"""Assemble a tailored policy from model names and an adapter directory.

    >>> policy = load_policy("embedded", "adapters/trained/toxicity")   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from adapters.models import EMBEDDED, ModelLoadError, check_same_tokenizer, load_model, resolve_device, resolve_dtype
from adapters.policy_adapter import AdapterHost, read_card
from adapters.tailored_decoding import CACHES, TailoredPolicy


@dataclass
class ModelConfig:
    """Which models run, on which device, in which number format (generate, evaluate, train, benchmarks)."""

    base: str = EMBEDDED
    """The frozen base model: 'embedded', a local directory or a Hugging Face model id."""
    device: str = "auto"
    """auto (a CUDA GPU when there is one), cpu or cuda."""
    dtype: str = "auto"
    """auto (bfloat16 where the hardware runs it fast: a GPU, a CPU with AVX512-BF16 or AMX; else float32),
    float32 or bfloat16."""
    cache: str = "dynamic"
    """KV cache: dynamic (the engine), static, or compiled (static + CUDA graphs on a GPU; compiles at first use)."""
    adapter_init: str = ""
    """Training: the adapter's initial model (default: the base itself)."""
    approx_base: str = ""
    """Training: a smaller model with the base's tokenizer that stands in for the base."""

    TRAINING_ONLY = ("adapter_init", "approx_base")

    def __post_init__(self):
        if self.cache not in CACHES:
            raise ModelLoadError(f"Unknown cache {self.cache!r}: use one of {', '.join(CACHES)}.")

    def resolve(self) -> tuple[torch.device, torch.dtype]:
        """The torch device and dtype (decided once, at the entry point)."""
        device = resolve_device(self.device)
        return device, resolve_dtype(self.dtype, device)

    def load_policy(self, adapter_dir: str | os.PathLike | None = None) -> TailoredPolicy:
        """The base alone, or with the adapter saved in adapter_dir, on this config's device, dtype and cache."""
        device, dtype = self.resolve()
        return dataclasses.replace(load_policy(self.base, adapter_dir, device, dtype), cache=self.cache)


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
