"""Frames in, frames out: everything between reading LR frames and writing HR ones.

    LR frames (+ scene-cut flags) -> windows (`WindowPlanner`)
        -> network (`upscale_tiled`, `batch` windows a pass) -> stitch (`Stitcher`) -> HR frames, in order

`upscale_frames` is that path, and the only one: `stvsr upscale` feeds it
decoded video frames and `stvsr eval` feeds it LR frames read from disk or
made from ground truth, so an evaluation scores exactly the frames an upscale
would write. It is a generator: it pulls an input frame only when the plan
needs one and yields each output frame as soon as it is final, holding a
window's worth of LR frames and `batch + 1` windows of outputs however long
the stream is.

`load_upscaler` and `check_run_options` are the option handling the two
commands share: which weights (the shipped ones by default, with a warning
when they are the untrained placeholder), device, precision, tiles, batch.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor

from .errors import StvsrError
from .inference import Upscaler, WindowUpscaler
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, upscale_tiled
from .weights import default_weights_path, is_untrained
from .windows import Emit, Stitcher, Window, WindowPlanner

log = logging.getLogger("stvsr")


def upscale_frames(
    frames: Iterable[tuple[Tensor, bool]],
    upscaler: WindowUpscaler,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch: int = 1,
    wanted: Callable[[int], bool] | None = None,
) -> Iterator[Tensor]:
    """Upscale a stream of `(frame, cut)` pairs: N frames give 2N frames.

    Frames are (3, H, W), uint8 or float in [0, 1]; `cut` is True when a
    scene cut lies just before the frame. Yields (3, scale*H, scale*W)
    float frames in [0, 1] on the upscaler's device, output k showing time
    k / 2 in input frames (the last one repeats the one before it; the rule
    is in `windows.py`). `tile`, `overlap` and `batch` are `upscale_tiled`'s.

    `wanted(k)` picks the outputs to yield (all when None): a segment of a
    longer run. Every frame is still planned, so each window is the one the
    whole run has, and a batch of windows runs whole, exactly as in the
    whole run, whenever one of its windows can feed a wanted output; other
    batches skip the network. The wanted frames therefore equal those of the
    whole run bit for bit, at the cost of planning (not upscaling) the
    frames before them.
    """
    planner: WindowPlanner[Tensor] = WindowPlanner(upscaler.input_frames)
    # A push plans at most one window (at a cut, the one that ends the old
    # shot), so a run holds at most `batch` windows, and its emits name those
    # and at most the last window before them (a blend of two neighbours).
    stitcher = Stitcher(keep=batch + 1)
    pending: list[Window[Tensor] | Emit] = []
    index = itertools.count()  # output index of the next emit
    wanted = wanted or (lambda _: True)
    for frame, cut in frames:
        pending += planner.push(frame, cut=cut)
        if sum(isinstance(item, Window) for item in pending) >= batch:
            yield from _run(pending, stitcher, upscaler, tile, overlap, batch, index, wanted)
            pending = []
    yield from _run(pending + planner.finish(), stitcher, upscaler, tile, overlap, batch, index, wanted)


def _run(items: list[Window[Tensor] | Emit], stitcher: Stitcher, upscaler: WindowUpscaler,
         tile: int, overlap: int, batch: int, index: Iterator[int], wanted: Callable[[int], bool]) -> Iterator[Tensor]:
    """Run a batch's windows through the network, then emit its frames."""
    windows = [item for item in items if isinstance(item, Window)]
    if windows and any(wanted(k) for window in windows for k in window.outputs):
        frames = torch.stack([torch.stack(window.frames) for window in windows])  # (B, n+1, 3, H, W)
        outputs = upscale_tiled(upscaler, frames, scale=upscaler.scale, tile=tile, overlap=overlap, batch=batch)
        for window, output in zip(windows, outputs):  # (2n+1, 3, scale*H, scale*W) float in [0, 1]
            stitcher.add(window.key, output)
    for item in items:
        if isinstance(item, Emit) and wanted(next(index)):
            yield stitcher.emit(item)


def check_run_options(tile: int, overlap: int, batch: int) -> None:
    """Refuse tile and batch settings that cannot work, before any work starts."""
    if batch < 1:
        raise StvsrError(f"--batch must be at least 1 (got {batch})")
    if tile != 0 and tile < 2 * overlap + 8:
        raise StvsrError(f"--tile {tile} is too small; use 0 (no tiling) or at least {2 * overlap + 8}")


def load_upscaler(weights: str | os.PathLike | None, device: str = "auto", precision: str = "auto",
                  self_ensemble: bool = False) -> Upscaler:
    """The network of a weights file (None: the shipped weights) on `device`
    at `precision` (and with `self_ensemble`, see `Upscaler`), with a warning
    when the file is an untrained placeholder."""
    path = Path(weights) if weights is not None else default_weights_path()
    upscaler = Upscaler.from_weights(path, device=device, precision=precision, self_ensemble=self_ensemble)
    if is_untrained(path):
        log.warning(f"{path.name} is an untrained placeholder: the output shows what the pipeline does, not a real upscale")
    return upscaler
