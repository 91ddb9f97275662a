"""A new session's set-up (Gradio builds every block's config for it): the cached class-level answers
(app.widgets.cache_block_signatures) give the very configs Gradio builds without them, asking once per class."""

from __future__ import annotations

import inspect

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
