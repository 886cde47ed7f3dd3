"""Training data: HR septuplets from five layouts, and the LR inputs made from them.

A *septuplet* (Vimeo-90K's word) is 7 consecutive HR frames: the network
is given LR frames made from frames 0, 2, 4 and 6 and learns to give all 7.
(A *window*, in `windows.py`, is the 4 LR frames the network takes when it
upscales a video.)

Every DATA argument of `stvsr train` is one *source*, detected by its layout
(`open_source`):

- a Vimeo-90K septuplet root: `sequences/xxxxx/yyyy/im1..im7.png` and `sep_trainlist.txt`;
- a folder of clips: one subfolder of numbered frames per clip (Vid4, REDS,
  `shared/data/train/clips`), or a single such clip folder;
- a video file, or a folder of them, read through `decode` (as `stvsr
  upscale` reads them, colours included);
- a folder of still photographs, each turned into a 7-frame clip by a
  synthetic camera move;
- the same photographs as scenes with objects moving fast over a moving
  background (`objects:FOLDER`, never detected: it is named): local motion,
  occlusion and uncovering, which real clips of a few shots have too little of.

Where detection guesses wrong, `KIND:PATH` names the layout (`vimeo:`,
`clips:`, `videos:`, `stills:`).

A sample is a pure function of (seed, sample index) (`TrainingSet`), so a
resumed or distributed run sees exactly the samples an uninterrupted
single-process run would, however many loader workers there are. The LR
input is always `frames.make_lr` of HR frames 0, 2, 4, 6, the rule `stvsr
eval` uses too.

Real footage can hold scene cuts (`bikes.mp4` has five): a septuplet whose
neighbouring frames differ by more than `windows.DEFAULT_SCENE_THRESHOLD`
in luma histogram is rejected and another is drawn, so the network never
learns to blend across a cut.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .errors import StvsrError
from .frames import (
    IMAGE_SUFFIXES, SCALE, is_vimeo_root, list_frames, make_lr, read_clip, read_frame, turn, vimeo_septuplets,
)
from .metrics import quantize
from .windows import DEFAULT_SCENE_THRESHOLD, scene_change

SEPTUPLET = 7  # HR frames per sample: 2n + 1 for MEGAN's n + 1 = 4 inputs
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".y4m"})
KINDS = ("vimeo", "clips", "videos", "stills", "objects")
DRAWS = 20  # septuplets drawn for one sample before giving up on scene cuts


# --- sources -----------------------------------------------------------------------------


class Source:
    """Numbered septuplets of one DATA argument."""

    kind: str
    path: Path

    def __len__(self) -> int:
        raise NotImplementedError

    def septuplet(self, index: int, size: int, rng: torch.Generator) -> Tensor | None:
        """Septuplet `index` as (7, 3, size, size) floats in [0, 1] at a random
        position, or None when it crosses a scene cut."""
        raise NotImplementedError

    def validation_keys(self) -> list[int]:
        """The septuplets validation may use: non-overlapping ones, in order."""
        raise NotImplementedError

    def validation_septuplet(self, key: int, size: int) -> Tensor | None:
        """Septuplet `key` centre-cropped to at most size x size, as (7, 3, H, W)
        uint8; None when it crosses a scene cut."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.path} ({self.kind}, {len(self):,} septuplets)"


class VimeoSource(Source):
    kind = "vimeo"

    def __init__(self, root: Path, list_name: str) -> None:
        self.path = root
        self.septuplets = vimeo_septuplets(root, list_name)

    def __len__(self) -> int:
        return len(self.septuplets)

    def septuplet(self, index: int, size: int, rng: torch.Generator) -> Tensor | None:
        return _random_crop(read_clip(self.septuplets[index]), size, rng)

    def validation_keys(self) -> list[int]:
        return list(range(len(self)))

    def validation_septuplet(self, key: int, size: int) -> Tensor | None:
        return _to_uint8(_centre_crop(read_clip(self.septuplets[key]), size))


