"""Folders of frames, and the rule that turns high-resolution frames into inputs.

Vid4, REDS and `shared/data/train/clips` store a clip as one folder of numbered
images; training and evaluation both read them here, and both make their
low-resolution inputs with `make_lr`, so the two can never disagree about what
the network was asked to undo.

The degradation rule (Zooming Slow-Mo, MEGAN): keep the odd frames 1, 3, 5, ...
(indices 0, 2, 4, ...), shrink them 4x with antialiased bicubic filtering, and
store them as 8-bit images, as a real low-resolution video would be.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .errors import StvsrError
from .metrics import quantize

SCALE = 4
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


def list_frames(folder: Path) -> list[Path]:
    """The image files directly in `folder`, in natural order (2 before 10)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=natural_key)


def read_frame(path: Path) -> Tensor:
    """One image as (3, H, W) uint8 RGB; grey and RGBA images are converted."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))  # (H, W, 3)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise StvsrError(f"{path}: not a readable image ({error}); remove it or replace it with a PNG or JPEG") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def read_clip(paths: list[Path]) -> Tensor:
    """Frames of one clip as (T, 3, H, W) floats in [0, 1]; all must share one size."""
    frames = [read_frame(path) for path in paths]
    sizes = {tuple(frame.shape) for frame in frames}
    if len(sizes) > 1:
        raise StvsrError(f"{paths[0].parent}: frames differ in size ({sorted(sizes)}); a clip needs one frame size")
    return torch.stack(frames).float().div(255)


def save_frame(frame: Tensor, path: Path) -> None:
    """Write a (3, H, W) frame in [0, 1] as an 8-bit PNG."""
    levels = quantize(frame.detach().float().cpu()).mul(255).round().to(torch.uint8)
    Image.fromarray(levels.permute(1, 2, 0).numpy()).save(path, format="PNG")


def crop_to_multiple(frames: Tensor, multiple: int = SCALE) -> Tensor:
    """Crop (..., H, W) at the bottom and right to a multiple of `multiple`."""
    height, width = frames.shape[-2:]
    return frames[..., : height - height % multiple, : width - width % multiple]


def make_lr(hr: Tensor, scale: int = SCALE) -> Tensor:
    """(..., 3, H, W) in [0, 1], H and W multiples of `scale` -> (..., 3, H/scale, W/scale), 8-bit levels.

    Antialiased bicubic, as MATLAB's `imresize` that the field's datasets were
    made with; only the frame selection (every other frame) is the caller's.
    """
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"frame size {width}x{height} is not a multiple of {scale}; crop_to_multiple first")
    flat = hr.reshape(-1, *hr.shape[-3:]).float()
    lr = F.interpolate(flat, size=(height // scale, width // scale), mode="bicubic", antialias=True, align_corners=False)
    return quantize(lr).reshape(*hr.shape[:-2], height // scale, width // scale)


def turn(frames: Tensor, quarter_turns: int, flip: bool) -> Tensor:
    """Flip left-right (when `flip`), then rotate `quarter_turns` x 90 degrees
    counter-clockwise, over the last two dimensions: (..., H, W) -> (..., H, W)
    or (..., W, H) for odd `quarter_turns`."""
    if flip:
        frames = frames.flip(-1)
    return frames.rot90(quarter_turns, (-2, -1)).contiguous() if quarter_turns else frames


def turn_back(frames: Tensor, quarter_turns: int, flip: bool) -> Tensor:
    """The inverse of `turn`: rotate back, then flip back."""
    if quarter_turns:
        frames = frames.rot90(-quarter_turns, (-2, -1))
    return frames.flip(-1) if flip else frames


def is_vimeo_root(folder: Path) -> bool:
    """A Vimeo-90K septuplet root: `sequences/` plus at least one list file."""
    folder = Path(folder)
    return (folder / "sequences").is_dir() and any(folder.glob("*.txt"))


def vimeo_septuplets(root: Path, list_name: str) -> list[list[Path]]:
    """The im1..im7 paths of every septuplet a Vimeo-90K list file names.

    List files hold one `xxxxx/yyyy` per line (`sep_trainlist.txt`,
    `sep_testlist.txt`, or a fast/medium/slow split of the test list).
    """
    root = Path(root)
    list_path = root / list_name
    if not list_path.is_file():
        raise StvsrError(f"{root}: no {list_name}; a Vimeo-90K septuplet root holds sequences/ and its list files")
    septuplets = []
    for line in list_path.read_text().split():
        sequence = root / "sequences" / line.strip()
        paths = [sequence / f"im{index}.png" for index in range(1, 8)]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise StvsrError(f"{missing[0]} is missing, but {list_path} lists {line.strip()}; fix the list or the folder")
        septuplets.append(paths)
    if not septuplets:
        raise StvsrError(f"{list_path} lists no sequences")
    return septuplets


def natural_key(path: Path) -> list:
    """Sort key that orders names by their numbers as numbers: f2 before f10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]
