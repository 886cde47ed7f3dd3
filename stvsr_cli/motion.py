"""A classical motion prior: optical flow between two frames, and the frame between them.

Nothing here learns. `estimate_flow` is OpenCV's DIS optical flow (Kroeger,
Timofte, Dai and Van Gool, "Fast Optical Flow using Dense Inverse Search",
ECCV 2016): a coarse-to-fine patch search followed by variational
refinement, on the CPU, a few milliseconds for a pair of LR frames.

`interpolate` makes the frame at time t between two frames from their two
flows: the flows from time t back to each frame come from the linear-motion
approximation of Super SloMo (Jiang et al., CVPR 2018, eq. 4), each frame is
warped to time t, and the two are blended by time, except where one frame
shows content the other cannot: a pixel whose forward and backward flows do
not agree (Sundaram et al., ECCV 2010) is occluded in the other frame, and
there only the frame that sees it is used.

Why DIS: on the real clips of `shared/data` (LR frames made as `stvsr eval`
makes them) its in-between frames scored as well as or better than a TV-L1
solver written in PyTorch (coarse to fine, IPOL 2013's parameters), by 2.3
dB PSNR-Y on the clip with the fastest motion, at a hundredth of the time on
the CPU. The medium preset at full resolution (finest scale 0) was the best
of the presets tried (`weights/README.md` has the numbers).

Conventions: a flow is (N, 2, H, W), channel 0 the x (column) and channel 1
the y (row) displacement in pixels, "backward": `flow_ab` gives for each
pixel x of frame a where it is in frame b, so a(x) ~ b(x + flow_ab(x)) and
`warp(b, flow_ab)` looks like a.

MEGAN's motion prior (`MEGANConfig.motion_prior`, not in the paper) runs
`pair_flows` on the low-resolution inputs and uses the flows twice: as the
starting offsets of the deformable sampling that builds the in-between
features, and, with `image_residual`, for the image-space base of each
in-between frame (see `stvsr_cli.megan`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# BT.601 luma weights: the flow is estimated on brightness.
_LUMA = (0.299, 0.587, 0.114)
# DIS compares 8x8 patches: smaller frames are padded (edges repeated) to this size first.
_MIN_FLOW_SIDE = 16


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """`image` sampled at x + flow(x): (N, C, H, W) and (N, 2, H, W) -> (N, C, H, W).

    Bilinear; positions outside the frame take the nearest edge pixel.
    """
    n, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    # grid_sample with align_corners=True maps -1 and 1 to the centres of the edge pixels
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], dim=-1)  # (N, H, W, 2)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def estimate_flow(source: Tensor, target: Tensor) -> Tensor:
    """DIS optical flow from `source` to `target`: (N, 3, H, W) RGB in [0, 1]
    -> (N, 2, H, W) float32 on the same device. No gradient flows through it.

    Frames go to the CPU as 8-bit brightness (BT.601 luma), as DIS takes them.
    """
    n, _, h, w = source.shape
    pad_h, pad_w = max(_MIN_FLOW_SIDE - h, 0), max(_MIN_FLOW_SIDE - w, 0)
    with torch.no_grad():
        both = torch.cat([source, target]).detach().float()
        weights = both.new_tensor(_LUMA).view(1, 3, 1, 1)
        gray = (both * weights).sum(1, keepdim=True)
        if pad_h or pad_w:
            gray = F.pad(gray, (0, pad_w, 0, pad_h), mode="replicate")
        gray = gray.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()[:, 0]
    import cv2  # here, not at the top: it takes half a second to import, and only a motion prior needs it

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)  # down to full resolution: LR frames have no detail to spare
    flows = np.stack([dis.calc(gray[i], gray[n + i], None) for i in range(n)])  # (N, H', W', 2)
    flow = torch.from_numpy(flows).permute(0, 3, 1, 2)[..., :h, :w]
    return flow.contiguous().to(source.device)


def pair_flows(frames: Tensor) -> tuple[Tensor, Tensor]:
    """Flows between neighbouring frames of windows: (B, T, 3, H, W) ->
    forward (B, T-1, 2, H, W) from frame i to i+1, and backward from i+1 to i.

    All 2 (T-1) B pairs run as one batch.
    """
    b, t, c, h, w = frames.shape
    earlier, later = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
    flows = estimate_flow(torch.cat([earlier, later]), torch.cat([later, earlier]))
    forward, backward = flows.view(2, b, t - 1, 2, h, w).unbind(0)
    return forward, backward


def flows_to_time(flow01: Tensor, flow10: Tensor, t: float = 0.5) -> tuple[Tensor, Tensor]:
    """The flows from time t back to frame 0 and on to frame 1 (Super SloMo, eq. 4):

        F_t0 = -(1 - t) t F_01 + t^2 F_10,   F_t1 = (1 - t)^2 F_01 - t (1 - t) F_10

    exact for motion that is linear in time and the same at x in both frames.
    """
    return -(1 - t) * t * flow01 + t * t * flow10, (1 - t) ** 2 * flow01 - t * (1 - t) * flow10


def occlusion(flow_ab: Tensor, flow_ba: Tensor, alpha: float = 0.01, beta: float = 0.5) -> Tensor:
    """(N, 1, H, W): 1 where a pixel of frame a is not seen in frame b, else 0.

    Forward-backward check (Sundaram et al. 2010): going to b and back must
    return to the start, |F_ab + F_ba(x + F_ab)|^2 <= alpha (|F_ab|^2 + |F_ba(x + F_ab)|^2) + beta.
    Pixels that leave the frame are occluded too.
    """
    back = warp(flow_ba, flow_ab)
    mismatch = (flow_ab + back).square().sum(1, keepdim=True)
    scale = flow_ab.square().sum(1, keepdim=True) + back.square().sum(1, keepdim=True)
    occluded = mismatch > alpha * scale + beta
    _, _, h, w = flow_ab.shape
    x = torch.arange(w, device=flow_ab.device).view(1, 1, w) + flow_ab[:, 0]
    y = torch.arange(h, device=flow_ab.device).view(1, h, 1) + flow_ab[:, 1]
    outside = ((x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)).unsqueeze(1)
    return (occluded | outside).to(flow_ab.dtype)


def interpolate(frame0: Tensor, frame1: Tensor, flow01: Tensor, flow10: Tensor, t: float = 0.5) -> Tensor:
    """The frame at time t in (0, 1) between `frame0` and `frame1`, (N, C, H, W).

    Both frames are warped to time t (`flows_to_time`) and blended with
    weights 1 - t and t, except where the sample taken from one frame is
    occluded in the other (`occlusion`): there the other frame's sample is
    wrong (it shows what covers the place, or what the flow guessed), so
    only the frame that sees it counts. Where both samples are occluded the
    time weights stand. The flows may be smaller than the frames (LR flows
    for HR frames): the plan is made at the flows' size, then enlarged.
    """
    flow_t0, flow_t1, weight0 = time_plan(flow01, flow10, t)
    size = frame0.shape[-2:]
    flow_t0, flow_t1 = resize_flow(flow_t0, size), resize_flow(flow_t1, size)
    if weight0.shape[-2:] != size:
        weight0 = F.interpolate(weight0, size=size, mode="bilinear", align_corners=False)
    warped0 = warp(frame0, flow_t0.to(frame0.dtype))
    warped1 = warp(frame1, flow_t1.to(frame1.dtype))
    return warped1 + weight0.to(frame0.dtype) * (warped0 - warped1)


def time_plan(flow01: Tensor, flow10: Tensor, t: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """How `interpolate` builds the frame at time t: the flows from time t to
    frames 0 and 1, (N, 2, H, W) each, and frame 0's share of each pixel,
    (N, 1, H, W) in [0, 1] (frame 1 has the rest)."""
    flow_t0, flow_t1 = flows_to_time(flow01, flow10, t)
    # Where the frame-0 sample is occluded in frame 1, only frame 0 has it: frame 1's weight goes, and vice versa.
    only0 = warp(occlusion(flow01, flow10), flow_t0)
    only1 = warp(occlusion(flow10, flow01), flow_t1)
    weight0 = (1 - t) * (1 - only1 * (1 - only0))
    weight1 = t * (1 - only0 * (1 - only1))
    return flow_t0, flow_t1, weight0 / (weight0 + weight1)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """A flow field resized to (H, W), its vectors scaled by the same factors."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    resized = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / w, size[0] / h], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return resized * scale
