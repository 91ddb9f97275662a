"""ZeroGPU support: `gpu` is `spaces.GPU` where the `spaces` package is importable, a no-op elsewhere.

On a ZeroGPU Space a GPU is attached only while a function decorated with `spaces.GPU` runs (in a worker process
of `spaces`: its arguments and what it returns or yields are pickled). The `spaces` package exists only on Hugging
Face Spaces, so it is imported when present and never required.

    >>> @gpu(duration=60)
    ... def heavy(x):
    ...     return x
    >>> heavy(3)
    3
"""

from __future__ import annotations

import os

MAIN_PID = os.getpid()
"""The page's process; a GPU call on ZeroGPU runs in a process forked from it."""


def _spaces():
    """The `spaces` module, or None where it is not installed (looked up at each use, so tests can fake it)."""
    try:
        import spaces
    except ImportError:  # not on a Space
        return None
    return spaces if getattr(spaces, "GPU", None) is not None else None


def zero_gpu_on() -> bool:
    """Whether this is a ZeroGPU Space: `spaces` is importable and says so (`spaces.config.Config.zero_gpu`, which
    reads SPACES_ZERO_GPU), or, for a `spaces` without that setting, SPACES_ZERO_GPU is true or 1."""
    spaces = _spaces()
    if spaces is None:
        return False
    config = getattr(getattr(spaces, "config", None), "Config", None)
    if config is not None and hasattr(config, "zero_gpu"):
        return bool(config.zero_gpu)
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


def worker_threads() -> None:
    """At the start of a GPU call's body: in a process forked from the page's, torch's CPU thread pool did not survive
    the fork (its first parallel operation would hang), so the call's CPU work runs on one thread; in the page's own
    process (no `spaces`: the decorator is a no-op) nothing changes."""
    if os.getpid() != MAIN_PID:
        import torch

        torch.set_num_threads(1)


def gpu(fn=None, *, duration: int = 60):
    """Decorate a GPU-heavy function: `@gpu` or `@gpu(duration=120)` (the seconds of GPU one call may hold)."""
    spaces = _spaces()
    if spaces is None:
        def decorate(f):
            return f
    else:
        decorate = spaces.GPU(duration=duration)
    return decorate(fn) if fn is not None else decorate