class ClipSource(Source):
    """Folders of numbered frames; every run of 7 consecutive frames is a septuplet."""

    kind = "clips"

    def __init__(self, path: Path, clips: list[list[Path]], size: int) -> None:
        self.path = path
        self.clips = [frames for frames in clips if len(frames) >= SEPTUPLET]
        if not self.clips:
            raise StvsrError(f"{path}: no clip has the {SEPTUPLET} frames a training septuplet needs")
        for frames in self.clips:
            with Image.open(frames[0]) as image:
                _check_size(frames[0].parent, image.width, image.height, size)
        counts = [len(frames) - SEPTUPLET + 1 for frames in self.clips]
        self.starts = torch.tensor([0, *counts]).cumsum(0)  # first septuplet index of each clip

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, index: int) -> list[Path]:
        clip = int(torch.searchsorted(self.starts, index, right=True)) - 1
        start = index - int(self.starts[clip])
        return self.clips[clip][start : start + SEPTUPLET]

    def septuplet(self, index: int, size: int, rng: torch.Generator) -> Tensor | None:
        frames = read_clip(self._locate(index))
        return None if _crosses_cut(frames) else _random_crop(frames, size, rng)

    def validation_keys(self) -> list[int]:
        return _every_seventh(self.starts)

    def validation_septuplet(self, key: int, size: int) -> Tensor | None:
        frames = read_clip(self._locate(key))
        return None if _crosses_cut(frames) else _to_uint8(_centre_crop(frames, size))


class VideoSource(Source):
    """Video files; a septuplet is 7 consecutive decoded frames, found by seeking."""

    kind = "videos"

    def __init__(self, path: Path, files: list[Path], size: int) -> None:
        # Imported here: frame folders and photos train without PyAV (a GPU machine's image may lack it).
        from .decode import count_frames, probe

        self.path = path
        self.files, self.infos, self.counts = [], [], []
        for file in files:
            info = probe(file)  # colour matrix and range too, as `stvsr upscale` reads them
            _check_size(file, info.width, info.height, size)
            frames = count_frames(info)
            if frames >= SEPTUPLET:
                self.files.append(file)
                self.infos.append(info)
                self.counts.append(frames - SEPTUPLET + 1)
        if not self.files:
            raise StvsrError(f"{path}: no video has the {SEPTUPLET} frames a training septuplet needs")
        self.starts = torch.tensor([0, *self.counts]).cumsum(0)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _decode(self, index: int) -> Tensor | None:
        from .decode import read_frames

        video = int(torch.searchsorted(self.starts, index, right=True)) - 1
        frames = read_frames(self.infos[video], index - int(self.starts[video]), SEPTUPLET)
        if len(frames) < SEPTUPLET:  # past the end
            return None
        hr = torch.stack([torch.from_numpy(f.astype(np.float32) / np.iinfo(f.dtype).max).permute(2, 0, 1)
                          for f in frames])  # (7, 3, H, W) in [0, 1]
        return None if _crosses_cut(hr) else hr

    def septuplet(self, index: int, size: int, rng: torch.Generator) -> Tensor | None:
        frames = self._decode(index)
        return None if frames is None else _random_crop(frames, size, rng)

    def validation_keys(self) -> list[int]:
        return _every_seventh(self.starts)

    def validation_septuplet(self, key: int, size: int) -> Tensor | None:
        frames = self._decode(key)
        return None if frames is None else _to_uint8(_centre_crop(frames, size))


class StillSource(Source):
    """Photographs, each the first frame of a synthetic camera move.

    One sample: the photo, shrunk by a random factor in [0.5, 1] (antialiased,
    so scale varies and fine detail stays real), is sampled by one
    `grid_sample` call through 7 affine transforms that vary smoothly in time:
    a pan with constant acceleration, a zoom and a small rotation, each
    quadratic or linear in t. The frames are then 8-bit like real ones.
    """

    kind = "stills"
    max_speed = 6.0  # HR pixels per frame
    max_acceleration = 1.0  # HR pixels per frame squared
    max_zoom = 0.015  # log scale per frame
    max_turn = math.radians(0.5)  # per frame

    def __init__(self, path: Path, images: list[Path], size: int) -> None:
        self.path = path
        self.images = images
        _check_photo_sizes(images, size)

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        return f"{self.path} (stills, {len(self):,} photos with synthetic camera motion)"

    def septuplet(self, index: int, size: int, rng: torch.Generator) -> Tensor | None:
        photo = read_frame(self.images[index]).float().div(255)
        return camera_move(photo, size, rng)

    def validation_keys(self) -> list[int]:
        return list(range(len(self)))

    def validation_septuplet(self, key: int, size: int) -> Tensor | None:
        photo = read_frame(self.images[key]).float().div(255)
        side = min(size, *photo.shape[-2:]) // SCALE * SCALE
        return _to_uint8(camera_move(photo, side, torch.Generator().manual_seed(key)))


