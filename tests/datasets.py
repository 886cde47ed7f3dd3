"""Tiny training data of every layout `stvsr train` reads, generated on the spot.

Frames are `videos.pattern`: smooth, moving, a few dozen pixels across, so
LR crops of 8 (HR 32) fit and a training step takes a fraction of a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from videos import make_video, pattern  # noqa: E402


def write_frames(folder: Path, count: int, width: int = 40, height: int = 36, names: str = "{:05d}.png",
                 first: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(pattern(index, width, height)).save(folder / names.format(first + index))
    return folder


def make_layout(kind: str, root: Path) -> Path:
    """Tiny data of one layout."""
    if kind == "clips":
        write_frames(root / "clips" / "walk", 9)
        write_frames(root / "clips" / "city", 8, width=44)
        return root / "clips"
    if kind == "vimeo":
        vimeo = root / "vimeo"
        for sequence in ("00001/0001", "00001/0002"):
            write_frames(vimeo / "sequences" / sequence, 7, names="im{}.png", first=1)
        (vimeo / "sep_trainlist.txt").write_text("00001/0001\n00001/0002\n")
        return vimeo
    if kind == "videos":
        (root / "videos").mkdir(parents=True)
        make_video(root / "videos" / "a.mp4", frames=10, width=40, height=36)
        return root / "videos"
    if kind == "stills":
        stills = root / "stills"
        stills.mkdir(parents=True)
        for index, (width, height) in enumerate([(64, 48), (50, 70)]):
            rng = np.random.default_rng(index)
            photo = pattern(3 * index, width, height).astype(np.int16) + rng.integers(-20, 20, (height, width, 3))
            Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(stills / f"photo_{'ab'[index]}.jpg")
        return stills
    raise ValueError(kind)
