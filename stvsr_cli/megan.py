"""MEGAN: Memory Enhanced Graph Attention Network for space-time video
super-resolution (Chenyu You, Lianyi Han, Aosong Feng, Ruihan Zhao, Hui Tang,
Wei Fan; WACV 2022), built on Zooming Slow-Mo (Xiaoyu Xiang, Yapeng Tian,
Yulun Zhang, Yun Fu, Jan P. Allebach, Chenliang Xu; CVPR 2020, extended as
"Zooming SlowMo: An Efficient One-Stage Framework for Space-Time Video
Super-Resolution"; "ZSM" below).

n + 1 low-resolution (LR) frames in, 2n + 1 frames at 4x the width and height
out: the inputs at the even output indices and a new frame between each pair.
The blocks below appear in the order data flows through them (paper sec. 3):

    frames (B, n+1, 3, H, W)
      -> ResidualNonLocalAttention            sec. 3.1, eqs. 1-3
      -> FrameFeatureInterpolation            sec. 3.2, eqs. 4-6     n+1 -> 2n+1 features
      -> BidirectionalDeformableConvLSTM      sec. 3.3, eqs. 7-11
      -> LongRangeMemoryGraphAggregation      sec. 3.3, eqs. 12-13
      -> ProgressiveFusionReconstruction      sec. 3.4
    frames (B, 2n+1, 3, 4H, 4W)
      (+ an image-space base, only where config.image_residual is 1)

Not in the paper, and off in the `paper` preset: `config.motion_prior`, a
classical optical flow between neighbouring inputs (`stvsr_cli.motion`),
which starts the deformable offsets of the frame feature interpolation and
makes the image-space base of each in-between frame a flow-warped blend
(`MEGAN.add_image_base`).

This file only builds the network; weights are loaded by `stvsr_cli.weights`
and the inference contract (range, padding, device, precision) is owned by
`stvsr_cli.inference.Upscaler`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import motion
from .config import MEGANConfig
from .layers import (
    LEAKY_SLOPE,
    ConvLSTMCell,
    FeaturePyramid,
    NonLocalBlock,
    PCDAlignment,
    ResidualBlock,
    check_frames,
    conv3x3,
    empty_frames_like,
    flatten_frames,
    frames_as_channels,
    leaky_relu,
    select_frames,
)


class _ConvNonLocal(nn.Module):
    """One of the m1 layers: a 3x3 convolution, then a non-local residual block."""

    def __init__(self, channels: int, window: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)
        self.nonlocal_block = NonLocalBlock(channels, window)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlocal_block(leaky_relu(self.conv(x), inplace=True))


class ResidualNonLocalAttention(nn.Module):
    """Shallow features and the residual non-local attention module (sec. 3.1).

    A 3x3 convolution from RGB, then m1 layers of a 3x3 convolution followed
    by a non-local residual block with dot-product similarity (eqs. 1-3).
    """

    def __init__(self, channels: int, blocks: int, window: int) -> None:
        super().__init__()
        self.shallow = conv3x3(3, channels)
        self.layers = nn.Sequential(*(_ConvNonLocal(channels, window) for _ in range(blocks)))

    def forward(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, C, H, W)"""
        return self.layers(leaky_relu(self.shallow(frames), inplace=True))