class ObjectSource(Source):
    """Photographs as scenes of objects moving over a moving background.

    Scene i: photo i mod n is the background, under a camera move as in
    `StillSource`; over it move 1 or 2 objects, each an elliptical cut-out
    of another photo (drawn at random) 1/5 to 1/2 of the crop across, along
    a path with constant acceleration at up to `max_speed` HR pixels a frame,
    so they cover and uncover the background and each other. Their edges are
    soft over about a pixel and a half, as a camera's are. Each photo is
    the background of `scenes_per_photo` scenes, so this source weighs that
    many times as much as `stills` of the same folder.
    """

    kind = "objects"
    scenes_per_photo = 8
    max_speed = 16.0  # HR pixels per frame: up to 8 LR pixels between two inputs
    max_acceleration = 2.0  # HR pixels per frame squared
    max_objects = 2

    def __init__(self, path: Path, images: list[Path], size: int) -> None:
        if len(images) < 2:
            raise StvsrError(f"{path}: objects: needs at least 2 photos (a background and an object)")
        self.path = path
        self.images = images
        _check_photo_sizes(images, size)

    def __len__(self) -> int:
        return len(self.images) * self.scenes_per_photo

    def describe(self) -> str:
        return f"{self.path} (objects, {len(self.images):,} photos as {len(self):,} scenes with moving objects)"

    def septuplet(self, index: int, size: int, rng: torch.Generator) -> Tensor | None:
        background = index % len(self.images)
        frames = camera_move(read_frame(self.images[background]).float().div(255), size, rng)
        count = 1 + int(torch.randint(self.max_objects, (1,), generator=rng))
        for _ in range(count):
            other = (background + 1 + int(torch.randint(len(self.images) - 1, (1,), generator=rng))) % len(self.images)
            frames = _add_moving_object(frames, read_frame(self.images[other]).float().div(255), rng)
        return quantize(frames)

    def validation_keys(self) -> list[int]:
        return list(range(len(self.images)))

    def validation_septuplet(self, key: int, size: int) -> Tensor | None:
        photo = read_frame(self.images[key])
        side = min(size, *photo.shape[-2:]) // SCALE * SCALE
        return _to_uint8(self.septuplet(key, side, torch.Generator().manual_seed(key)))


def _add_moving_object(frames: Tensor, photo: Tensor, rng: torch.Generator) -> Tensor:
    """(7, 3, S, S) with an elliptical cut-out of `photo` moving over it (see `ObjectSource`)."""
    size = frames.shape[-1]
    side = max(8, round(size * _uniform(rng, 0.2, 0.5)))
    shrink = max(_uniform(rng, 0.5, 1.0), side / min(photo.shape[-2:]))
    if shrink < 1:
        height, width = (round(n * shrink) for n in photo.shape[-2:])
        photo = F.interpolate(photo[None], size=(height, width), mode="bicubic", antialias=True)[0].clamp(0, 1)
    patch = _random_crop(photo, side, rng)  # (3, side, side)

    # An ellipse with random axes and angle, its edge a ramp about 1.5 pixels wide.
    centre = (side - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(side) - centre, torch.arange(side) - centre, indexing="ij")
    angle = _uniform(rng, 0, math.pi)
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    axes = [_uniform(rng, 0.3, 0.5) * side for _ in range(2)]
    radius = torch.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)  # 1 on the edge
    alpha = ((1 - radius) * min(axes) / 1.5 + 0.5).clamp(0, 1)
    layer = torch.cat([patch * alpha, alpha[None]])  # (4, side, side), colour premultiplied by alpha

    t = torch.arange(SEPTUPLET, dtype=torch.float64) - SEPTUPLET // 2
    speed = _uniform(rng, 0.25, 1.0) * ObjectSource.max_speed
    heading = _uniform(rng, 0, 2 * math.pi)
    velocity = (speed * math.cos(heading), speed * math.sin(heading))
    acceleration = [_uniform(rng, -ObjectSource.max_acceleration, ObjectSource.max_acceleration) for _ in range(2)]
    start = [_uniform(rng, 0, size - 1) for _ in range(2)]  # the centre at the middle frame, x and y
    path = torch.stack([p + v * t + a * t * t / 2 for p, v, a in zip(start, velocity, acceleration)], dim=1)

    # Frame pixel X shows layer pixel X - (path - centre); grid_sample wants that in [-1, 1] over the layer.
    pixels = torch.arange(size, dtype=torch.float64)
    gx = (pixels.view(1, 1, size) - path[:, 0].view(SEPTUPLET, 1, 1) + centre) * (2 / (side - 1)) - 1
    gy = (pixels.view(1, size, 1) - path[:, 1].view(SEPTUPLET, 1, 1) + centre) * (2 / (side - 1)) - 1
    grid = torch.stack([gx.expand(SEPTUPLET, size, size), gy.expand(SEPTUPLET, size, size)], dim=-1).float()
    placed = F.grid_sample(layer.expand(SEPTUPLET, -1, -1, -1), grid, mode="bicubic", padding_mode="zeros",
                           align_corners=True)
    colour, cover = placed[:, :3], placed[:, 3:].clamp(0, 1)
    return (frames * (1 - cover) + colour).clamp(0, 1)


