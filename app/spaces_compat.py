"""ZeroGPU support: `gpu` is `spaces.GPU` where the `spaces` package is importable, a no-op elsewhere.

On a ZeroGPU Space a GPU is attached only while a function decorated with `spaces.GPU` runs. The `spaces`
package exists only on Hugging Face Spaces, so it is imported when present and never required.

    >>> @gpu(duration=60)
    ... def heavy(x):
    ...     return x
    >>> heavy(3)
    3
"""

from __future__ import annotations

import os

try:
    import spaces as _spaces

    _GPU = getattr(_spaces, "GPU", None)
except ImportError:  # not on a Space
    _GPU = None

ON_ZERO_GPU = _GPU is not None and "SPACES_ZERO_GPU" in os.environ
"""A ZeroGPU Space: the GPU exists only inside decorated calls, so background threads (training) get none."""


def gpu(fn=None, *, duration: int = 60):
    """Decorate a GPU-heavy function: `@gpu` or `@gpu(duration=120)` (the seconds of GPU one call may hold)."""
    if _GPU is None:
        def decorate(f):
            return f
    else:
        decorate = _GPU(duration=duration)
    return decorate(fn) if fn is not None else decorate