class DeformableFeatureBlend(nn.Module):
    """Deformable sampling of two features towards each other, linearly blended.

        a' = DConv(a, g_a([a, b])),  b' = DConv(b, g_b([b, a])),  out = C_a(a') + C_b(b')

    g_a and g_b are PCD offset estimators over a feature pyramid; C_a and C_b
    are 1x1 convolutions, applied together as one 1x1 convolution over [a', b'].
    This is the frame feature interpolation of eqs. 4-6 (ZSM eqs. 1-4), and
    ZSM's released code uses the same block to align the ConvLSTM states.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.pyramid = FeaturePyramid(channels)
        self.align_a = PCDAlignment(channels, groups)  # g_a and DConv: a sampled towards b
        self.align_b = PCDAlignment(channels, groups)  # g_b and DConv: b sampled towards a
        self.blend = nn.Conv2d(2 * channels, channels, 1)  # [C_a, C_b]

    def forward(self, a: Tensor, b: Tensor, flow_a: Tensor | None = None, flow_b: Tensor | None = None) -> Tensor:
        """Two (N, C, H, W) features, H and W multiples of 4 -> (N, C, H, W).

        `flow_a` and `flow_b` (N, 2, H, W), when given, say where each
        output pixel's content lies in a and in b; the offsets are learned
        as residuals over them (the motion prior).
        """
        pyramid_a, pyramid_b = self.pyramid(a), self.pyramid(b)
        sampled_a = self.align_a(pyramid_a, pyramid_b, flow_a)  # eqs. 4-5
        sampled_b = self.align_b(pyramid_b, pyramid_a, flow_b)
        return self.blend(torch.cat([sampled_a, sampled_b], dim=1))  # eq. 6


class FrameFeatureInterpolation(nn.Module):
    """Frame feature temporal interpolation (sec. 3.2; ZSM sec. 3.2).

    Synthesises the feature of the missing frame between every pair of
    neighbouring LR features, so n + 1 features become 2n + 1.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.interpolate = DeformableFeatureBlend(channels, groups)

    def forward(self, features: Tensor, flows: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """(B, n+1, C, H, W) -> (B, 2n+1, C, H, W), inputs at the even indices.

        `flows`, the motion prior's (forward, backward) flows between
        neighbouring inputs, (B, n, 2, H, W) each, start the sampling of each
        pair at the places their content holds halfway between them.
        """
        b, n1 = features.shape[:2]
        # all n neighbouring pairs in one batch: (B * n, C, H, W) each
        earlier = flatten_frames(features[:, :-1])
        later = flatten_frames(features[:, 1:])
        to_earlier = to_later = None
        if flows is not None:
            to_earlier, to_later = motion.flows_to_time(*(f.flatten(0, 1) for f in flows))  # (B * n, 2, H, W)
        between = self.interpolate(earlier, later, to_earlier, to_later).unflatten(0, (b, n1 - 1))
        return _interleave(features, between)


class BidirectionalDeformableConvLSTM(nn.Module):
    """Bidirectional deformable ConvLSTM (sec. 3.3, eqs. 7-11; ZSM sec. 3.3).

    At each step the previous hidden and cell states are aligned to the
    current input feature before an ordinary ConvLSTM step:
        h' = align_h(h_{t-1}, F_t),  c' = align_c(c_{t-1}, F_t)     eqs. 7-10
        h_t, c_t = ConvLSTM(h', c', F_t)                            eq. 11
    The paper's g^h and g^c are PCD modules; following ZSM's released code,
    each alignment is a `DeformableFeatureBlend` of the state and the input
    (the state sampled towards the input, as eq. 9 writes, blended with the
    input sampled towards the state). This is what makes ZSM's 5.06 M
    ConvLSTM parameters, and MEGAN's 10.7 M in all, add up.

    The forward and backward passes share weights (as in ZSM), so they run as
    one batch of 2B sequences; a 1x1 convolution merges their hidden states.

    `state_first` orders each blend's two features: (state, input) here, or
    (input, state) as ZSM's released code has them, where the input sampled
    towards the state comes first. Both compute the same function, with the
    halves of the blend's 1x1 convolution swapped; `stvsr_cli.zsm` uses
    ZSM's order, so that ZSM's released weights load by renaming alone.
    """

    def __init__(self, channels: int, groups: int, state_first: bool = True) -> None:
        super().__init__()
        self.state_first = state_first
        self.align_hidden = DeformableFeatureBlend(channels, groups)  # g^h, eqs. 7 and 9
        self.align_cell = DeformableFeatureBlend(channels, groups)  # g^c, eqs. 8 and 10
        self.step = ConvLSTMCell(channels)  # eq. 11
        self.merge = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, features: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T, C, H, W)"""
        batch, steps, c = features.shape[:3]
        # Each frame's hidden states of both directions side by side, (B, T, 2C, H, W),
        # filled as the steps make them; then merged.
        both = empty_frames_like(features, channels=2 * c)
        hidden = cell = None
        for t in range(steps):
            back = steps - 1 - t
            x = torch.cat([features[:, t], features[:, back]])  # (2B, C, H, W): step t forward and backward
            if hidden is None:
                hidden = cell = torch.zeros_like(x)
            if self.state_first:
                hidden, cell = self.step(x, self.align_hidden(hidden, x), self.align_cell(cell, x))
            else:
                hidden, cell = self.step(x, self.align_hidden(x, hidden), self.align_cell(x, cell))
            both[:, t, :c] = hidden[:batch]
            both[:, back, c:] = hidden[batch:]
        return self.merge(flatten_frames(both)).view_as(features)


class MemoryGraphLayer(nn.Module):
    """One graph layer of LMGA (eq. 13), over the T frame features as nodes.

        A_pq = softmax_q(phi(|E_p - E_q|)),  E_p <- LeakyReLU(theta * sum_q A_pq E_q)

    phi is two stacked 3x3 convolutions down to one channel and theta a 3x3
    convolution. Choice the paper leaves open: an edge weight here is one
    number per pair of frames *per pixel*, not one pooled number per pair.
    Motion is local: a moving object and its static background relate to the
    other frames differently, and a per-pixel softmax lets each position draw
    on the frames that match it. The cost is small, since |E_p - E_q| is
    symmetric and phi runs once per unordered pair (T (T + 1) / 2 of them).
    """

    def __init__(self, channels: int, nodes: int) -> None:
        super().__init__()
        self.edge = nn.Sequential(
            conv3x3(channels, channels // 2), nn.LeakyReLU(LEAKY_SLOPE, inplace=True), conv3x3(channels // 2, 1)
        )  # phi
        self.theta = conv3x3(channels, channels)
        first, second = torch.triu_indices(nodes, nodes)  # unordered pairs, diagonal included
        pair_of = torch.empty(nodes, nodes, dtype=torch.long)
        pair_of[first, second] = torch.arange(first.numel())
        pair_of[second, first] = torch.arange(first.numel())
        self.register_buffer("first", first, persistent=False)
        self.register_buffer("second", second, persistent=False)
        self.register_buffer("pair_of", pair_of, persistent=False)  # (T, T) -> pair index

    def forward(self, nodes: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T, C, H, W)"""
        b, t, c, h, w = nodes.shape
        difference = (select_frames(nodes, self.first) - select_frames(nodes, self.second)).abs_()  # (B, P, C, H, W)
        pair_logits = self.edge(flatten_frames(difference)).view(b, -1, h, w)  # (B, P, H, W)
        adjacency = pair_logits[:, self.pair_of].softmax(dim=2)  # (B, T, T, H, W), rows sum to 1
        # messages_p = sum_q A_pq E_q, as T multiply-adds over whole maps. (An
        # einsum runs it as one tiny T x T by T x C product per pixel: on the
        # CPU that took as long as a tenth of the network's convolutions.)
        messages = adjacency[:, :, :1] * nodes[:, None, 0]  # (B, T, C, H, W), laid out as nodes
        for q in range(1, t):
            messages.addcmul_(adjacency[:, :, q : q + 1], nodes[:, None, q])
        return leaky_relu(self.theta(flatten_frames(messages)), inplace=True).view_as(nodes)


