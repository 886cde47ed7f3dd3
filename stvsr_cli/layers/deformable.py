"""Deformable alignment: modulated deformable convolution and the PCD module."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..motion import resize_flow
from .common import LEAKY_SLOPE, conv3x3, leaky_relu
from .deform_cpu import deform_conv2d

PYRAMID_LEVELS = 3  # full, 1/2 and 1/4 size, as in EDVR and Zooming Slow-Mo


class ModulatedDeformConv(nn.Module):
    """A 3x3 modulated deformable convolution (DCNv2, Zhu et al. 2019).

    Its sampling offsets and modulation masks come from a separate "offset
    feature" through a 3x3 convolution, as in EDVR's and Zooming Slow-Mo's
    `DCN_sep`. That convolution starts at zero: offsets 0 and masks
    sigmoid(0) = 0.5, so training starts from an ordinary (halved) convolution.
    The sampling itself is `torchvision.ops.deform_conv2d` on a GPU and the
    equivalent `deform_cpu.deform_conv2d_cpu` on the CPU, several times faster there.
    """

    TAPS = 9  # of the 3x3 kernel

    def __init__(self, channels: int, offset_channels: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.conv = conv3x3(channels, channels)  # holds the weight and bias that deform_conv2d applies
        # offsets (G, 9 taps, (dy, dx)), then masks (G, 9 taps): the channel layout of DCNv2's DCN_sep
        # (EDVR, ZSM) and of torchvision's deform_conv2d, so their trained offset heads load as they are
        self.offset_mask = conv3x3(offset_channels, self.offset_planes + self.mask_planes)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    @property
    def offset_planes(self) -> int:
        """Channels of the sampling offsets: (dy, dx) for each group's taps."""
        return 2 * self.TAPS * self.groups

    @property
    def mask_planes(self) -> int:
        """Channels of the modulation masks: one for each group's taps."""
        return self.TAPS * self.groups

    def flops(self, output_shape: Sequence[int]) -> int:
        """FLOPs of the deformable convolution that makes an output of
        `output_shape` (N, C, H, W): 2 * Cin * 9 per output value, the
        multiply-adds with the weights (the bilinear sampling and the offset
        head, an ordinary convolution, are not counted). The same whichever
        implementation runs."""
        return 2 * math.prod(output_shape) * self.conv.weight[0].numel()

    def forward(self, x: Tensor, offset_feature: Tensor, flow: Tensor | None = None) -> Tensor:
        """x (N, C, H, W) sampled with offsets from `offset_feature` (N, C', H, W),
        plus `flow` (N, 2, H, W; x then y, in pixels) when given: the learned
        offsets are then a residual over the flow (flow-guided deformable
        alignment, as in BasicVSR++), so zero-started offset heads sample x
        where the flow says its content is."""
        # (N, 27 G, H, W) -> offsets (N, 18 G, H, W) and masks (N, 9 G, H, W),
        # in fp32 even under autocast (reduced-precision offsets misplace
        # samples on large maps; torchvision has no bf16 kernel) and NCHW
        # whatever the features' layout: the sampling reads them a plane (one
        # group's tap) at a time, and elementwise work on channel slices of a
        # channels-last map runs in short strided pieces (the masks' sigmoid and
        # product and the grid took 2.5 to 5 times as long so in a profile here).
        offset_mask = self.offset_mask(offset_feature).to(torch.float32, memory_format=torch.contiguous_format)
        offset, mask = offset_mask.split([self.offset_planes, self.mask_planes], dim=1)
        if flow is not None:
            # offsets are (dy, dx) per group and tap: add the flow, turned to (y, x), to every one of them
            n, _, h, w = offset.shape
            offset = (offset.view(n, self.mask_planes, 2, h, w) + flow.flip(1).unsqueeze(1).float()).view(
                n, self.offset_planes, h, w
            )
        # The matrix multiply after the sampling runs, on the CPU, in the
        # dtype the features come in, like any other (bf16 under bf16 autocast).
        with torch.autocast(x.device.type, enabled=False):
            out = deform_conv2d(
                x.float(),
                offset,
                self.conv.weight.float(),
                self.conv.bias.float(),
                padding=1,
                mask=torch.sigmoid(mask),
                matmul_dtype=x.dtype,
            )
        return out.to(x.dtype)


