"""Modulated deformable convolution that is fast on the CPU.

`torchvision.ops.deform_conv2d` runs on the CPU at about a thirtieth of the speed
of an ordinary convolution doing the same arithmetic (8 against 200 to 280
GFLOP/s on 2 cores), and it does not use the second core: in the paper
preset's forward pass it took over a third of the time for 4.4% of the
arithmetic.
`deform_conv2d` here is a drop-in replacement that sends CPU tensors to
`deform_conv2d_cpu` and everything else (CUDA) to torchvision.

How `deform_conv2d_cpu` works: deformable convolution is bilinear sampling
(im2col at moved positions, times the mask) followed by one matrix multiply
with the weights. Both are done with stock, vectorised, multi-threaded
PyTorch operators, so autograd gives the backward pass:

1. every deformable group is one "image" of C/G channels, and
   `F.grid_sample` samples it at the 9 moved tap positions of every output
   pixel: (N*G, C/G, 9, Ho*Wo) columns;
2. the columns are multiplied by the modulation masks;
3. one batched matrix multiply, (Cout, C*9) @ (N, C*9, Ho*Wo), gives the
   output already in NCHW order, because the columns come out in the
   (channel, tap) order of the weight tensor; for a channels-last input
   the same product taken the other way round, (N, Ho*Wo, C*9) @ (C*9,
   Cout), gives it in channels-last order.

Without autograd, steps 1-3 run a few output rows at a time, so the
columns (9x the input) stay in cache (`COLUMNS_CHUNK_BYTES`).

Measured on a 2-core CPU at the paper preset's full-size PCD layer (N 2,
64 channels, 92x160, 8 groups): forward, torchvision 281 ms (7.7 GFLOP/s),
this 46 ms (47 GFLOP/s); forward plus backward 2.7 s against 0.25 s (2
threads) or 0.44 s (1 thread). Most of the time is the sampling. A gather
over channels-last data (`F.embedding_bag` with per-sample weights, 4
corner rows per sample) gave the same outputs but took twice as long:
computing 4 indices and 4 weights per sample costs more elementwise passes
than the gather itself.

Exactness: `grid_sample` takes positions normalised to [-1, 1] and maps them
back with (g + 1) * (size - 1) / 2. The input is zero-padded to 2^k + 1
pixels per side, so that factor is a power of two and integer positions
(zero offsets, as at initialisation) survive the round trip exactly: the
bilinear corners, and so the one-sided gradients with respect to the
offsets, are the ones torchvision picks. Other positions move by at most
about 2^-24 * 2^k pixels (a few 1e-6 pixels on a 160-pixel-wide map).
Zero padding gives torchvision's border rules: a sample at y <= -1 or
y >= H reads 0, and between -1 and 0 it blends the first row with zero.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import is_channels_last

BACKENDS = ("auto", "torchvision")
COLUMNS_CHUNK_BYTES = 4 << 20  # measured best of 1, 4, 16 MB and unchunked (68 MB) on a 2-core CPU
_backend = "auto"


@contextlib.contextmanager
def cpu_backend(name: str) -> Iterator[None]:
    """Choose how CPU tensors are handled inside the block: "auto" (the fast
    path) or "torchvision" (the reference, for comparisons and benchmarks)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown deformable convolution backend {name!r}; use one of {BACKENDS}")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
    matmul_dtype: torch.dtype | None = None,
) -> Tensor:
    """`torchvision.ops.deform_conv2d`, with CPU float tensors sent to the fast
    path. `matmul_dtype` applies there only (see `deform_conv2d_cpu`):
    torchvision computes everything in the input's dtype."""
    if _backend == "auto" and _fast_path_applies(input, offset, weight, mask):
        return deform_conv2d_cpu(input, offset, weight, bias, stride, padding, dilation, mask, matmul_dtype)
    import torchvision.ops  # here, not at the top: importing it takes seconds, and the CPU path never needs it

    return torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)


