"""The typed configurations of the two networks and their named presets.

stvsr runs two networks: MEGAN (`MEGANConfig`, stvsr_cli.megan) and Zooming
Slow-Mo, on which MEGAN builds (`ZSMConfig`, stvsr_cli.zsm). A configuration
knows which network it describes (`network`, "megan" or "zsm") and is stored
inside every weights file, so a weights file alone rebuilds the network that
made it (see `stvsr_cli.weights`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .errors import StvsrError

_Config = TypeVar("_Config", bound="_IntegerConfig")


class _IntegerConfig:
    """What both configurations do: integer fields to and from a dict, presets by name."""

    network: ClassVar[str]  # the network's name in weights files: "megan" or "zsm"
    title: ClassVar[str]  # and in messages
    channels: int
    input_frames: int
    deformable_groups: int

    @property
    def output_frames(self) -> int:
        """2n + 1: the input frames and one new frame between each pair."""
        return 2 * self.input_frames - 1

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[_Config], values: dict[str, Any]) -> _Config:
        """Rebuild a configuration, refusing fields this version does not know."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StvsrError(
                f"unknown {cls.title} configuration fields {unknown}: the weights were made by a newer stvsr; "
                "upgrade stvsr"
            )
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in values.values()):
            raise StvsrError(f"{cls.title} configuration values must be integers, got {values}")
        return cls(**values)

    def _shared_problems(self) -> list[str]:
        """What both networks refuse: deformable groups that do not divide the channels, fewer than 2 inputs."""
        problems = []
        if self.deformable_groups < 1 or self.channels % self.deformable_groups:
            problems.append(
                f"channels ({self.channels}) must be a multiple of deformable_groups ({self.deformable_groups})"
            )
        if self.input_frames < 2:
            problems.append(f"input_frames must be at least 2 (got {self.input_frames})")
        return problems

    def _raise(self, problems: list[str], counts: tuple[str, ...]) -> None:
        """Raise `problems`, and any of the `counts` of blocks below 0, as one error."""
        problems = problems + [f"{name} must not be negative (got {getattr(self, name)})" for name in counts
                               if getattr(self, name) < 0]
        if problems:
            raise StvsrError(f"invalid {self.title} configuration: " + "; ".join(problems))

    @classmethod
    def preset(cls: type[_Config], name: str) -> _Config:
        """The named preset, which must be of this network."""
        config = preset(name)
        if not isinstance(config, cls):
            raise StvsrError(f"preset {name!r} is a {config.title} network, not {cls.title}")
        return config


@dataclass(frozen=True)
class MEGANConfig(_IntegerConfig):
    """Sizes of a MEGAN network; the defaults are the paper's (You et al., sec. 3.6).

    The spatial scale is fixed at 4 (two x2 PixelShuffle stages, sec. 3.4) and
    the temporal scale at 2: `input_frames` (n + 1) LR frames give 2n + 1 HR frames.
    """

    network: ClassVar[str] = "megan"
    title: ClassVar[str] = "MEGAN"

    channels: int = 64  # nf, the width of every feature map
    input_frames: int = 4  # n + 1 LR frames in, 2n + 1 HR frames out
    nonlocal_blocks: int = 3  # m1: conv layers with a non-local residual block each (sec. 3.1)
    attention_window: int = 32  # non-local attention window on the LR feature map (the training crop)
    deformable_groups: int = 8  # as in Zooming Slow-Mo
    memory_size: int = 4  # tau: frames in LMGA's global pool (sec. 3.3)
    graph_layers: int = 2  # K: graph convolution layers in LMGA (eq. 13)
    fusion_blocks: int = 5  # m2: progressive fusion residual dense blocks (sec. 3.4)
    residual_blocks: int = 20  # m3: residual blocks before upsampling (sec. 3.4)
    # 1: the output is a correction added to the bicubic + blend baseline (see
    # MEGAN.baseline); 0, the paper's network, has no such image-space path.
    image_residual: int = 0
    # 1: a classical optical flow between neighbouring inputs (stvsr_cli.motion)
    # starts the deformable offsets that build each in-between feature and, with
    # image_residual, makes each in-between frame's base a flow-warped blend of
    # its reconstructed neighbours (see MEGAN.add_image_base). 0, the paper's
    # network, has no motion prior.
    motion_prior: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.channels < 2 or self.channels % 2:
            problems.append(f"channels must be an even number >= 2 (got {self.channels})")
        problems += self._shared_problems()
        if not 1 <= self.memory_size <= self.output_frames:
            problems.append(f"memory_size must be between 1 and {self.output_frames} (got {self.memory_size})")
        for name in ("image_residual", "motion_prior"):
            if getattr(self, name) not in (0, 1):
                problems.append(f"{name} must be 0 or 1 (got {getattr(self, name)})")
        if self.attention_window < 1:
            problems.append(f"attention_window must be positive (got {self.attention_window})")
        self._raise(problems, ("nonlocal_blocks", "graph_layers", "fusion_blocks", "residual_blocks"))


