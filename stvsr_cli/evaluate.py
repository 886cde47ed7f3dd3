"""`evaluate`: score a network on clips with ground truth, as the field does.

Data (`find_clips`):

- Vid4 layout: `DATA/<clip>/GT/*.png`, with `DATA/<clip>/LR/*.png` used when
  present. LR/ may hold as many frames as GT/ (every other one is an input,
  as in Vid4's own LR folders) or exactly the inputs; without LR/ the inputs
  are made from GT by `frames.make_lr`, the rule training uses.
- A folder of clip folders whose frames lie directly inside (treated as GT),
  like `shared/data/train/clips`; DATA itself may also be one clip.
- A Vimeo-90K septuplet root (`sequences/` and its list files): each listed
  septuplet is a clip named by its `xxxxx/yyyy` id, grouped by list file
  (`sep_testlist.txt` by default; the fast/medium/slow splits are just other
  lists, and several may be given, each reported as its own group).
- A video file: its decoded frames are the GT (PyAV, the colour conversion
  `stvsr upscale` uses; display rotation is not applied), read one by one,
  so a user's own footage is scored like a folder without writing frames out.

Frames, counted. The inputs are GT frames 0, 2, 4, ... (0-based), so a clip
of 2n+1 GT frames has n+1 inputs and every GT frame is predicted; a clip of
2n GT frames has n inputs and its last GT frame lies after the last input,
where the pipeline only repeats a frame, so its first 2n-1 frames are scored.
Either way `2 * inputs - 1` frames are scored: the *reconstructed* ones (even
0-based index, an input's own time) and the *interpolated* ones between two
inputs (odd 0-based index; the field's "even frames", counting from 1). A
clip needs 3 GT frames (2 inputs and one frame between them); shorter clips
are skipped with a warning. Clips of fewer than 7 GT frames (fewer than the
network's 4 inputs) run as one window with edge frames repeated, as in
`stvsr upscale`. GT frames whose sides are not multiples of 4 are cropped at
the bottom and right (`frames.crop_to_multiple`).

The network runs through `stream.upscale_frames`, the code `stvsr upscale`
runs, so what is scored is what an upscale writes; scene-cut detection is
off, since an evaluation clip is one shot.

Metrics (`metrics.py`): PSNR and SSIM on Y (BT.601 as MATLAB computes it,
no border crop) and on RGB, on predictions quantised to 8 bits. Averages
are taken per clip (over all, reconstructed and interpolated frames), then
over clips, as the field averages Vid4 and Vimeo-90K.

Baselines, on the same frames: each input enlarged 4x with bicubic
interpolation, the frames between inputs made by

- "bicubic + blend": averaging the two neighbours;
- "bicubic + repeat": repeating the previous one;
- "bicubic + mci": ffmpeg's motion-compensated interpolation
  (`minterpolate`, `MCI_FILTER`) of the LR inputs, what a user with only
  ffmpeg would do, run over the whole clip before scoring, with ffmpeg's
  AVX-512 code off (`MCI_CPUFLAGS`) so that it scores the same on every CPU;
- "bicubic + flow": the classical motion prior alone (`motion.interpolate`
  with DIS optical flow) on the LR inputs.

A network that cannot beat them is not worth shipping.

Memory: frames stream from disk. An output frame is scored (and saved) as
soon as `upscale_frames` yields it, and only a window's worth of LR frames
and the ground truth frame at hand are held, however long the clip.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from . import metrics, motion
from .errors import StvsrError, first_line
from .files import write_atomically
from .frames import (
    crop_to_multiple,
    is_vimeo_root,
    list_frames,
    make_lr,
    natural_key,
    read_frame,
    save_frame,
    vimeo_septuplets,
)
from .inference import WindowUpscaler
from .stream import check_run_options, load_upscaler, upscale_frames
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

log = logging.getLogger("stvsr")

MODEL = "model"
BLEND = "bicubic + blend"
REPEAT = "bicubic + repeat"
MCI = "bicubic + mci"
FLOW = "bicubic + flow"
BASELINES = (BLEND, REPEAT, MCI, FLOW)
# ffmpeg's motion-compensated frame interpolation at its best settings: overlapped
# blocks, bidirectional search, variable-size blocks. It doubles the frame rate.
MCI_FILTER = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
MCI_MIN_SIDE = 32  # minterpolate refuses smaller frames: they are padded (edges repeated) for it
# ffmpeg's AVX-512 code changes minterpolate's output: on a Zen 4 the first frame between two inputs of
# a smoothly panning clip came out as a copy of the first input, where without AVX-512 (and on AVX2-only
# CPUs) it is interpolated. A baseline must not depend on the CPU it is scored on, so AVX-512 is off for it.
MCI_CPUFLAGS = "-avx512-avx512icl"
KINDS = ("all", "reconstructed", "interpolated")
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
DEFAULT_VIMEO_LIST = "sep_testlist.txt"
MIN_GT_FRAMES = 3
MIN_SIZE = 2 * metrics.SSIM_RADIUS + 1  # SSIM's window must fit in a frame
Progress = Callable[[int, int], None]  # (frames scored, frames to score)


@dataclass(frozen=True)
class Clip:
    """One clip: its ground truth frames and, when given on disk, its inputs."""

    name: str  # "calendar", or a Vimeo-90K id "00001/0266"; --save writes DIR/<name>/
    gt: tuple[Path, ...]
    lr: tuple[Path, ...] | None = None  # exactly the inputs; None: made from GT by make_lr
    group: str = ""  # the Vimeo-90K list file (stem) it came from
    video: Path | None = None  # GT frames decoded from this video instead of read from `gt` (then empty)
    video_frames: int = 0  # a video's frame count as its header gives it: an estimate until decoded

    @property
    def gt_frames(self) -> int:
        return len(self.gt) if self.video is None else self.video_frames

    @property
    def inputs(self) -> int:
        return (self.gt_frames + 1) // 2

    @property
    def scored(self) -> int:
        """GT frames with a prediction: all of 2n+1, the first 2n-1 of 2n."""
        return max(2 * self.inputs - 1, 0)


@dataclass(frozen=True)
class EvalOptions:
    weights: Path | None = None  # None: the shipped default weights
    device: str = "auto"
    precision: str = "auto"
    self_ensemble: bool = False  # average over the 8 rotations and flips (`Upscaler`)
    tile: int = DEFAULT_TILE
    tile_overlap: int = DEFAULT_OVERLAP
    batch: int = 1
    lists: tuple[str, ...] = ()  # Vimeo-90K list files; () is sep_testlist.txt
    baselines: bool = False
    save: Path | None = None  # write the model's predicted frames as save/<clip>/00000.png ...

    def __post_init__(self) -> None:
        check_run_options(self.tile, self.tile_overlap, self.batch)


@dataclass(frozen=True)
class FrameScore:
    index: int  # the GT frame, 0-based
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float

    @property
    def kind(self) -> str:
        return "reconstructed" if self.index % 2 == 0 else "interpolated"


@dataclass(frozen=True)
class Scores:
    """Averages of the four metrics over frames, or over clips."""

    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float

    @classmethod
    def mean(cls, items: Sequence[FrameScore | Scores]) -> Scores:
        if not items:
            raise ValueError("no scores to average")
        return cls(**{name: sum(getattr(item, name) for item in items) / len(items) for name in METRICS})


@dataclass(frozen=True)
class ClipResult:
    name: str
    group: str
    gt_frames: int
    inputs: int
    lr_source: str  # "LR/" or "made from GT"
    size: tuple[int, int]  # scored (width, height), after cropping to a multiple of 4
    frames: dict[str, tuple[FrameScore, ...]]  # row -> one score per scored frame
    network_seconds: float = 0.0  # spent making the network's frames (inputs, network, stitching)
    video: str | None = None  # the video file the GT frames came from
    video_size: tuple[int, int] | None = None  # its (width, height), uncropped

    def upscale_estimate(self, scale: int = 4) -> float:
        """Seconds a full `stvsr upscale` of the clip's GT frames would take
        on the device that scored it: the network's time per output frame,
        measured here on LR inputs of 1/scale the GT's size, times the ratio
        of the GT's area to those inputs' (the network's cost grows with its
        input's area, and tiles keep it linear), times the 2 x GT frames an
        upscale writes. Decoding and encoding are not counted: on a CPU they
        are a few percent (`stvsr bench`)."""
        width, height = self.video_size or self.size
        lr_area = (self.size[0] // scale) * (self.size[1] // scale)
        per_frame = self.network_seconds / max(len(self.frames[MODEL]), 1)
        return per_frame * (width * height / lr_area) * 2 * self.gt_frames

    def scores(self, row: str = MODEL, kind: str = "all") -> Scores:
        return Scores.mean([f for f in self.frames[row] if kind == "all" or f.kind == kind])


@dataclass(frozen=True)
class EvalReport:
    clips: tuple[ClipResult, ...]
    rows: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # clips too short to score
    seconds: float = 0.0
    data: str = ""
    weights: str = ""
    device: str = ""  # where the network ran
    self_ensemble: bool = False  # the network's output averaged over 8 rotations and flips

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(clip.group for clip in self.clips))

    def mean(self, row: str = MODEL, kind: str = "all", group: str | None = None) -> Scores:
        """The mean over clips of each clip's mean, optionally over one group."""
        return Scores.mean([clip.scores(row, kind) for clip in self.clips if group is None or clip.group == group])

    def to_dict(self) -> dict:
        """Every number, per frame too. PSNR of identical frames is inf
        here; `write_json` writes it as null."""

        def means(select: Callable[[str, str], Scores]) -> dict:
            return {row: {kind: dataclasses.asdict(select(row, kind)) for kind in KINDS} for row in self.rows}

        return {
            "data": self.data,
            "weights": self.weights,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "self_ensemble": self.self_ensemble,
            "rows": list(self.rows),
            "mean": means(lambda row, kind: self.mean(row, kind)),
            "groups": {group: means(lambda row, kind: self.mean(row, kind, group)) for group in self.groups if group},
            "clips": [
                {
                    "name": clip.name,
                    "group": clip.group,
                    "gt_frames": clip.gt_frames,
                    "inputs": clip.inputs,
                    "scored_frames": len(clip.frames[MODEL]),
                    "lr": clip.lr_source,
                    "size": list(clip.size),
                    "network_seconds": round(clip.network_seconds, 3),
                    "upscale_estimate_seconds": None if clip.video is None else round(clip.upscale_estimate(), 1),
                    "mean": means(clip.scores),
                    "frames": {
                        row: [{"index": f.index, "kind": f.kind, **{m: getattr(f, m) for m in METRICS}} for f in scores]
                        for row, scores in clip.frames.items()
                    },
                }
                for clip in self.clips
            ],
            "skipped": list(self.skipped),
        }


# --- finding clips ---------------------------------------------------------------------------------


def find_clips(data: str | os.PathLike, lists: Sequence[str] = ()) -> list[Clip]:
    """The clips under `data` (layouts in the module docstring), in natural order."""
    data = Path(data)
    if not data.exists():
        raise StvsrError(f"{data} does not exist; give a video, a folder of clips (DATA/<clip>/GT/*.png) "
                         "or a Vimeo-90K root")
    if not data.is_dir():
        if lists:
            raise StvsrError(f"--list names Vimeo-90K list files, but {data} is a file")
        # Imported here, as in _VideoReader: frame folders are scored without PyAV.
        from .decode import probe

        info = probe(data)  # refuses what is not a readable video, in one line
        return [Clip(name=data.stem, gt=(), video=data, video_frames=info.frame_count or 0)]
    if is_vimeo_root(data):
        return [
            Clip(name="/".join(paths[0].parent.parts[-2:]), gt=tuple(paths), group=Path(name).stem)
            for name in (lists or (DEFAULT_VIMEO_LIST,))
            for paths in vimeo_septuplets(data, name)
        ]
    if lists:
        raise StvsrError(f"--list names Vimeo-90K list files, but {data} is not a Vimeo-90K root "
                         "(a folder with sequences/ and its .txt lists)")
    clip = _folder_clip(data, data.resolve().name)
    if clip is not None:
        return [clip]
    folders = sorted((p for p in data.iterdir() if p.is_dir()), key=natural_key)
    clips = [clip for clip in (_folder_clip(folder, folder.name) for folder in folders) if clip is not None]
    if not clips:
        raise StvsrError(
            f"no clips found in {data}: expected DATA/<clip>/GT/*.png (Vid4 layout), DATA/<clip>/*.png, "
            "or a Vimeo-90K root with sequences/ and sep_testlist.txt"
        )
    return clips


def _folder_clip(folder: Path, name: str) -> Clip | None:
    """A clip from `folder` with GT/ (and maybe LR/) or with frames directly inside; None if neither."""
    if (folder / "GT").is_dir():
        gt = list_frames(folder / "GT")
        if not gt:
            raise StvsrError(f"{folder / 'GT'} holds no frames (.png, .jpg, .jpeg, .webp)")
        lr = list_frames(folder / "LR") if (folder / "LR").is_dir() else None
        if lr is not None:
            inputs = (len(gt) + 1) // 2
            if len(lr) == len(gt):
                lr = lr[::2]  # Vid4's LR/ holds every frame: the inputs are every other one
            elif len(lr) != inputs:
                raise StvsrError(
                    f"{folder / 'LR'} holds {len(lr)} frames for {len(gt)} GT frames; it needs {len(gt)} "
                    f"(every other one is used) or {inputs} (the inputs), or remove LR/ to make them from GT"
                )
        return Clip(name, tuple(gt), None if lr is None else tuple(lr))
    frames = list_frames(folder)
    return Clip(name, tuple(frames)) if frames else None


# --- scoring -----------------------------------------------------------------------------------------


def evaluate(data: str | os.PathLike, options: EvalOptions = EvalOptions(), progress: Progress | None = None) -> EvalReport:
    """Score the network of `options.weights` on the clips under `data`.

    Raises `StvsrError` for anything the user can fix, checked before the
    network runs where it can be: no clips, LR/ that does not fit GT/.
    """
    started = time.perf_counter()
    clips = find_clips(data, options.lists)
    if not any(clip.video is not None or clip.gt_frames >= MIN_GT_FRAMES for clip in clips):
        raise StvsrError(f"no clip in {data} has the {MIN_GT_FRAMES} GT frames an evaluation needs "
                         "(2 inputs and the frame between them)")
    upscaler = load_upscaler(options.weights, device=options.device, precision=options.precision,
                             self_ensemble=options.self_ensemble)
    report = score_clips(clips, upscaler, options, progress)
    weights = options.weights if options.weights is not None else "the shipped default weights"
    return dataclasses.replace(report, data=str(data), weights=str(weights), seconds=time.perf_counter() - started,
                               device=str(upscaler.device), self_ensemble=upscaler.self_ensemble)


def score_clips(clips: Sequence[Clip], upscaler: WindowUpscaler, options: EvalOptions = EvalOptions(),
                progress: Progress | None = None) -> EvalReport:
    """Score a network already in memory, wrapped as `Upscaler(model)` (which
    puts the model in eval mode), on `clips`. `options.weights`, `device` and
    `precision` are not used here."""
    started = time.perf_counter()
    usable = [clip for clip in clips if clip.video is not None or clip.gt_frames >= MIN_GT_FRAMES]
    skipped = tuple(clip.name for clip in clips if clip not in usable)
    for name in skipped:
        log.warning(f"skipped clip {name}: it has fewer than {MIN_GT_FRAMES} GT frames (2 inputs and one between)")
    if not usable:
        raise StvsrError(f"no clip has the {MIN_GT_FRAMES} GT frames an evaluation needs")
    rows = (MODEL, *BASELINES) if options.baselines else (MODEL,)
    total = sum(clip.scored for clip in usable) or None  # None: unknown (a video without a frame count)
    scored = itertools.count(1)  # next(scored): the frames scored so far, this one included

    def step() -> None:
        frames = next(scored)
        if progress:
            progress(frames, total)

    if progress:
        progress(0, total)  # the work starts: a rate is measured from here
    results = [_score_clip(clip, upscaler, options, rows, step) for clip in usable]
    return EvalReport(tuple(results), rows, skipped, seconds=time.perf_counter() - started)


class _ClipReader:
    """Reads one clip's frames as floats in [0, 1], cropped to a multiple of
    the scale, and checks that every frame has the clip's size."""

    def __init__(self, clip: Clip, scale: int) -> None:
        self.clip, self.scale = clip, scale
        self.full = _image_size(clip.gt[0])  # (width, height) of the GT files
        self._read_for_inputs: dict[int, Tensor] = {}  # GT frames read to make inputs, not yet scored
        self.size = _scored_size(self.full, scale, clip.gt[0])

    @property
    def scored(self) -> int | None:
        """How many GT frames get a prediction."""
        return self.clip.scored

    @property
    def gt_frames(self) -> int:
        return self.clip.gt_frames

    def gt(self, index: int) -> Tensor:
        path = self.clip.gt[index]
        frame = read_frame(path)
        if (frame.shape[2], frame.shape[1]) != self.full:
            raise StvsrError(f"{path} is {frame.shape[2]}x{frame.shape[1]}, but {self.clip.gt[0].name} is "
                             f"{self.full[0]}x{self.full[1]}; every frame of a clip needs one size")
        return crop_to_multiple(frame.float().div(255), self.scale)

    def gt_to_score(self, index: int) -> Tensor:
        """GT frame `index`, read once: frames that made an input are kept
        until they are scored (a window's worth at most)."""
        if index in self._read_for_inputs:
            return self._read_for_inputs.pop(index)
        return self.gt(index)

    def inputs(self) -> Iterator[Tensor]:
        """The LR inputs: from LR/ as they are, or made from GT frames 0, 2, 4, ..."""
        if self.clip.lr is None:
            for index in range(0, len(self.clip.gt), 2):
                gt = self.gt(index)
                if index < self.clip.scored:
                    self._read_for_inputs[index] = gt
                yield make_lr(gt, self.scale)
            return
        width, height = self.size
        lr_size = (width // self.scale, height // self.scale)
        for path in self.clip.lr:
            if _image_size(path) != lr_size:
                w, h = _image_size(path)
                raise StvsrError(
                    f"{path} is {w}x{h}, but GT frames of {self.full[0]}x{self.full[1]} (cropped to {width}x{height}) "
                    f"need LR frames of {lr_size[0]}x{lr_size[1]}; fix LR/ or remove it to make the inputs from GT"
                )
            yield read_frame(path).float().div(255)

    def close(self) -> None:
        pass


class _VideoReader:
    """A video's decoded frames as the GT of a clip, read in one pass.

    The same interface as `_ClipReader`, for frames that come in order: a
    frame decoded to make an input, or on the way to one, is held until it
    is scored (a window's worth at most). The frame count is known once the
    decoder reaches the end; until then `scored` is None.
    """

    def __init__(self, clip: Clip, scale: int) -> None:
        from .decode import decode, probe

        self.clip, self.scale = clip, scale
        self.info = probe(clip.video)
        self.full = (self.info.width, self.info.height)
        self.size = _scored_size(self.full, scale, clip.video)
        self._frames = decode(self.info)
        self._held: dict[int, Tensor] = {}
        self._decoded = 0
        self._count: int | None = None

    @property
    def gt_frames(self) -> int:
        return self._count if self._count is not None else self._decoded

    @property
    def scored(self) -> int | None:
        return None if self._count is None else max(2 * ((self._count + 1) // 2) - 1, 0)

    def _decode_to(self, index: int) -> bool:
        """Decode frames up to `index`, holding them; False if the video ends first."""
        while self._decoded <= index:
            if self._count is not None:
                return False
            try:
                array = next(self._frames)  # (H, W, 3) uint8, or uint16 when deep
            except StopIteration:
                self._count = self._decoded
                return False
            frame = torch.from_numpy(array).permute(2, 0, 1).float() / np.iinfo(array.dtype).max
            self._held[self._decoded] = crop_to_multiple(frame, self.scale)
            self._decoded += 1
        return True

    def gt_to_score(self, index: int) -> Tensor:
        if not self._decode_to(index):
            raise StvsrError(f"{self.clip.video}: ended at frame {self._decoded} while frame {index} was needed")
        return self._held.pop(index)

    def inputs(self) -> Iterator[Tensor]:
        index = 0
        while self._decode_to(index):
            yield make_lr(self._held[index], self.scale)
            index += 2
        if self._count < MIN_GT_FRAMES:
            raise StvsrError(f"{self.clip.video} has {self._count} frame(s); scoring needs at least "
                             f"{MIN_GT_FRAMES} (2 inputs and the frame between them)")

    def close(self) -> None:
        self._frames.close()


def _scored_size(full: tuple[int, int], scale: int, what: Path) -> tuple[int, int]:
    width, height = full
    size = (width - width % scale, height - height % scale)
    if min(size) < max(MIN_SIZE, scale):
        raise StvsrError(f"{what}: frames of {width}x{height} are too small to score; "
                         f"they need at least {MIN_SIZE}x{MIN_SIZE} pixels")
    return size


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise StvsrError(f"{path}: not a readable image ({error}); remove it or replace it with a PNG or JPEG") from None


def _open_reader(clip: Clip, scale: int) -> _ClipReader | _VideoReader:
    return _VideoReader(clip, scale) if clip.video is not None else _ClipReader(clip, scale)


def _score_clip(clip: Clip, upscaler: WindowUpscaler, options: EvalOptions, rows: tuple[str, ...],
                step: Callable[[], None]) -> ClipResult:
    scale = upscaler.scale
    save = Path(options.save) / clip.name if options.save is not None else None
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    baselines = len(rows) > 1
    # ffmpeg interpolates the whole clip first, from its own pass over the inputs.
    mci = _MotionCompensated(clip, scale) if baselines else None
    reader = _open_reader(clip, scale)

    # Inputs the scoring loop still needs (for the baselines), by index, as
    # they are (LR) and enlarged 4x with bicubic; upscale_frames pulls each
    # one just before the first output that shows its time.
    lr_inputs: dict[int, Tensor] = {}
    enlarged: dict[int, Tensor] = {}

    def inputs() -> Iterator[tuple[Tensor, bool]]:
        for index, frame in enumerate(reader.inputs()):
            if baselines:
                lr_inputs[index] = frame
                enlarged[index] = _bicubic(frame, scale)
            yield frame, False  # one shot: no scene cuts in an evaluation clip

    scores: dict[str, list[FrameScore]] = {row: [] for row in rows}
    predictions = upscale_frames(inputs(), upscaler, tile=options.tile, overlap=options.tile_overlap,
                                 batch=options.batch)
    network_seconds = 0.0
    try:
        for index in itertools.count():
            if reader.scored is not None and index >= reader.scored:
                break
            started = time.perf_counter()
            prediction = next(predictions, None)
            network_seconds += time.perf_counter() - started
            # a video's frame count is known once its last input was read, which this pull may have done
            if prediction is None or (reader.scored is not None and index >= reader.scored):
                break
            prediction = prediction.float().cpu()
            gt = reader.gt_to_score(index)
            scores[MODEL].append(_score(index, prediction, gt))
            if save is not None:
                save_frame(prediction, save / f"{index:05d}.png")
            if baselines:
                for row, frame in _baseline_frames(index, lr_inputs, enlarged, mci, scale).items():
                    scores[row].append(_score(index, frame, gt))
                for old in [i for i in enlarged if i < index // 2]:
                    del enlarged[old], lr_inputs[old]
            step()
    finally:
        predictions.close()
        reader.close()
        if mci is not None:
            mci.close()
    return ClipResult(
        name=clip.name,
        group=clip.group,
        gt_frames=reader.gt_frames,
        inputs=(reader.gt_frames + 1) // 2,
        lr_source="made from GT" if clip.lr is None else "LR/",
        size=reader.size,
        frames={row: tuple(values) for row, values in scores.items()},
        network_seconds=network_seconds,
        video=None if clip.video is None else str(clip.video),
        video_size=reader.full if clip.video is not None else None,
    )


def _baseline_frames(index: int, lr_inputs: dict[int, Tensor], enlarged: dict[int, Tensor],
                     mci: _MotionCompensated, scale: int) -> dict[str, Tensor]:
    """Every baseline's prediction of GT frame `index`: at an input's time,
    the input enlarged; between inputs, each one's own in-between frame."""
    before = enlarged[index // 2]
    if index % 2 == 0:
        return {BLEND: before, REPEAT: before, MCI: before, FLOW: before}
    k = index // 2
    pair = torch.stack([lr_inputs[k], lr_inputs[k + 1]])  # (2, 3, h, w)
    flows = motion.estimate_flow(pair, pair.flip(0))  # 0 -> 1 and 1 -> 0
    between = motion.interpolate(pair[:1], pair[1:], flows[:1], flows[1:])[0]
    return {
        BLEND: (before + enlarged[k + 1]) / 2,
        REPEAT: before,
        MCI: _bicubic(mci.between(k), scale),
        FLOW: _bicubic(between, scale),
    }


class _MotionCompensated:
    """ffmpeg's minterpolate (`MCI_FILTER`) over a clip's LR inputs.

    Run once, before scoring, from a pass of its own over the inputs (quantised
    to 8 bits, as ffmpeg takes them); the output frames go to a temporary raw
    file, read back by index. Input k of the clip is output frame 2k and the
    frame between inputs k and k + 1 is output 2k + 1: the inputs go in at
    one rate and come out at twice it. minterpolate drops the frames after
    the last input's unless more input follows, so the last input is repeated
    twice at the end.
    """

    def __init__(self, clip: Clip, scale: int) -> None:
        from .encode import ffmpeg_exe

        self._folder = tempfile.TemporaryDirectory(prefix="stvsr-mci-")
        self._path = Path(self._folder.name) / "frames.rgb"
        reader = _open_reader(clip, scale)
        process = None
        try:
            frames = reader.inputs()
            first = next(frames)
            _, self.height, self.width = first.shape
            pad_h, pad_w = max(MCI_MIN_SIDE - self.height, 0), max(MCI_MIN_SIDE - self.width, 0)
            command = [
                ffmpeg_exe(), "-v", "error", "-nostdin", "-cpuflags", MCI_CPUFLAGS, "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", f"{self.width + pad_w}x{self.height + pad_h}", "-r", "25", "-i", "pipe:0",
                "-vf", MCI_FILTER.format(fps=50), "-f", "rawvideo", "-pix_fmt", "rgb24", "-y", str(self._path),
            ]
            errors = tempfile.TemporaryFile()
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors)

            def as_bytes(frame: Tensor) -> bytes:
                if pad_h or pad_w:
                    frame = F.pad(frame[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
                return frame.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy().tobytes()

            last = as_bytes(first)
            process.stdin.write(last)
            for frame in frames:
                last = as_bytes(frame)
                process.stdin.write(last)
            process.stdin.write(last + last)
            process.stdin.close()
            if process.wait() != 0:
                errors.seek(0)
                reason = first_line(errors.read().decode(errors="replace"), f"exit status {process.returncode}")
                raise StvsrError(f"ffmpeg's minterpolate failed on {clip.name}: {reason}")
        except BrokenPipeError:
            process.wait()
            raise StvsrError(f"ffmpeg's minterpolate stopped early on {clip.name}") from None
        finally:
            reader.close()
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        padded = (self.height + pad_h, self.width + pad_w, 3)
        self._frames = np.memmap(self._path, dtype=np.uint8, mode="r").reshape(-1, *padded)

    def between(self, k: int) -> Tensor:
        """The LR frame between inputs k and k + 1, (3, h, w) in [0, 1]."""
        frame = torch.from_numpy(np.array(self._frames[2 * k + 1, : self.height, : self.width]))
        return frame.permute(2, 0, 1).float().div(255)

    def close(self) -> None:
        self._frames = None
        self._folder.cleanup()


def _bicubic(frame: Tensor, scale: int) -> Tensor:
    return F.interpolate(frame[None], scale_factor=scale, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _score(index: int, prediction: Tensor, gt: Tensor) -> FrameScore:
    return FrameScore(
        index,
        psnr_y=metrics.psnr_y(prediction, gt),
        ssim_y=metrics.ssim_y(prediction, gt),
        psnr_rgb=metrics.psnr_rgb(prediction, gt),
        ssim_rgb=metrics.ssim_rgb(prediction, gt),
    )


# --- writing results -----------------------------------------------------------------------------


def write_json(report: EvalReport, path: str | os.PathLike) -> None:
    """The report as strict JSON: an infinite PSNR (a frame identical to its
    ground truth) is written as null, since JSON has no infinity."""
    text = json.dumps(_finite_or_null(report.to_dict()), indent=1, allow_nan=False) + "\n"
    write_atomically(path, lambda temporary: temporary.write_text(text))


def _finite_or_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


PLOT_CLIPS = 12  # more clips than this (Vimeo-90K) are plotted as one mean curve
PLOT_MARKERS = 40  # up to this many frames a panel marks reconstructed and interpolated frames apart


def plot_psnr(report: EvalReport, path: str | os.PathLike) -> None:
    """A PNG of PSNR-Y per GT frame, one panel per clip, model against the
    baselines; on short clips, interpolated frames are marked apart from
    reconstructed ones.
    With more than `PLOT_CLIPS` clips, one panel of the mean per frame index."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    if len(report.clips) <= PLOT_CLIPS:
        panels = [(f"{clip.name} ({len(clip.frames[MODEL])} of {clip.gt_frames} frames scored)",
                   {row: [(f.index, f.psnr_y) for f in clip.frames[row]] for row in report.rows})
                  for clip in report.clips]
    else:
        panels = [(f"mean over {len(report.clips)} clips", {row: _mean_by_index(report, row) for row in report.rows})]
    columns = min(3, len(panels))
    rows_ = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows_, columns, figsize=(5 * columns, 3.2 * rows_), squeeze=False)
    styles = {MODEL: ("C0", "-"), BLEND: ("C1", "--"), REPEAT: ("C2", ":"), MCI: ("C3", "-."), FLOW: ("C4", "--")}
    for axis, (title, curves) in zip(axes.flat, panels):
        for row, points in curves.items():
            colour, line = styles[row]
            x = [i for i, _ in points]
            y = [v for _, v in points]
            axis.plot(x, y, line, color=colour, label=row, linewidth=1.2)
            if len(x) <= PLOT_MARKERS:
                axis.plot(x[1::2], y[1::2], "x", color=colour, markersize=4)  # interpolated frames
                axis.plot(x[0::2], y[0::2], "o", color=colour, markersize=3)  # reconstructed frames
        axis.set_title(title, fontsize=10)
        markers = len(max(curves.values(), key=len)) <= PLOT_MARKERS
        axis.set_xlabel("GT frame" + (" (o reconstructed, x interpolated)" if markers else "; odd frames are interpolated"))
        axis.set_ylabel("PSNR-Y (dB)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _mean_by_index(report: EvalReport, row: str) -> list[tuple[int, float]]:
    values: dict[int, list[float]] = {}
    for clip in report.clips:
        for frame in clip.frames[row]:
            values.setdefault(frame.index, []).append(frame.psnr_y)
    return [(index, sum(v) / len(v)) for index, v in sorted(values.items())]