def _fast_path_applies(input: Tensor, offset: Tensor, weight: Tensor, mask: Tensor | None) -> bool:
    tensors = [input, offset, weight] + ([] if mask is None else [mask])
    return (
        all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)
        and input.dim() == 4
        and weight.dim() == 4
        and weight.shape[1] == input.shape[1]  # no grouped weights (torchvision's n_weight_grps)
    )


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _plane_size(size: int) -> int:
    """2^k + 1 >= size + 2: room for the zero border and a power-of-two scale."""
    return 2 ** math.ceil(math.log2(size + 1)) + 1


def _groups(input: Tensor, offset: Tensor, mask: Tensor | None, kernel: tuple[int, int],
            out_size: tuple[int, int]) -> int:
    """The deformable groups the offsets give, after checking that they and the mask fit the input."""
    (kh, kw), (ho, wo), c, taps = kernel, out_size, input.shape[1], kernel[0] * kernel[1]
    groups = offset.shape[1] // (2 * taps)
    if groups < 1 or offset.shape[1] != 2 * groups * taps or c % groups or offset.shape[-2:] != (ho, wo):
        raise ValueError(
            f"offset {tuple(offset.shape)} does not fit input {tuple(input.shape)} and a {kh}x{kw} kernel: "
            f"expected (N, 2 * groups * {taps}, {ho}, {wo}) with {c} channels a multiple of groups"
        )
    if mask is not None and mask.shape[1:] != (groups * taps, ho, wo):
        raise ValueError(f"mask {tuple(mask.shape)} should be (N, {groups * taps}, {ho}, {wo})")
    return groups


