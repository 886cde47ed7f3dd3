"""The two networks stvsr runs, built from their configurations."""

from __future__ import annotations

from .config import NetworkConfig, ZSMConfig
from .megan import MEGAN
from .zsm import ZSM

Network = MEGAN | ZSM


def build_network(config: NetworkConfig) -> Network:
    """A fresh network, with random weights, for a configuration of either kind.

    Both share one contract: `config` (with `input_frames` and
    `output_frames`), `scale`, `size_multiple`, `num_parameters()` and
    `parameter_counts()`; `stvsr_cli.weights` loads weights into them.
    """
    return ZSM(config) if isinstance(config, ZSMConfig) else MEGAN(config)
