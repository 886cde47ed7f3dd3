"""PSNR and SSIM as the video super-resolution field computes them.

The field scores on the luma (Y) channel of YCbCr with the BT.601 coefficients
that MATLAB's `rgb2ycbcr` uses, Y in [16, 235] on a 0-255 scale, with no border
crop. SSIM is Wang et al.'s with an 11x11 Gaussian window (sigma 1.5) and
population covariance; it reproduces scikit-image's
`structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`, which the tests check.

Every function takes float frames in [0, 1] shaped (3, H, W) (RGB) and returns a
Python float for one frame; averaging over frames and clips is the caller's.
Predictions are quantised to 8 bits first (`quantize`), because a published score
is always computed on the 8-bit frames that were written to disk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# MATLAB rgb2ycbcr, R, G, B in [0, 1]: Y = 16 + 65.481 R + 128.553 G + 24.966 B.
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

# SSIM constants (Wang et al. 2004) and scikit-image's Gaussian window:
# radius = int(truncate * sigma + 0.5) = 5 with its default truncate of 3.5.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def quantize(frames: Tensor) -> Tensor:
    """Round [0, 1] floats to the nearest of the 256 levels an 8-bit file holds."""
    return frames.clamp(0, 1).mul(255).round().div(255)


def rgb_to_y(rgb: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., H, W) luma in [16, 235], float64."""
    rgb = rgb.double()
    r, g, b = rgb.unbind(-3)
    return Y_OFFSET + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b


def psnr(pred: Tensor, target: Tensor, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB over all elements; inf for identical inputs."""
    _check_shapes(pred, target)
    mse = (pred.double() - target.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def ssim(pred: Tensor, target: Tensor, data_range: float) -> float:
    """Mean SSIM of (H, W) planes, or of (C, H, W) planes averaged over C.

    Only the positions whose whole 11x11 window lies inside the image are
    averaged, as scikit-image does: its reflect padding never reaches them.
    """
    return ssim_tensor(pred, target, data_range).item()


def ssim_tensor(pred: Tensor, target: Tensor, data_range: float) -> Tensor:
    """`ssim` as a float64 scalar tensor that keeps the autograd graph, so a
    training loss can use the same measure (planes: any leading shape)."""
    _check_shapes(pred, target)
    x = pred.double().reshape(-1, 1, *pred.shape[-2:])  # (C, 1, H, W)
    y = target.double().reshape(-1, 1, *target.shape[-2:])
    if min(x.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs frames of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} pixels")

    def blur(plane: Tensor) -> Tensor:  # separable Gaussian, valid positions only
        return F.conv2d(F.conv2d(plane, window.view(1, 1, -1, 1)), window.view(1, 1, 1, -1))

    window = _gaussian_window(x.device)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov_xy = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3)).mean()


def psnr_y(pred: Tensor, target: Tensor) -> float:
    """PSNR on Y of two (3, H, W) RGB frames in [0, 1]; the prediction is quantised."""
    return psnr(rgb_to_y(quantize(pred)), rgb_to_y(target), data_range=255)


def ssim_y(pred: Tensor, target: Tensor) -> float:
    """SSIM on Y of two (3, H, W) RGB frames in [0, 1]; the prediction is quantised."""
    return ssim(rgb_to_y(quantize(pred)), rgb_to_y(target), data_range=255)


def psnr_rgb(pred: Tensor, target: Tensor) -> float:
    """PSNR over the three RGB channels on the 0-255 scale."""
    return psnr(quantize(pred) * 255, target * 255, data_range=255)


def ssim_rgb(pred: Tensor, target: Tensor) -> float:
    """SSIM per RGB channel on the 0-255 scale, averaged over channels."""
    return ssim(quantize(pred) * 255, target * 255, data_range=255)


def _gaussian_window(device: torch.device) -> Tensor:
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64, device=device)
    window = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return window / window.sum()


def _check_shapes(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
