"""stvsr: space-time video super-resolution with MEGAN (and Zooming Slow-Mo)."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public names, imported on first use: the networks and their weights
# need PyTorch, which takes seconds to import, and `stvsr --help` (which
# imports this package) should answer at once. `from stvsr_cli import MEGAN`
# works as before.
_EXPORTS = {
    "MEGAN": ".megan",
    "MEGANConfig": ".config",
    "PRESETS": ".config",
    "StvsrError": ".errors",
    "Upscaler": ".inference",
    "WeightsError": ".weights",
    "ZSM": ".zsm",
    "ZSMConfig": ".config",
    "build_network": ".networks",
    "convert_weights": ".weights",
    "load_model": ".weights",
    "read_weights": ".weights",
    "save_weights": ".weights",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