class FeaturePyramid(nn.Module):
    """Features at full, half and quarter size: two stride-2 conv pairs (EDVR)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(
            nn.Sequential(
                conv3x3(channels, channels, stride=2),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
                conv3x3(channels, channels),
            )
            for _ in range(PYRAMID_LEVELS - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """(N, C, H, W) -> [(N, C, H, W), (N, C, H/2, W/2), (N, C, H/4, W/4)]; H, W multiples of 4."""
        levels = [x]
        for down in self.down:
            levels.append(leaky_relu(down(levels[-1]), inplace=True))
        return levels


class _PCDLevel(nn.Module):
    """One pyramid level of PCD: offsets from [source, reference], refined by the
    coarser level's offset feature, then deformable sampling of the source."""

    def __init__(self, channels: int, groups: int, coarsest: bool) -> None:
        super().__init__()
        self.offset_in = conv3x3(2 * channels, channels)
        self.offset_cascade = None if coarsest else conv3x3(2 * channels, channels)
        self.offset_out = conv3x3(channels, channels)
        self.deform = ModulatedDeformConv(channels, channels, groups)
        self.feature_cascade = None if coarsest else conv3x3(2 * channels, channels)

    def forward(
        self,
        source: Tensor,
        reference: Tensor,
        coarser: tuple[Tensor, Tensor] | None,
        activate: bool,
        flow: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (aligned source, offset feature) at this level."""
        offset = leaky_relu(self.offset_in(torch.cat([source, reference], dim=1)), inplace=True)
        if coarser is not None:
            coarse_offset, coarse_aligned = coarser
            # Offsets measured at half the resolution are half as long: upsample and double them.
            up_offset = 2 * F.interpolate(coarse_offset, scale_factor=2, mode="bilinear", align_corners=False)
            offset = leaky_relu(self.offset_cascade(torch.cat([offset, up_offset], dim=1)), inplace=True)
        offset = leaky_relu(self.offset_out(offset), inplace=True)

        aligned = self.deform(source, offset, flow)
        if coarser is None:
            return leaky_relu(aligned, inplace=True), offset
        up_aligned = F.interpolate(coarse_aligned, scale_factor=2, mode="bilinear", align_corners=False)
        aligned = self.feature_cascade(torch.cat([aligned, up_aligned], dim=1))
        return (leaky_relu(aligned, inplace=True) if activate else aligned), offset


class PCDAlignment(nn.Module):
    """Pyramid, Cascading and Deformable alignment (EDVR, Wang et al. 2019).

    Aligns `source` to `reference`, both given as `FeaturePyramid` outputs:
    at the quarter-size level, offsets are estimated from the two features and
    the source is sampled with a modulated deformable convolution; each finer
    level refines the coarser level's offsets and features (the cascade).
    As in Zooming Slow-Mo, without EDVR's extra cascading stage after the full
    size level.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        # levels[0] is full size, levels[-1] the coarsest
        self.levels = nn.ModuleList(
            _PCDLevel(channels, groups, coarsest=i == PYRAMID_LEVELS - 1) for i in range(PYRAMID_LEVELS)
        )

    def forward(self, source: list[Tensor], reference: list[Tensor], flow: Tensor | None = None) -> Tensor:
        """Pyramids of (N, C, H / 2^l, W / 2^l) -> the aligned source (N, C, H, W).

        `flow` (N, 2, H, W), when given, is where each pixel's content lies
        in the source: every level's offsets are learned as a residual over
        it, shrunk to that level's size.
        """
        coarser = None
        for index in reversed(range(PYRAMID_LEVELS)):
            level_flow = None if flow is None else resize_flow(flow, source[index].shape[-2:])
            aligned, offset = self.levels[index](source[index], reference[index], coarser, activate=index > 0,
                                                 flow=level_flow)
            coarser = (offset, aligned)
        return aligned
