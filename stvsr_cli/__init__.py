"""stvsr: space-time video super-resolution with MEGAN (and Zooming Slow-Mo)."""

__version__ = "0.1.0"

from .config import PRESETS, MEGANConfig, ZSMConfig
from .errors import StvsrError
from .megan import MEGAN
from .zsm import ZSM
from .networks import build_network
from .weights import WeightsError, convert_weights, load_model, read_weights, save_weights
from .inference import Upscaler

__all__ = [
    "MEGAN",
    "MEGANConfig",
    "PRESETS",
    "StvsrError",
    "Upscaler",
    "WeightsError",
    "ZSM",
    "ZSMConfig",
    "__version__",
    "build_network",
    "convert_weights",
    "load_model",
    "read_weights",
    "save_weights",
]
