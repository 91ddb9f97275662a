"""Shared fixtures: tiny models built in code (fast) and the real embedded model (loaded once)."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from adapters.models import load_model, load_tokenizer
from adapters.policy_adapter import AdapterHost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer (49,152 tokens), also used by the tiny models."""
    return load_tokenizer("embedded")


def tiny_llama(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2) -> LlamaForCausalLM:
    """A random Llama with the embedded tokenizer's vocabulary: milliseconds a step."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Larger logits than the default init so that greedy choices are well separated.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(50)
    model.eval()
    model.requires_grad_(False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


@pytest.fixture
def tiny_host(tokenizer) -> AdapterHost:
    return AdapterHost(tiny_llama(tokenizer), tokenizer, "tiny")


@pytest.fixture(scope="session")
def embedded():
    """The real embedded model and tokenizer (float32, CPU), loaded once per session. Never wrap
    this model in an AdapterHost (PEFT injects LoRA layers in place): use `embedded_host`."""
    return load_model("embedded")


@pytest.fixture(scope="session")
def embedded_host() -> AdapterHost:
    """A second copy of the embedded model that carries adapters; tests delete what they add."""
    model, tokenizer = load_model("embedded")
    return AdapterHost(model, tokenizer, "embedded")


@pytest.fixture(scope="session")
def playground_app(tmp_path_factory, request):
    """The real playground (service + page) on a free port, shared by the API and browser tests (tests/app_server.py)."""
    from tests.app_server import serve_playground

    with serve_playground(tmp_path_factory.mktemp("playground"), lambda: request.getfixturevalue("embedded_host")) as app:
        yield app
