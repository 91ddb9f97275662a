"""The decoding settings of one request of the page (its Settings panel): a DecodeConfig within the page's ranges.

    >>> Settings.for_task("sentiment", n=1).n
    1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ipa.decoding.run import DecodeConfig, DecodeError
from ipa.tasks import get_task


@dataclass
class Settings(DecodeConfig):
    """Decoding settings of one request (the page's Settings panel): a DecodeConfig within the page's ranges
    (LIMITS, which the page's widgets also take theirs from), plus the samples per column. A value of the wrong
    kind or out of range is a DecodeError naming the field and the page's range."""

    n: int = 3
    """Samples per column: 3 by default, so that one lucky or unlucky sample does not decide the verdict."""

    LIMITS: ClassVar[dict[str, tuple]] = {
        **DecodeConfig.LIMITS, "alpha": (0, 5, False), "temperature": (0, 2, False), "top_p": (0.05, 1, False),
        "max_new_tokens": (1, 128, True), "seed": (0, 2**31 - 1, True), "n": (1, 4, True),
    }
    RANDOM_SEED: ClassVar[int] = -1
    """The page's seed for "draw one" (None does the same)."""

    def __post_init__(self):
        if isinstance(self.seed, (int, float)) and not isinstance(self.seed, bool) and self.seed == self.RANDOM_SEED:
            self.seed = None
        try:
            super().__post_init__()
        except DecodeError as err:
            if str(err).startswith("seed "):
                raise DecodeError(f"{str(err).rstrip('.')}; or {self.RANDOM_SEED} for a random seed.") from None
            raise

    @classmethod
    def for_task(cls, task: str, **overrides) -> "Settings":
        """The task's default decoding settings, with overrides."""
        return cls(**{**get_task(task).decode, **overrides})
