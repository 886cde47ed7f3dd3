"""Spatial tiling: frames too large for the device run as overlapping tiles.

Memory for one window grows with its area (about 0.1 MB per LR pixel for
the paper preset in fp32, measured on CPU), so a 1080p output (LR 480x270)
would need over 10 GB in one piece. Cutting the LR frames into tiles of
`tile` x `tile` pixels that overlap by `overlap` pixels bounds memory by the
tile size, whatever the frame size.

Seams: each tile's output is weighted by a ramp that rises linearly from
near 0 at a tile edge that borders another tile to 1 at `overlap` LR pixels
in (edges on the frame border get full weight), and the weighted sum is
divided by the total weight. Near its edges a tile's output has seen
little context, so it is given little say there, and the hand-over between
tiles is gradual, which hides the small differences between them. Every
tile has the same size (the last one in a row is moved back to end at the
frame edge), so several tiles run as one batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .defaults import DEFAULT_OVERLAP, DEFAULT_TILE  # why 160 and 16: see there


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length), each
    overlapping the previous by at least `overlap`; one tile if it fits."""
    if tile >= length:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    starts = list(range(0, length - tile, tile - overlap))
    starts.append(length - tile)
    return starts


def _ramp(start: int, size: int, length: int, overlap: int, scale: int) -> Tensor:
    """(size * scale,) blend weights of one tile along one axis."""
    position = torch.arange(size * scale, dtype=torch.float32) + 0.5
    weight = torch.ones(size * scale)
    ramp = max(overlap * scale, 1)
    if start > 0:
        weight = torch.minimum(weight, position / ramp)
    if start + size < length:
        weight = torch.minimum(weight, (size * scale - position) / ramp)
    return weight


def upscale_tiled(
    run: Callable[[Tensor], Tensor],
    windows: Tensor,
    scale: int,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch: int = 1,
) -> Tensor:
    """Run `run` ((k, n+1, 3, h, w) -> (k, 2n+1, 3, scale*h, scale*w)) over
    `windows` (B, n+1, 3, H, W) in tiles; returns (B, 2n+1, 3, scale*H, scale*W).

    `tile` 0 turns tiling off. At most `batch` tiles (of any windows) go
    through `run` at once.
    """
    b, _, _, height, width = windows.shape
    tile_h = height if tile <= 0 else min(tile, height)
    tile_w = width if tile <= 0 else min(tile, width)
    boxes = [(top, left) for top in tile_starts(height, tile_h, overlap) for left in tile_starts(width, tile_w, overlap)]
    if len(boxes) == 1:
        if b <= batch:
            return run(windows)  # no copy: a window's outputs are the largest thing a run holds
        return torch.cat([run(windows[i : i + batch]) for i in range(0, b, batch)])

    # (scale*tile_h, scale*tile_w) blend weights per box and their per-pixel sum
    weights = [torch.outer(_ramp(top, tile_h, height, overlap, scale), _ramp(left, tile_w, width, overlap, scale))
               for top, left in boxes]
    weight_sum = torch.zeros(scale * height, scale * width)
    for (top, left), weight in zip(boxes, weights):
        weight_sum[scale * top : scale * (top + tile_h), scale * left : scale * (left + tile_w)] += weight

    jobs = [(index, box) for index in range(b) for box in range(len(boxes))]
    output = None
    for first in range(0, len(jobs), batch):
        chunk = jobs[first : first + batch]
        tiles = torch.stack([
            windows[index, :, :, boxes[box][0] : boxes[box][0] + tile_h, boxes[box][1] : boxes[box][1] + tile_w]
            for index, box in chunk
        ])
        results = run(tiles)  # (k, 2n+1, 3, scale*tile_h, scale*tile_w)
        if output is None:
            output = results.new_zeros(b, results.shape[1], 3, scale * height, scale * width)
            weights = [weight.to(results.device) for weight in weights]
        for (index, box), result in zip(chunk, results):
            top, left = boxes[box]
            rows = slice(scale * top, scale * (top + tile_h))
            cols = slice(scale * left, scale * (left + tile_w))
            output[index, :, :, rows, cols] += result * weights[box]
    return output.div_(weight_sum.to(output.device))  # in place: no second copy of the outputs
