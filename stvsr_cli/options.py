"""The options of `stvsr train` and `stvsr bench`, each defined once.

`TrainOptions` and `BenchOptions` (with its `Workload`s, the output sizes
to time) are what `train.train` and `bench.run_bench` take, and the command line reads its defaults from their
fields (`cli.py`), so a default is written in one place. Each checks its
values when it is made (`__post_init__`), with one line a user can act on.

This module imports neither PyTorch nor PyAV, so `stvsr --help` can show the
defaults at once (`UpscaleOptions`, `EncodeOptions` and `EvalOptions` live
beside the code they configure; their shared defaults are in `defaults.py`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

from .config import PRESETS
from .defaults import DEFAULT_OVERLAP, DEFAULT_TILE
from .errors import StvsrError

# What makes one training run the same run: --resume refuses to continue with different values.
RECIPE = ("preset", "init", "motion_prior", "iters", "batch", "lr", "lr_min", "betas", "eps", "interp_weight", "crop",
          "seed")
MOTION_PRIORS = {"none": 0, "flow": 1}  # --motion-prior: MEGANConfig.motion_prior


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(problems: list[str]) -> None:
    if problems:
        raise StvsrError("; ".join(problems))


@dataclass
class TrainOptions:
    """Everything a training run needs; the defaults are the paper's recipe."""

    data: Sequence[str | Path]  # sources, detected by layout (see stvsr_cli.data)
    out: Path  # the run folder
    preset: str | None = None  # network size for a new run; "paper" unless `init` gives one
    init: Path | None = None  # start from these weights (a weights file or a checkpoint)
    # "flow" or "none": set MEGANConfig.motion_prior of the preset or of the `init` weights (it adds no
    # parameters, so weights trained without the prior can be fine-tuned with it); None keeps it
    motion_prior: str | None = None
    resume: bool = False  # continue from out/checkpoint.pt
    iters: int = 20_000
    batch: int = 16
    lr: float = 1e-4
    lr_min: float = 1e-7
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-3  # Charbonnier epsilon
    # the loss weight of each in-between frame (outputs 1, 3, 5 of 7) against a frame at an input's time;
    # 1 is the paper's plain mean over all frames
    interp_weight: float = 1.0
    crop: int = 32  # LR crop side; the HR crop is 4x
    seed: int = 0
    val: Sequence[str | Path] = ()
    val_every: int = 1000
    val_windows: int = 32  # at most this many validation septuplets (7 HR frames each; see stvsr_cli.data)
    val_size: int = 256  # HR centre crop of a validation septuplet
    save_every: int = 1000
    log_every: int = 10
    device: str = "auto"
    precision: str = "auto"
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    max_bad_steps: int = 10
    # seconds: stop cleanly (checkpoint and last.safetensors written) after the step during which this much
    # time has passed since `train` was called, for a run that must end by a deadline (a night, a rented
    # machine); `--resume` continues it on the same schedule. This invocation's, like `quiet`: not recorded
    stop_after: float | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        positive = ("iters", "batch", "crop", "val_every", "val_windows", "val_size", "save_every", "log_every",
                    "max_bad_steps")
        problems = [f"{_flag(name)} must be positive" for name in positive if getattr(self, name) < 1]
        if not self.data:
            problems.append("give at least one DATA source")
        if not 0 < self.lr_min <= self.lr:
            problems.append(f"need 0 < --lr-min <= --lr (got {self.lr_min} and {self.lr})")
        if self.eps <= 0:
            problems.append("--eps must be positive")
        if not self.interp_weight > 0:
            problems.append(f"--interp-weight must be positive (got {self.interp_weight})")
        if self.workers < 0:
            problems.append("--workers must not be negative")
        if self.preset is not None and self.preset not in PRESETS:
            problems.append(f"--preset must be one of {', '.join(PRESETS)} (got {self.preset!r})")
        if self.preset is not None and self.init is not None:
            problems.append("--init's weights define the network; drop --preset")
        if self.stop_after is not None and not self.stop_after > 0:
            problems.append(f"--stop-after must be a positive duration (got {self.stop_after} s)")
        if self.motion_prior is not None and self.motion_prior not in MOTION_PRIORS:
            problems.append(f"--motion-prior must be one of {', '.join(MOTION_PRIORS)} (got {self.motion_prior!r})")
        _check(problems)

    @classmethod
    def resuming(cls, out: str | Path, **given) -> TrainOptions:
        """The options that continue the run in `out`: those it started with
        (its options.json), with `given` over them, so `stvsr train --out RUN
        --resume` needs nothing else. A given recipe value that differs from
        the run's is still refused when the run opens (`train._open_run`)."""
        out = Path(out)
        record = out / "options.json"
        try:
            recorded = json.loads(record.read_text())["options"]
        except FileNotFoundError:
            if not given.get("data"):
                raise StvsrError(f"--resume: {out} holds no run (no {record.name}); give DATA and the run's options, "
                                 "or start a new run without --resume") from None
            recorded = {}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StvsrError(f"--resume: cannot read {record} ({error}); give DATA and the run's options again") from None
        # `out`, `resume`, `stop_after` and `quiet` are this invocation's; everything else continues as recorded
        names = {f.name for f in fields(cls)} - {"out", "resume", "stop_after", "quiet"}
        values = {name: recorded[name] for name in names if name in recorded}
        started_in = recorded.get("cwd")  # DATA and --val paths are relative to it (older runs: not recorded)
        if started_in:
            for name in ("data", "val"):
                values[name] = [_from_folder(spec, Path(started_in)) for spec in values.get(name, ())]
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        if values.get("init") is not None:
            values["init"] = Path(values["init"])
        values.update({name: value for name, value in given.items() if value is not None and value != ()})
        return cls(out=out, resume=True, **values)

    def recipe(self) -> dict:
        values = {name: getattr(self, name) for name in RECIPE}
        values["init"] = None if self.init is None else str(self.init)
        values["betas"] = [float(beta) for beta in self.betas]
        return values


