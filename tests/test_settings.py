"""The page's decoding settings: a DecodeConfig within the page's ranges plus the sample count; every malformed
value gets one message naming the field and the page's range (no model is loaded)."""

from __future__ import annotations

import math

import pytest

from ipa.decoding.run import DecodeConfig, DecodeError
from app.settings import Settings
from tests.helpers import REPO


@pytest.mark.parametrize("change, message", [
    ({"alpha": math.nan}, "alpha must be a number from 0 to 5, got nan."),
    ({"alpha": 5.5}, "alpha must be a number from 0 to 5, got 5.5."),
    ({"alpha": None}, "alpha must be a number from 0 to 5, got nothing."),
    ({"n": 2.7}, "n must be a whole number from 1 to 4, got 2.7."),
    ({"n": math.nan}, "n must be a whole number from 1 to 4, got nan."),
    ({"n": True}, "n must be a whole number from 1 to 4, got bool True."),
    ({"seed": math.nan}, "seed must be a whole number from 0 to 2147483647, got nan; or -1 for a random seed."),
    ({"max_new_tokens": "32"}, "max_new_tokens must be a whole number from 1 to 128, got str '32'."),
    ({"top_p": 0.01}, "top_p must be a number from 0.05 to 1, got 0.01."),
    ({"temperature": math.inf}, "temperature must be a number from 0 to 2, got inf."),
])
def test_malformed_settings_name_the_field_and_the_page_range(change, message):
    with pytest.raises(DecodeError) as caught:
        Settings(**change)
    assert str(caught.value) == message


def test_three_samples_per_column_by_default_within_the_page_range():
    low, high, _ = Settings.LIMITS["n"]
    assert Settings().n == Settings.for_task("toxicity").n == 3 and low <= 3 <= high


def test_settings_are_a_decode_config_with_the_tasks_defaults():
    settings = Settings.for_task("sentiment", n=2, seed=-1)
    assert isinstance(settings, DecodeConfig) and settings.n == 2 and settings.seed is None
    assert settings.max_new_tokens == 20 and settings.temperature == 1.0
    assert Settings(n=3.0, max_new_tokens=8.0).n == 3  # a whole float is a whole number
    # The library's own range is wider than the page's.
    assert DecodeConfig(alpha=8).alpha == 8.0


def test_reading_the_settings_does_not_import_torch():
    """The page's settings (and `ipa serve --help`) read without loading torch: ipa.placement resolves the device
    and dtype only when asked (importing torch and transformers took 3.7 s of a 2-core machine)."""
    import subprocess
    import sys

    code = "import sys, app.config; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
