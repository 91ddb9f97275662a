"""How the page meets Gradio: a new session's set-up (app.gradio_sessions: a session builds a block's config when it is
read, with class-level answers cached, and reads the very configs Gradio builds eagerly; what a session changes stays
its own) and handlers bound to the service's parts (app.widgets.bound)."""

from __future__ import annotations

import inspect

import gradio as gr
import gradio.blocks
import pytest
import torch
from gradio.state_holder import SessionState

from app.config import parse_args
from app.gradio_sessions import LazyConfigs, _CachedInspect


@pytest.fixture
def page(tiny_host, tmp_path):
    from app.service import Playground
    from app.ui import build_ui

    config = parse_args(["--adapters-dir", str(tmp_path / "none"), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu",
                         "--no-warm-up"], env={})
    service = Playground(config, tiny_host, tiny_host, {}, torch.device("cpu"))
    try:
        yield build_ui(service)
    finally:
        service.close()


def _eager(demo) -> SessionState:
    """A session as Gradio 6.31 makes it, every config built at its start."""
    session = SessionState.__new__(SessionState)
    SessionState.__init__._eager(session, demo)
    return session


@pytest.mark.slow
def test_a_session_gets_the_configs_gradio_builds_with_each_class_asked_once(page, monkeypatch):
    cached = gradio.blocks.inspect
    assert isinstance(cached, _CachedInspect)
    lazy = SessionState(page).config_values
    assert isinstance(lazy, LazyConfigs) and dict.__len__(lazy) == 0  # nothing built at the start
    with_cache = dict(lazy.items())
    asked = dict(cached._signatures)
    dict(SessionState(page).config_values.items())
    assert cached._signatures == asked  # a second session asks nothing new
    classes = {type(block) for block in page.blocks.values()}
    assert len(asked) <= len(classes) and all(f.__name__ == "__init__" for f in asked)
    monkeypatch.setattr(gradio.blocks, "inspect", inspect)
    assert _eager(page).config_values == with_cache
    assert len(with_cache) == len(page.blocks) > 1000


@pytest.mark.slow
def test_a_session_reads_writes_and_lists_its_configs_as_gradio_does(page):
    session, eager = SessionState(page), _eager(page)
    textbox = next(i for i, b in page.blocks.items() if type(b).__name__ == "Textbox")
    assert textbox in session.config_values and textbox in eager.config_values
    assert len(session.config_values) == len(eager.config_values)
    for s in (session, eager):
        s._update_value_in_config(textbox, "typed by this session")
    assert session.config_values[textbox] == eager.config_values[textbox]
    assert session.config_values[textbox]["props"]["value"] == "typed by this session"
    assert SessionState(page).config_values[textbox]["props"].get("value") != "typed by this session"  # its own
    assert list(session.components) == list(eager.components)  # a deep link's configs, in Gradio's order
    assert session.config_values.get(-1) is None and -1 not in session.config_values


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