def camera_move(photo: Tensor, size: int, rng: torch.Generator) -> Tensor:
    """(3, H, W) in [0, 1] -> (7, 3, size, size): a smooth random camera move over the photo."""
    shortest = min(photo.shape[-2:])
    shrink = max(_uniform(rng, 0.5, 1.0), size / shortest)
    if shrink < 1:
        height, width = (round(side * shrink) for side in photo.shape[-2:])
        photo = F.interpolate(photo[None], size=(height, width), mode="bicubic", antialias=True)[0]
    _, height, width = photo.shape

    t = torch.arange(SEPTUPLET, dtype=torch.float64) - SEPTUPLET // 2  # time, centred on the middle frame
    velocity = [_uniform(rng, -StillSource.max_speed, StillSource.max_speed) for _ in range(2)]
    acceleration = [_uniform(rng, -StillSource.max_acceleration, StillSource.max_acceleration) for _ in range(2)]
    offset = torch.stack([v * t + a * t * t / 2 for v, a in zip(velocity, acceleration)], dim=1)  # (7, 2) x, y
    zoom = torch.exp(_uniform(rng, -StillSource.max_zoom, StillSource.max_zoom) * t)
    turn = _uniform(rng, -StillSource.max_turn, StillSource.max_turn) * t

    # Centre the move where the whole path stays inside the photo (when it fits).
    reach = float((zoom * size / math.sqrt(2)).max())
    low = offset.min(0).values.neg() + reach
    high = torch.tensor([width, height], dtype=torch.float64) - offset.max(0).values - reach
    start = [_uniform(rng, float(lo), float(hi)) if lo < hi else float(lo + hi) / 2 for lo, hi in zip(low, high)]
    centre = torch.tensor(start, dtype=torch.float64) + offset  # (7, 2) in pixels

    # affine_grid maps output coordinates in [-1, 1] (over size) to input ones (over W, H).
    half = size / 2
    theta = torch.zeros(SEPTUPLET, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = 2 / width * zoom * turn.cos() * half
    theta[:, 0, 1] = -2 / width * zoom * turn.sin() * half
    theta[:, 1, 0] = 2 / height * zoom * turn.sin() * half
    theta[:, 1, 1] = 2 / height * zoom * turn.cos() * half
    theta[:, 0, 2] = 2 * centre[:, 0] / width - 1
    theta[:, 1, 2] = 2 * centre[:, 1] / height - 1
    grid = F.affine_grid(theta.float(), [SEPTUPLET, 3, size, size], align_corners=False)  # (7, size, size, 2)
    # all 7 frames in one call: the grids stacked vertically over one image
    frames = F.grid_sample(
        photo[None], grid.reshape(1, SEPTUPLET * size, size, 2), mode="bicubic", padding_mode="reflection",
        align_corners=False,
    )
    return quantize(frames.view(3, SEPTUPLET, size, size).transpose(0, 1))


# --- detecting a source ----------------------------------------------------------------------


def open_source(spec: str | Path, size: int, *, validation: bool = False) -> Source:
    """The source a DATA argument names, detected by its layout; `KIND:PATH` forces one.

    `size` is the HR crop (4 x the LR crop): every frame must be at least
    that large. A Vimeo-90K root gives `sep_testlist.txt` for validation
    (if it has one) and `sep_trainlist.txt` for training.
    """
    kind, path = split_kind(str(spec))
    if not path.exists():
        raise StvsrError(
            f"{path} does not exist; give a video, a folder of clips, a folder of photos or a Vimeo-90K root"
        )
    if kind is None:
        kind = _detect(path)
    if kind == "vimeo":
        lists = ["sep_testlist.txt", "sep_trainlist.txt"] if validation else ["sep_trainlist.txt"]
        return VimeoSource(path, next((name for name in lists if (path / name).is_file()), lists[-1]))
    if kind == "videos":
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise StvsrError(f"{path}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return VideoSource(path, files, size)
    if not path.is_dir():
        raise StvsrError(f"{path} is a file; {kind} are read from a folder")
    if kind == "clips":
        folders = [path] if list_frames(path) else sorted(p for p in path.iterdir() if p.is_dir() and list_frames(p))
        if not folders:
            raise StvsrError(f"{path}: no folders of frames")
        return ClipSource(path, [list_frames(folder) for folder in folders], size)
    images = list_frames(path)
    if not images:
        raise StvsrError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if kind == "objects":
        return ObjectSource(path, images, size)
    return StillSource(path, images, size)


def split_kind(spec: str) -> tuple[str | None, Path]:
    """A DATA argument as (KIND or None, PATH): `KIND:PATH` forces a layout, anything else is a path."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in KINDS:
        return prefix, Path(rest)
    return None, Path(spec)


def _detect(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "videos"
        raise StvsrError(f"{path}: not a video file; photos are given as a folder (stills:FOLDER)")
    if is_vimeo_root(path):
        return "vimeo"
    entries = list(path.iterdir())
    if any(p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES for p in entries):
        return "videos"
    if any(p.is_dir() and _numbered_frames(list_frames(p)) for p in entries):
        return "clips"
    images = list_frames(path)
    if len(images) >= SEPTUPLET and _numbered_frames(images):
        return "clips"  # a single clip: 00000.png, 00001.png, ...
    if images:
        return "stills"
    raise StvsrError(
        f"{path}: no known layout. Give a video or a folder of videos, a folder of clip folders "
        "(frames numbered in each), a folder of photos, or a Vimeo-90K root (sequences/ and sep_trainlist.txt); "
        "KIND:PATH forces one of " + ", ".join(KINDS)
    )


def _numbered_frames(images: list[Path]) -> bool:
    """Names with digits that differ only in their digits (frame_0001.png, frame_0002.png, ...)."""
    patterns = {re.sub(r"\d+", "#", p.name.lower()) for p in images}
    return len(patterns) == 1 and "#" in patterns.pop()


def _check_photo_sizes(images: list[Path], size: int) -> None:
    for image_path in images:
        with Image.open(image_path) as image:  # reads the header only
            _check_size(image_path, image.width, image.height, size)


def _check_size(what: Path, width: int, height: int, size: int) -> None:
    if min(width, height) < size:
        raise StvsrError(
            f"{what}: frames of {width}x{height} are smaller than the {size}x{size} HR crop "
            f"(--crop {size // SCALE} LR pixels); use a smaller --crop or larger frames"
        )


# --- the training set ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BadData:
    """A data error raised in a loader worker, carried to the main process as a value,
    so that it reaches the user as one line instead of a worker traceback."""

    message: str


class TrainingSet(Dataset):
    """Sample `index` -> (LR (4, 3, crop, crop), HR (7, 3, 4 crop, 4 crop)), floats in [0, 1].

    Septuplets are drawn uniformly over all septuplets of all sources (so a source
    weighs as much as it holds; a photo counts as one septuplet). Augmentation:
    the 8 flips and 90-degree rotations of the square crop, and reversed time,
    each equally likely. All randomness comes from a generator seeded with
    (seed, index), so a sample never depends on which process or worker made it.
    """

    def __init__(self, sources: Sequence[Source], crop: int, seed: int = 0) -> None:
        self.sources = list(sources)
        self.size = crop * SCALE
        self.seed = seed
        self.starts = torch.tensor([0, *(len(source) for source in self.sources)]).cumsum(0)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor] | BadData:
        try:
            return self.sample(index)
        except StvsrError as error:
            return BadData(str(error))

    def sample(self, index: int) -> tuple[Tensor, Tensor]:
        rng = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**63)
        for _ in range(DRAWS):
            which = int(torch.randint(len(self), (1,), generator=rng))
            source = int(torch.searchsorted(self.starts, which, right=True)) - 1
            hr = self.sources[source].septuplet(which - int(self.starts[source]), self.size, rng)
            if hr is not None:
                hr = augment(hr, rng)
                return make_lr(hr[0::2]), hr
        raise StvsrError(
            f"{DRAWS} septuplets drawn in a row crossed scene cuts or ran past the end of a video; "
            "is a folder of unrelated photos being read as a clip? Name it stills:FOLDER"
        )


def augment(hr: Tensor, rng: torch.Generator) -> Tensor:
    """(T, 3, S, S): a random one of the 8 flips and rotations, and time reversed half the time."""
    flip, turns, reverse = (int(x) for x in torch.randint(0, 4, (3,), generator=rng) % torch.tensor([2, 4, 2]))
    hr = turn(hr, turns, bool(flip))
    if reverse:
        hr = hr.flip(0)
    return hr.contiguous()


def collate(samples: list[tuple[Tensor, Tensor] | BadData]) -> tuple[Tensor, Tensor] | BadData:
    """Stack samples into a batch, or pass on the first data error."""
    for sample in samples:
        if isinstance(sample, BadData):
            return sample
    lr, hr = zip(*samples)
    return torch.stack(lr), torch.stack(hr)


def validation_set(specs: Sequence[str | Path], size: int, limit: int) -> list[Tensor]:
    """At most `limit` HR septuplets (7, 3, H, W) uint8, evenly spread over the sources'
    non-overlapping septuplets; only the chosen ones are read. Septuplets that cross
    a scene cut are left out, so there can be fewer."""
    candidates = [(source, key) for spec in specs for source in [open_source(spec, 0, validation=True)]
                  for key in source.validation_keys()]
    if len(candidates) > limit:
        candidates = [candidates[round(i * (len(candidates) - 1) / max(limit - 1, 1))] for i in range(limit)]
    septuplets = [septuplet for source, key in candidates
                  if (septuplet := source.validation_septuplet(key, size)) is not None]
    if not septuplets:
        raise StvsrError(f"no validation septuplet of {SEPTUPLET} frames without a scene cut in "
                         f"{', '.join(map(str, specs))}")
    return septuplets


# --- helpers ---------------------------------------------------------------------------------


def _uniform(rng: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=rng, dtype=torch.float64))


def _random_crop(frames: Tensor, size: int, rng: torch.Generator) -> Tensor:
    height, width = frames.shape[-2:]
    top = int(torch.randint(height - size + 1, (1,), generator=rng))
    left = int(torch.randint(width - size + 1, (1,), generator=rng))
    return frames[..., top : top + size, left : left + size]


def _centre_crop(frames: Tensor, size: int) -> Tensor:
    """At most size x size from the middle, both sides multiples of 4."""
    height, width = frames.shape[-2:]
    h, w = min(height, size) // SCALE * SCALE, min(width, size) // SCALE * SCALE
    top, left = (height - h) // 2, (width - w) // 2
    return frames[..., top : top + h, left : left + w]


def _every_seventh(starts: Tensor) -> list[int]:
    """Septuplet indices 0, 7, 14, ... of each clip or video, given where each one's septuplets start."""
    return [key for first, end in zip(starts[:-1].tolist(), starts[1:].tolist())
            for key in range(first, end, SEPTUPLET)]


def _to_uint8(frames: Tensor) -> Tensor:
    return frames.mul(255).round().to(torch.uint8)


def _crosses_cut(frames: Tensor) -> bool:
    return any(scene_change(a, b) > DEFAULT_SCENE_THRESHOLD for a, b in zip(frames[:-1], frames[1:]))