def _planes(input: Tensor, groups: int, channels_last: bool) -> tuple[Tensor, Tensor]:
    """The input as grid_sample's images, (N * G, C/G, Wq, Hq), and the (y, x) scale from pixels to
    grid_sample's normalised units.

    Each deformable group becomes an image of C/G channels on a zero plane
    of 2^k + 1 pixels per side (see the module docstring), stored
    transposed, (W, H): grid_sample's grid is (x, y), along the last axis
    first, so on a transposed plane it is (y, x), the offsets' own order.
    Planes of a channels-last input are channels-last too: filling them
    then reads the input in order, and grid_sample's reads of one corner
    for consecutive channels are neighbours in memory.
    """
    n, c, h, w = input.shape
    hq, wq = _plane_size(h), _plane_size(w)
    scale = input.new_tensor([2 / (hq - 1), 2 / (wq - 1)])  # pixels -> normalised units, powers of two
    if channels_last:
        planes = input.new_zeros(n, groups, wq, hq, c // groups).permute(0, 1, 4, 2, 3)
    else:
        planes = input.new_zeros(n, groups, c // groups, wq, hq)
    planes[..., :w, :h] = input.reshape(n, groups, c // groups, h, w).transpose(3, 4)
    return planes.flatten(0, 1), scale  # a view in either layout


def _tap_positions(kernel: tuple[int, int], out_size: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], dilation: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """(taps, Ho, Wo, (y, x)): where each tap of each output pixel reads the input, before the offsets."""
    (kh, kw), (ho, wo), (sh, sw), (ph, pw), (dh, dw) = kernel, out_size, stride, padding, dilation
    taps_y = (torch.arange(kh, dtype=dtype) * dh).repeat_interleave(kw).view(kh * kw, 1, 1)
    taps_x = (torch.arange(kw, dtype=dtype) * dw).repeat(kh).view(kh * kw, 1, 1)
    ys = (torch.arange(ho, dtype=dtype) * sh - ph).view(ho, 1)
    xs = torch.arange(wo, dtype=dtype) * sw - pw
    return torch.stack(torch.broadcast_tensors(ys + taps_y, xs + taps_x), -1)


def _matmul_weights(weight: Tensor, bias: Tensor | None, n: int, channels_last: bool,
                    dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """The weight and bias shaped for the product with the sampled columns, (N, C * taps, pixels)."""
    c_out = weight.shape[0]
    weight = weight.to(dtype).reshape(1, c_out, -1)
    if channels_last:
        # (N, pixels, C * taps) @ (C * taps, Cout): rows of the product are NHWC pixels
        weight = weight.transpose(1, 2)
        bias = None if bias is None else bias.to(dtype).view(1, 1, c_out)
    else:
        # (Cout, C * taps) @ (N, C * taps, pixels): the product is already NCHW
        bias = None if bias is None else bias.to(dtype).view(1, c_out, 1)
    return weight.expand(n, -1, -1), bias


def deform_conv2d_cpu(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
    matmul_dtype: torch.dtype | None = None,
) -> Tensor:
    """Modulated deformable convolution (DCNv2; DCNv1 when `mask` is None)
    with torchvision's arguments, layouts and results, from differentiable
    PyTorch operators: grid_sample per deformable group, mask, one matmul.

    offset: (N, 2 * G * kh * kw, Ho, Wo), channels ordered (group, tap, (dy, dx))
    mask:   (N, G * kh * kw, Ho, Wo), channels ordered (group, tap)

    A channels-last input gives a channels-last output (and NCHW gives
    NCHW), at no extra cost: only the order of the matrix product changes.
    The sampling runs in the input's dtype; `matmul_dtype` (the input's by
    default) is the dtype of the matrix multiply and of the result, e.g.
    bf16 on a CPU with bf16 dot products, where sampled positions stay exact.
    """
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    groups = _groups(input, offset, mask, (kh, kw), (ho, wo))
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, offset, weight, bias, mask)
    )
    matmul_dtype = matmul_dtype or input.dtype
    channels_last = is_channels_last(input)
    planes, scale = _planes(input, groups, channels_last)
    # grid (N, G, taps, Ho, Wo, (y, x)) = (tap position + offset) * scale - 1
    base = _tap_positions((kh, kw), (ho, wo), (sh, sw), (ph, pw), (dh, dw), input.dtype) * scale - 1
    offset = offset.reshape(n, groups, taps, 2, ho, wo).permute(0, 1, 2, 4, 5, 3)
    grid = torch.addcmul(base, offset, scale)

    if mask is not None:
        mask = mask.reshape(n, groups, 1, taps, ho * wo)
    weight, bias = _matmul_weights(weight, bias, n, channels_last, matmul_dtype)

    # Without autograd, a few output rows at a time: the columns, 9x the
    # input, then stay in cache between sampling, mask and product, and
    # are allocated from memory already in use. (Autograd keeps every
    # chunk's columns for the backward pass, so there one chunk does.)
    rows_per_chunk = ho if grad else max(1, COLUMNS_CHUNK_BYTES // (n * c * taps * wo * input.element_size()))
    outputs = []
    for top in range(0, ho, rows_per_chunk):
        bottom = min(top + rows_per_chunk, ho)
        pixels = slice(top * wo, bottom * wo)
        columns = F.grid_sample(
            planes,
            grid[:, :, :, top:bottom].reshape(n * groups, taps, (bottom - top) * wo, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )  # (N * G, C/G, taps, rows * Wo)
        columns = columns.view(n, groups, c // groups, taps, -1)
        if mask is not None:
            columns = columns * mask[..., pixels] if grad else columns.mul_(mask[..., pixels])
        # The columns are in the weight's (channel, tap) order: (N, C * taps, pixels).
        columns = columns.view(n, c * taps, -1).to(matmul_dtype)
        a, b = (columns.transpose(1, 2), weight) if channels_last else (weight, columns)
        outputs.append(torch.bmm(a, b) if bias is None else torch.baddbmm(bias, a, b))
    if channels_last:
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)  # (N, Ho * Wo, Cout)
        return out.view(n, ho, wo, c_out).permute(0, 3, 1, 2)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)  # (N, Cout, Ho * Wo)
    return out.view(n, c_out, ho, wo)
