"""Shared fixtures: tiny models built in code (fast), the real embedded model (loaded once), the served app; markers.

Markers (pytest.ini): `slow` tests load real models (the embedded LM, MiniLM, the scoring LM), serve the app, drive a
browser, start the llama.cpp or vLLM server or another Python process (a command line as a user runs it), or compile with
torch.compile; `make test-fast` runs the others. `gpu` tests need CUDA and are skipped, saying so, where there is none.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch

from ipa.models import load_model, load_tokenizer
from ipa.policy_adapter import AdapterHost
from tests.helpers import save_tiny_model, tiny_llama, tiny_tokenizer


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run where CUDA is, and are left out (deselected, and said so in the header) where it is not:
    on a CPU they would check nothing."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if "gpu" in item.keywords]
    if gpu:
        items[:] = [item for item in items if "gpu" not in item.keywords]
        config.hook.pytest_deselected(items=gpu)


def pytest_report_header(config):
    if not torch.cuda.is_available():
        return "tests marked gpu: deselected (no CUDA GPU on this machine; run the suite on one to check them)"


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level tokenizer (512 tokens; tests.helpers.tiny_tokenizer). Shared: do not add tokens to it."""
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded model's tokenizer (49,152 tokens; no weights are loaded), for tests about real prompts and ids."""
    return load_tokenizer("embedded")


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


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """vLLM's OpenAI server on the embedded model's float copy (tests/servers.py), started once for every test that
    needs it: it takes 2-2.5 minutes to start on 2 busy cores (its first use installs it: about 2 minutes, 3.5 GB)."""
    from tests.servers import VllmServer

    server = VllmServer(tmp_path_factory.mktemp("vllm") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_dir(tokenizer, tmp_path_factory):
    """A tiny random Llama with the tiny tokenizer, saved like any local model."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", tokenizer, seed=0, hidden=32)
