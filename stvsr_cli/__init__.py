"""stvsr: space-time video super-resolution with MEGAN."""

__version__ = "0.1.0"

from .config import PRESETS, MEGANConfig
from .errors import StvsrError
from .megan import MEGAN
from .weights import WeightsError, load_model, read_weights, save_weights
from .inference import Upscaler

__all__ = [
    "MEGAN",
    "MEGANConfig",
    "PRESETS",
    "StvsrError",
    "Upscaler",
    "WeightsError",
    "__version__",
    "load_model",
    "read_weights",
    "save_weights",
]
