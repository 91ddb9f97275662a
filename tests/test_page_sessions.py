"""A new session's set-up (Gradio builds every block's config for it): the cached class-level answers
(app.widgets.cache_block_signatures) give the very configs Gradio builds without them, asking once per class."""

from __future__ import annotations

import inspect

import gradio as gr
import gradio.blocks
import pytest
import torch
from gradio.state_holder import SessionState

from app.config import parse_args
from app.widgets import _CachedInspect


@pytest.mark.slow
def test_a_session_gets_the_configs_gradio_builds_with_each_class_asked_once(tiny_host, tmp_path, monkeypatch):
    from app.service import Playground
    from app.ui import build_ui

    config = parse_args(["--adapters-dir", str(tmp_path / "none"), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu",
                         "--no-warm-up"], env={})
    service = Playground(config, tiny_host, tiny_host, {}, torch.device("cpu"))
    try:
        demo = build_ui(service)
        cached = gradio.blocks.inspect
        assert isinstance(cached, _CachedInspect)
        with_cache = SessionState(demo).config_values
        asked = dict(cached._signatures)
        SessionState(demo)
        assert cached._signatures == asked  # a second session asks nothing new
        classes = {type(block) for block in demo.blocks.values()}
        assert len(asked) <= len(classes) and all(f.__name__ == "__init__" for f in asked)
        monkeypatch.setattr(gradio.blocks, "inspect", inspect)
        assert SessionState(demo).config_values == with_cache
    finally:
        service.close()


def _stop(store: dict, owner: str, request: gr.Request) -> str:
    """Stop a run."""
    return f"{store['run']} stopped by {owner} from {request.client.host}"


def _stream(store: dict, text: str):
    yield from (f"{store['run']}: {word}" for word in text.split())


def test_a_bound_handler_reads_to_gradio_as_the_handler_without_its_parts():
    from gradio.utils import get_type_hints, is_special_typed_parameter

    from app.widgets import bound

    stop = bound(_stop, {"run": "toxicity-pg-1"})
    assert list(inspect.signature(stop).parameters) == ["owner", "request"]  # what the API lists, and passes
    assert is_special_typed_parameter("request", get_type_hints(stop))  # still handed the gr.Request
    assert (stop.__name__, stop.__doc__) == ("_stop", "Stop a run.")
    request = gr.Request(client=type("Client", (), {"host": "127.0.0.1"})())
    assert stop("ann", request) == "toxicity-pg-1 stopped by ann from 127.0.0.1"
    stream = bound(_stream, {"run": "r"})
    assert inspect.isgeneratorfunction(stream)  # a streamed handler still streams
    assert list(stream("a b")) == ["r: a", "r: b"]