_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `45m`, `8h`, `1h30m` or `90s` (`--stop-after`)."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text.strip())
    if not text.strip() or match is None:
        raise StvsrError(f"{text!r} is not a duration: give one such as 45m, 8h, 1h30m or 90s")
    return sum(float(value) * _UNITS[unit] for value, unit in zip(match.groups(), "hms") if value)


def _from_folder(spec: str, folder: Path) -> str:
    """A DATA argument (`PATH` or `KIND:PATH`) given in `folder`, as this working directory reads it."""
    from .data import split_kind  # imports PyTorch: here, only when a run is resumed, not when --help loads

    kind, path = split_kind(spec)
    if path.is_absolute():
        return spec
    return (f"{kind}:" if kind else "") + str(folder / path)


@dataclass(frozen=True)
class Workload:
    """An output size; the network sees LR frames a quarter of it on each side."""

    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.width < 4 or self.height < 4 or self.width % 4 or self.height % 4:
            raise StvsrError(f"output size must be multiples of 4 (the network's scale), got {self}")

    @property
    def lr_size(self) -> tuple[int, int]:
        """(height, width) of the LR frames."""
        return self.height // 4, self.width // 4

    @classmethod
    def parse(cls, text: str) -> Workload:
        """A standard workload's name (vid4, 1080p) or an output size WIDTHxHEIGHT."""
        if text.lower() in WORKLOADS:
            return WORKLOADS[text.lower()]
        try:
            width, height = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise StvsrError(
                f"size {text!r} should be {' or '.join(WORKLOADS)}, or WIDTHxHEIGHT of the output, e.g. 640x360"
            ) from None
        return cls(width, height)

    def __str__(self) -> str:
        h, w = self.lr_size
        size = f"{self.width}x{self.height} output ({w}x{h} LR)"
        return f"{self.name}, {size}" if self.name else size


WORKLOADS = {
    # Vid4's frame size, the field's standard test (ZSM and MEGAN report on it).
    "vid4": Workload(720, 576, "vid4"),
    "1080p": Workload(1920, 1080, "1080p"),
}

@dataclass(frozen=True)
class BenchOptions:
    """What `run_bench` times, and how.

    Each preset at each precision on each workload: the network alone and,
    with `end_to_end`, the whole upscale path on a clip of `clip_frames` LR
    frames. `workloads` None (or empty) and `clip_frames` None take the
    device's defaults (`bench.default_workloads`, `bench.default_clip_frames`).
    With `deform`, the deformable convolutions are compared too (on the CPU,
    where stvsr has its own). `motion_priors` times each preset with its
    motion prior as the preset has it (None), taken away ("none") or added
    ("flow"), to show its cost. `peak_tflops` overrides the device's peak.
    """

    presets: Sequence[str] = ("paper", "small")
    workloads: Sequence[Workload] | None = None
    device: str = "auto"
    precisions: Sequence[str] = ("auto",)
    runs: int = 3  # timed runs of each measurement (the median is reported)
    warmup: int = 1  # untimed runs first (the first counts the FLOPs)
    threads: int | None = None  # CPU threads for PyTorch; None: PyTorch's
    deform: bool = True
    end_to_end: bool = True
    clip_frames: int | None = None
    tile: int = DEFAULT_TILE  # LR tile side, as upscale's (0: whole frames)
    peak_tflops: float | None = None
    motion_priors: Sequence[str | None] = (None,)

    def __post_init__(self) -> None:
        from .stream import check_run_options  # imports PyTorch: here, not when --help reads the defaults

        problems = []
        for name, value in (("--runs", self.runs), ("--frames", self.clip_frames), ("--threads", self.threads)):
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1 (got {value})")
        if self.warmup < 0:
            problems.append(f"--warmup must not be negative (got {self.warmup})")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            problems.append(f"--peak-tflops must be positive (got {self.peak_tflops})")
        unknown = [p for p in self.presets if p not in PRESETS]
        if not self.presets:
            problems.append(f"give at least one preset; choose from {', '.join(PRESETS)}")
        if unknown:
            problems.append(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
        if any(prior is not None and prior not in MOTION_PRIORS for prior in self.motion_priors):
            problems.append(f"unknown motion prior in {list(self.motion_priors)}; use {' or '.join(MOTION_PRIORS)}")
        _check(problems)
        check_run_options(self.tile, DEFAULT_OVERLAP, batch=1)
