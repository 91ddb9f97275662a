"""Where the models run and in which number format: the settings the command line's ModelConfig (ipa.loading) and
the page's ModelsConfig (app.config) share. Light to import: torch loads when a placement is resolved, so reading
the settings (the page's flags, `ipa serve --help`) does not import it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Placement:
    """Where the models run and in which number format."""

    device: str = "auto"
    """auto (a CUDA GPU when there is one), cpu or cuda."""
    dtype: str = "auto"
    """The models' number format: auto (bfloat16 where the hardware runs it fast: a GPU, or a CPU with AVX512-BF16
    or AMX; float32 elsewhere), float32 or bfloat16."""

    def resolve(self):
        """The torch device and dtype (decided once, at the entry point)."""
        from ipa.models import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        return device, resolve_dtype(self.dtype, device)