class LongRangeMemoryGraphAggregation(nn.Module):
    """Long-range memory graph aggregation, LMGA (sec. 3.3, eqs. 12-13).

    The local pool is the T = 2n + 1 ConvLSTM features; the global pool, the
    "memory", is tau of them. N_g (three convolutions) fuses every local
    feature with the whole memory (eq. 12); K graph layers then pass messages
    between the frames (eq. 13), and two convolutions refine each node.

    Choices the paper leaves open: the memory is drawn at random while
    training (as the paper says) but is a fixed, evenly spaced choice at
    inference, so the output is deterministic; for n = 3 and tau = 4 that is
    frames 0, 2, 4, 6, the ones seen in the input. The memory is always kept
    in time order, so N_g sees the same ordering in training and inference.
    The refined features are added to the ConvLSTM features (a residual
    connection), so the module learns a correction of its input.
    """

    def __init__(self, channels: int, frames: int, memory_size: int, graph_layers: int) -> None:
        super().__init__()
        self.frames = frames
        self.memory_size = memory_size
        self.aggregate = nn.Sequential(  # N_g
            conv3x3((1 + memory_size) * channels, channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            conv3x3(channels, channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            conv3x3(channels, channels),
        )
        self.graph = nn.ModuleList(MemoryGraphLayer(channels, frames) for _ in range(graph_layers))
        self.refine = nn.Sequential(
            conv3x3(channels, channels), nn.LeakyReLU(LEAKY_SLOPE, inplace=True), conv3x3(channels, channels)
        )
        evenly_spaced = torch.linspace(0, frames - 1, memory_size).round().long()
        self.register_buffer("inference_memory", evenly_spaced, persistent=False)

    def memory_indices(self) -> Tensor:
        if self.training:
            return torch.randperm(self.frames)[: self.memory_size].sort().values.to(self.inference_memory.device)
        return self.inference_memory

    def forward(self, local: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T, C, H, W)"""
        c = local.shape[2]
        # every frame's own features, then the whole memory's: (B, T, (1 + tau) C, H, W)
        enriched = empty_frames_like(local, channels=(1 + self.memory_size) * c)
        enriched[:, :, :c] = local
        memory = select_frames(local, self.memory_indices())  # (B, tau, C, H, W)
        enriched[:, :, c:].unflatten(2, (self.memory_size, c)).copy_(memory.unsqueeze(1))
        nodes = self.aggregate(flatten_frames(enriched)).view_as(local)  # eq. 12
        for layer in self.graph:  # eq. 13, K times
            nodes = layer(nodes)
        return local + self.refine(flatten_frames(nodes)).view_as(local)


class ProgressiveFusionBlock(nn.Module):
    """Progressive fusion residual dense block, PFRDB (sec. 3.4; PFNL, Yi et al. 2019).

    Every frame's features through a 3x3 convolution; all frames fused by a
    1x1 convolution over their concatenation; each frame's own and the fused
    features merged by a 3x3 convolution; a residual connection per frame.
    Unlike PFNL, the per-frame convolutions share their weights across frames:
    separate ones would add 3.3 M parameters and break the paper's 10.7 M.
    """

    def __init__(self, channels: int, frames: int) -> None:
        super().__init__()
        self.own = conv3x3(channels, channels)
        self.fuse = nn.Conv2d(frames * channels, channels, 1)
        self.merge = conv3x3(2 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T, C, H, W)"""
        c = x.shape[2]
        own = leaky_relu(self.own(flatten_frames(x)), inplace=True).view_as(x)
        fused = leaky_relu(self.fuse(frames_as_channels(own)), inplace=True)  # (B, C, H, W)
        both = empty_frames_like(x, channels=2 * c)  # (B, T, 2C, H, W): each frame's own, then the fused
        both[:, :, :c] = own
        both[:, :, c:] = fused.unsqueeze(1)
        return x + leaky_relu(self.merge(flatten_frames(both)), inplace=True).view_as(x)


class ProgressiveFusionReconstruction(nn.Module):
    """Progressive fusion reconstruction (sec. 3.4).

    m2 progressive fusion blocks across frames, m3 residual blocks per frame,
    two x2 PixelShuffle stages and a last convolution to RGB (as in ZSM).
    """

    def __init__(self, channels: int, frames: int, fusion_blocks: int, residual_blocks: int) -> None:
        super().__init__()
        self.fusion = nn.Sequential(*(ProgressiveFusionBlock(channels, frames) for _ in range(fusion_blocks)))
        self.body = nn.Sequential(*(ResidualBlock(channels) for _ in range(residual_blocks)))
        self.upsample = nn.Sequential(
            conv3x3(channels, 4 * channels),
            nn.PixelShuffle(2),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            conv3x3(channels, 4 * channels),
            nn.PixelShuffle(2),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            conv3x3(channels, channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            conv3x3(channels, 3),
        )

    def forward(self, features: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T, 3, 4H, 4W)"""
        maps = self.body(flatten_frames(self.fusion(features)))  # (B * T, C, H, W)
        # On the CPU the upsampling runs a frame at a time: its maps are 4x and
        # 16x the LR's, and one frame's stay in the cache where all seven
        # frames' do not (this stage took 30% less time so at 320x180 output,
        # with the same result).
        step = 1 if maps.device.type == "cpu" else maps.shape[0]
        frames = torch.cat([self.upsample(m).contiguous() for m in maps.split(step)])  # NCHW, for the image work
        return frames.unflatten(0, features.shape[:2])  # (B, T, 3, 4H, 4W)


class MEGAN(nn.Module):
    """The whole network: (B, n+1, 3, H, W) -> (B, 2n+1, 3, 4H, 4W).

    Values are nominally in [0, 1] but not clamped here. H and W must be
    multiples of `size_multiple` (the feature pyramid halves them twice);
    `stvsr_cli.inference.Upscaler` pads any other size and crops the result.
    """

    scale = 4
    size_multiple = 4
    # On the CPU every feature map, from the first convolution to the RGB
    # output, is channels-last (NHWC): oneDNN's convolutions are faster on it
    # than on NCHW (4x for a 64-channel 3x3 convolution on an AMD Zen 4, per
    # shared/docs/measuring.md; 1.3x over all of the small preset's
    # convolutions on an AVX2-only EPYC, from 0.7x to 1.7x by shape), and the
    # blocks keep the layout (see `layers.empty_frames_like`). False runs
    # NCHW, the layout on a GPU, where channels-last is not measured yet.
    channels_last_on_cpu = True

    def __init__(self, config: MEGANConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MEGANConfig()
        c, groups, frames = config.channels, config.deformable_groups, config.output_frames
        self.attention = ResidualNonLocalAttention(c, config.nonlocal_blocks, config.attention_window)
        self.interpolation = FrameFeatureInterpolation(c, groups)
        self.convlstm = BidirectionalDeformableConvLSTM(c, groups)
        self.lmga = LongRangeMemoryGraphAggregation(c, frames, config.memory_size, config.graph_layers)
        self.reconstruction = ProgressiveFusionReconstruction(
            c, frames, config.fusion_blocks, config.residual_blocks
        )

    def forward(self, frames: Tensor) -> Tensor:
        check_frames(frames, self.config.input_frames, self.size_multiple, "MEGAN")
        b, n1, _, h, w = frames.shape
        flows = motion.pair_flows(frames) if self.config.motion_prior else None  # (B, n, 2, H, W) twice
        maps = frames.flatten(0, 1)  # (B * (n+1), 3, H, W)
        if frames.device.type == "cpu" and self.channels_last_on_cpu:
            maps = maps.contiguous(memory_format=torch.channels_last)
        features = self.attention(maps).unflatten(0, (b, n1))  # (B, n+1, C, H, W)
        features = self.interpolation(features, flows)  # (B, 2n+1, C, H, W)
        features = self.convlstm(features)
        features = self.lmga(features)
        output = self.reconstruction(features)  # (B, 2n+1, 3, 4H, 4W)
        if self.config.image_residual:
            output = self.add_image_base(output, frames, flows)
        return output

    def add_image_base(self, residual: Tensor, frames: Tensor, flows: tuple[Tensor, Tensor] | None) -> Tensor:
        """The output of a network with `image_residual`: (B, 2n+1, 3, 4H, 4W).

        Without a motion prior the base is `baseline` (bicubic + blend).
        With one, the frames at the inputs' times are the same (bicubic plus
        the network's correction), and each in-between frame's base is
        `motion.interpolate` of those two *reconstructed* neighbours, with
        the LR flows enlarged 4x: a flow-warped, occlusion-aware blend that
        gets the reconstruction's detail, where a plain blend doubles
        everything that moves. The network's correction is added on top.
        """
        if flows is None:
            return residual + self.baseline(frames)
        b, n1, c, h, w = frames.shape
        enlarged = self._enlarge(frames)
        at_inputs = residual[:, 0::2] + enlarged  # (B, n+1, 3, 4H, 4W)
        forward, backward = (f.flatten(0, 1) for f in flows)
        between = motion.interpolate(at_inputs[:, :-1].flatten(0, 1), at_inputs[:, 1:].flatten(0, 1), forward,
                                     backward).view(b, n1 - 1, c, self.scale * h, self.scale * w)
        return _interleave(at_inputs, residual[:, 1::2] + between)

    def baseline(self, frames: Tensor) -> Tensor:
        """Bicubic + blend: (B, n+1, 3, H, W) -> (B, 2n+1, 3, 4H, 4W).

        Each input enlarged 4x with bicubic, each in-between frame the mean of
        its two neighbours: the simplest space-time upscale, which `stvsr
        eval --baselines` scores as "bicubic + blend". Not in the paper: a
        network with `image_residual` learns only what this misses, which
        takes far fewer training steps than learning whole frames (the
        `small` preset is meant to be trainable on a CPU). The last
        convolution keeps its ordinary random start, so an untrained network
        is the baseline plus faint noise: started at zero, it left every
        layer before it with almost no gradient, and after 100 training steps
        its correction was still 4e-5 (standard deviation) and validation
        PSNR had not moved.
        """
        enlarged = self._enlarge(frames)
        return _interleave(enlarged, (enlarged[:, :-1] + enlarged[:, 1:]) / 2)

    def _enlarge(self, frames: Tensor) -> Tensor:
        """(B, n+1, 3, H, W) -> (B, n+1, 3, 4H, 4W), bicubic."""
        b, n1, c, h, w = frames.shape
        enlarged = F.interpolate(frames.flatten(0, 1), scale_factor=self.scale, mode="bicubic", align_corners=False)
        return enlarged.view(b, n1, c, self.scale * h, self.scale * w)


    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per stage of the network, in data-flow order."""
        return {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()}


def _interleave(at_inputs: Tensor, between: Tensor) -> Tensor:
    """(B, n+1, C, H, W) and (B, n, C, H, W) -> (B, 2n+1, C, H, W), laid out
    as `at_inputs`: input 0, between 0, input 1, ..., input n."""
    woven = empty_frames_like(at_inputs, frames=2 * at_inputs.shape[1] - 1)
    woven[:, 0::2] = at_inputs
    woven[:, 1::2] = between
    return woven
