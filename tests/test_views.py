"""What the page shows, as plain functions (app/views.py): no Gradio, no models."""

from __future__ import annotations

import pytest

from app.views import error_text


@pytest.mark.parametrize("typed, shown", [
    ("<img src=x>", "&lt;img src=x&gt;"),
    ("<a href='https://example.com'>link</a>", "&lt;a href='https://example.com'&gt;link&lt;/a&gt;"),
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("fish & chips", "fish &amp; chips"),
    ("**bold**", "**bold**"),  # pop-ups render HTML, not Markdown: it shows as typed
])
def test_error_messages_show_what_the_user_typed_as_text(typed, shown):
    assert error_text(ValueError(f"There is no adapter named {typed}.")) == f"There is no adapter named {shown}."
    assert error_text(KeyError(typed)) == shown  # KeyError's quotes are dropped