@dataclass(frozen=True)
class ZSMConfig(_IntegerConfig):
    """Sizes of a Zooming Slow-Mo network (Xiang et al., CVPR 2020); the
    defaults are the paper's (sec. 3.6 of the journal version) and those of
    the authors' released weights: 64 channels, 8 deformable groups, k1 = 5
    residual blocks of feature extraction and k2 = 40 of reconstruction.

    Scales as MEGAN's: 4x in space (two x2 PixelShuffle stages), and 2x in
    time: `input_frames` (n + 1) LR frames give 2n + 1 HR frames.
    """

    network: ClassVar[str] = "zsm"
    title: ClassVar[str] = "Zooming Slow-Mo"

    channels: int = 64  # nf, the width of every feature map
    input_frames: int = 4  # n + 1 LR frames in, 2n + 1 HR frames out
    deformable_groups: int = 8
    extraction_blocks: int = 5  # k1: residual blocks of feature extraction (sec. 3.1)
    residual_blocks: int = 40  # k2: residual blocks of frame reconstruction (sec. 3.4)

    def __post_init__(self) -> None:
        problems = []
        if self.channels < 1:
            problems.append(f"channels must be positive (got {self.channels})")
        self._raise(problems + self._shared_problems(), ("extraction_blocks", "residual_blocks"))


NetworkConfig = MEGANConfig | ZSMConfig
CONFIGS: dict[str, type[NetworkConfig]] = {config.network: config for config in (MEGANConfig, ZSMConfig)}


def config_from_dict(network: str, values: dict[str, Any]) -> NetworkConfig:
    """The configuration of the network named `network` ("megan" or "zsm") from its fields."""
    try:
        kind = CONFIGS[network]
    except KeyError:
        raise StvsrError(
            f"unknown network {network!r} (this stvsr knows {', '.join(CONFIGS)}): "
            "the weights were made by a newer stvsr; upgrade stvsr"
        ) from None
    return kind.from_dict(values)


def preset(name: str) -> NetworkConfig:
    """The configuration of a named preset, of either network."""
    try:
        return PRESETS[name]
    except KeyError:
        raise StvsrError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


PRESETS: dict[str, NetworkConfig] = {
    # The paper's network: 10.5 M parameters against the reported 10.7 M.
    "paper": MEGANConfig(),
    # Half the width and half the depth, for machines without a GPU. It learns a
    # correction to an image-space base (image_residual), so a training run
    # short enough for a CPU starts from a good baseline instead of from noise,
    # and it has the optical-flow motion prior (motion_prior), which the
    # deformable offsets could not learn in so few steps.
    "small": MEGANConfig(
        channels=32, deformable_groups=4, fusion_blocks=3, residual_blocks=10, image_residual=1, motion_prior=1
    ),
    # Every block present once, at a width that runs in milliseconds: for tests.
    "tiny": MEGANConfig(
        channels=8,
        nonlocal_blocks=1,
        attention_window=16,
        deformable_groups=2,
        graph_layers=1,
        fusion_blocks=1,
        residual_blocks=1,
    ),
    # Zooming Slow-Mo as its authors trained and released it: 11.10 M parameters, as the paper reports.
    "zsm": ZSMConfig(),
}


def preset_name(config: NetworkConfig) -> str | None:
    """The name of the preset `config` is, or None for other sizes."""
    return next((name for name, preset in PRESETS.items() if preset == config), None)
