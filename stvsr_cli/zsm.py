"""Zooming Slow-Mo (Xiaoyu Xiang, Yapeng Tian, Yulun Zhang, Yun Fu, Jan P.
Allebach, Chenliang Xu; CVPR 2020, extended as "Zooming SlowMo: An Efficient
One-Stage Framework for Space-Time Video Super-Resolution"; "ZSM" below).

The network MEGAN builds on, with the same task and contract: n + 1 LR frames
in, 2n + 1 frames at 4x the width and height out, the inputs at the even
output indices. Its blocks, in the order data flows through them (sections
of the journal version):

    frames (B, n+1, 3, H, W)
      -> FeatureExtraction                    sec. 3.1   a conv and k1 residual blocks
      -> FrameFeatureInterpolation            sec. 3.2   n+1 -> 2n+1 features
      -> BidirectionalDeformableConvLSTM      sec. 3.3
      -> reconstruction                       sec. 3.4   k2 residual blocks, two x2 PixelShuffle
    frames (B, 2n+1, 3, 4H, 4W)

All but the first are MEGAN's blocks (`stvsr_cli.megan`), which MEGAN took
from ZSM: MEGAN adds non-local attention before them, a memory graph and
progressive fusion blocks after. With the blocks' names mapped
(`stvsr_cli.zsm_weights`), the authors' released weights give the output of
their own code to float rounding. One detail follows their code rather than
MEGAN's choice: each ConvLSTM state alignment blends (input, state) in that
order (see `BidirectionalDeformableConvLSTM`).

The guided feature interpolation learning of the journal version (sec. 3.5)
is a training loss with its own LR synthesis module; the CVPR release, and
this network, have neither.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import ZSMConfig
from .layers import ResidualBlock, check_frames, conv3x3, leaky_relu
from .megan import BidirectionalDeformableConvLSTM, FrameFeatureInterpolation, ProgressiveFusionReconstruction


class FeatureExtraction(nn.Module):
    """A 3x3 convolution from RGB, then k1 residual blocks (sec. 3.1)."""

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.shallow = conv3x3(3, channels)
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))

    def forward(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, C, H, W)"""
        return self.blocks(leaky_relu(self.shallow(frames), inplace=True))


class ZSM(nn.Module):
    """The whole network: (B, n+1, 3, H, W) -> (B, 2n+1, 3, 4H, 4W).

    Values are nominally in [0, 1] (RGB) but not clamped here. H and W must be
    multiples of `size_multiple` (the feature pyramid halves them twice);
    `stvsr_cli.inference.Upscaler` pads any other size and crops the result.
    """

    scale = 4
    size_multiple = 4

    def __init__(self, config: ZSMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ZSMConfig()
        c, groups = config.channels, config.deformable_groups
        self.extraction = FeatureExtraction(c, config.extraction_blocks)
        self.interpolation = FrameFeatureInterpolation(c, groups)
        self.convlstm = BidirectionalDeformableConvLSTM(c, groups, state_first=False)
        # ZSM's reconstruction is MEGAN's without the progressive fusion blocks.
        # (ZSM's code writes 64 for the width of its last two stages; with its
        # 64 channels that is `channels`, which is used here for every width.)
        self.reconstruction = ProgressiveFusionReconstruction(
            c, config.output_frames, fusion_blocks=0, residual_blocks=config.residual_blocks
        )

    def forward(self, frames: Tensor) -> Tensor:
        check_frames(frames, self.config.input_frames, self.size_multiple, "ZSM")
        b, n1, _, h, w = frames.shape
        features = self.extraction(frames.flatten(0, 1)).view(b, n1, -1, h, w)  # (B, n+1, C, H, W)
        features = self.interpolation(features)  # (B, 2n+1, C, H, W)
        features = self.convlstm(features)
        return self.reconstruction(features)  # (B, 2n+1, 3, 4H, 4W)


    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per stage, in data-flow order, as the paper counts them
        (its reconstruction is residual blocks and upsampling)."""
        counts = {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()}
        del counts["reconstruction"]
        for name in ("body", "upsample"):
            counts[f"reconstruction.{name}"] = sum(
                p.numel() for p in getattr(self.reconstruction, name).parameters()
            )
        return counts
