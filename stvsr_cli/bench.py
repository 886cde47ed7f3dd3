"""Benchmarks: output frames per second of the network alone and of the
whole `upscale` path, peak memory, and achieved FLOP/s against the device's
peak and against a plain convolution measured in the same run.

How the numbers are made (see also shared/docs/measuring.md):

- A workload is an output size; the network runs on windows of n + 1 = 4 LR
  frames at a quarter of it. Two are standard (`WORKLOADS`): "vid4", LR
  180x144 to 720x576, and "1080p", LR 480x270 to 1920x1080. Windows start
  every 2 LR frames (`stvsr_cli.windows`), so on a long video each window
  adds 4 output frames: seconds per output frame = seconds per window / 4.
- The network alone runs windows through `upscale_tiled` with the same tile
  size `upscale` uses, so both paths do the same network work.
- The whole path (`bench_pipeline`) is `upscale_video` on a generated clip
  with motion and an AAC track (decode, scene-cut detection, network,
  stitching, ffmpeg encode, audio mux), with the network loaded once
  outside the timing, as on a long film. Its efficiency is the time the
  network alone needs for that clip's windows over the time the whole path
  took: 100% means decoding and encoding are completely hidden.
- FLOPs are counted from the model (`torch.utils.flop_counter`) during the
  first, warm-up, window. `FlopCounterMode` does not know torchvision's
  deformable convolution, so it is given its formula, 2 * Cin * Cout * k * k
  per output pixel (the multiply-adds with the weights; the bilinear sampling
  is not counted); the CPU path's matrix multiply counts the same FLOPs.
- The reference is a plain 64 -> 64 3x3 convolution on a batch of 4 feature
  maps of the workload's LR size, the most common layer in the network, in
  the best layout the device offers (channels-last on the CPU, where NCHW is
  slower; NCHW on a GPU). It is timed between the network's windows (A B A B
  ...), so a machine that gets busier or quieter during the run moves both,
  and their ratio holds. It runs in the network's precision and, on the
  CPU, in fp32 and bf16 too: bf16 doubles its speed on CPUs with native bf16
  and is several times slower elsewhere, so the two show what the CPU offers.
- The fraction of the device's peak uses NVIDIA's dense tensor-core figure
  for the precision (`DEVICE_PEAK_TFLOPS`; TF32 for fp32, which cuDNN uses
  for convolutions by default), or `peak_tflops` when given; CPUs have none,
  and the plain convolution is their yardstick.
- Peak memory: on a GPU, the most memory PyTorch allocated during the
  measurement; on the CPU, the process's peak resident size so far
  (`ru_maxrss`, which cannot be reset).
- Every figure is the median of the timed runs, after warm-up.

The command line (`stvsr bench`) is a thin layer over `run_bench`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchvision.ops
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from . import motion
from .config import PRESETS
from .errors import StvsrError
from .inference import Upscaler, resolve_device
from .layers import ModulatedDeformConv
from .layers.deform_cpu import deform_conv2d
from .networks import build_network
from .options import MOTION_PRIORS, WORKLOADS, BenchOptions, Workload  # Workload(S): bench's, defined with its options
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, upscale_tiled
from .upscale import UpscaleOptions, upscale_video
from .windows import Window, WindowPlanner

OUTPUT_FRAMES_PER_WINDOW = 4  # a window every 2 LR frames, 2 output frames per LR frame
REFERENCE_BATCH = 4  # feature maps in the reference convolution: the window's LR frames
REFERENCE_CHANNELS = 64


# Dense tensor-core TFLOP/s from NVIDIA's datasheets, by a part of the name
# torch.cuda.get_device_name gives (the first that matches is used). float32
# is the TF32 figure: cuDNN runs fp32 convolutions on TF32 by default.
DEVICE_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"float32": 378.0, "bfloat16": 756.0, "float16": 756.0}),
    ("H100", {"float32": 494.7, "bfloat16": 989.4, "float16": 989.4}),  # SXM5
    ("H200", {"float32": 494.7, "bfloat16": 989.4, "float16": 989.4}),
    ("A100", {"float32": 156.0, "bfloat16": 312.0, "float16": 312.0}),
]


def device_peak_tflops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's peak for `dtype` from `DEVICE_PEAK_TFLOPS`, or None (CPUs, unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for part, peaks in DEVICE_PEAK_TFLOPS:
        if part in name:
            return peaks.get(str(dtype).removeprefix("torch."))
    return None


@dataclass(frozen=True)
class Timing:
    """A measured operation: its FLOPs and the seconds of each timed run."""

    gflop: float
    seconds: list[float]

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def gflops(self) -> float:
        return self.gflop / self.median_seconds


@dataclass(frozen=True)
class ModelResult:
    """One preset on one workload, with the reference convolution timed between its windows."""

    preset: str
    workload: Workload
    precision: str
    tile: int  # LR tile side (0: whole frames), as `upscale --tile`
    motion_prior: int  # MEGANConfig.motion_prior of the network timed
    window: Timing  # one window of 4 LR frames through `upscale_tiled`
    deform_gflop: float  # the deformable convolutions' part of window.gflop
    references: dict[str, Timing]  # the reference convolution by precision ("float32", ...), the network's included
    peak_memory: int  # bytes (see the module docstring)
    peak_tflops: float | None = None  # the device's, for this precision
    # Of each timed window, the seconds spent in the motion prior (flows and warping), [] without one
    prior_seconds: list[float] = field(default_factory=list)

    @property
    def seconds_per_frame(self) -> float:
        return self.window.median_seconds / OUTPUT_FRAMES_PER_WINDOW

    @property
    def prior_fraction(self) -> float | None:
        """The motion prior's share of a window's time, measured inside the same windows."""
        if not self.prior_seconds:
            return None
        return statistics.median(p / w for p, w in zip(self.prior_seconds, self.window.seconds))

    @property
    def fps(self) -> float:
        return 1 / self.seconds_per_frame

    @property
    def conv(self) -> Timing:
        """The reference convolution in the network's precision."""
        return self.references[self.precision]

    @property
    def conv_fraction(self) -> float:
        """Achieved GFLOP/s of the network over those of the reference convolution in its precision."""
        return self.conv_fraction_of(self.precision)

    def conv_fraction_of(self, precision: str) -> float:
        """Achieved GFLOP/s of the network over those of the reference convolution in `precision`."""
        return self.window.gflops / self.references[precision].gflops

    @property
    def peak_fraction(self) -> float | None:
        """Achieved FLOP/s over the device's peak, where it is known."""
        return None if self.peak_tflops is None else self.window.gflops / 1e3 / self.peak_tflops


@dataclass(frozen=True)
class PipelineResult:
    """The whole `upscale` path on a generated clip, with the network loaded once."""

    preset: str
    workload: Workload
    precision: str
    motion_prior: int
    input_frames: int
    output_frames: int
    windows: int  # network windows the clip needs
    seconds: list[float]  # wall time of each timed run
    peak_memory: int  # bytes

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def fps(self) -> float:
        return self.output_frames / self.median_seconds

    @property
    def seconds_per_frame(self) -> float:
        return self.median_seconds / self.output_frames

    def efficiency(self, model: ModelResult) -> float:
        """The network-alone time for this clip's windows over the whole path's time."""
        return self.windows * model.window.median_seconds / self.median_seconds


@dataclass(frozen=True)
class DeformResult:
    """torchvision's deformable convolution against the one stvsr uses, on
    the paper preset's full-size PCD layer, timed alternately."""

    shape: tuple[int, ...]  # input (N, C, H, W)
    groups: int
    torchvision: Timing
    stvsr: Timing
    conv: Timing  # the same-shaped plain convolution


@dataclass(frozen=True)
class BenchReport:
    device: str
    threads: int
    torch_version: str
    models: list[ModelResult] = field(default_factory=list)
    pipelines: list[PipelineResult | None] = field(default_factory=list)  # models[i]'s, None if not run
    deform: DeformResult | None = None

    def to_dict(self) -> dict:
        """Everything, with the derived figures (medians, GFLOP/s, ratios) spelled out."""

        def timing(t: Timing) -> dict:
            return {"gflop": t.gflop, "seconds": t.seconds, "median_seconds": t.median_seconds, "gflops": t.gflops}

        def pipeline(p: PipelineResult | None, m: ModelResult) -> dict | None:
            if p is None:
                return None
            return {
                "input_frames": p.input_frames,
                "output_frames": p.output_frames,
                "windows": p.windows,
                "seconds": p.seconds,
                "median_seconds": p.median_seconds,
                "fps": p.fps,
                "seconds_per_frame": p.seconds_per_frame,
                "peak_memory_bytes": p.peak_memory,
                "efficiency": p.efficiency(m),
            }

        pipelines = self.pipelines or [None] * len(self.models)
        models = [
            {
                "preset": m.preset,
                "workload": m.workload.name or None,
                "output_size": [m.workload.width, m.workload.height],
                "lr_size": [m.workload.lr_size[1], m.workload.lr_size[0]],
                "precision": m.precision,
                "motion_prior": m.motion_prior,
                "prior_seconds": m.prior_seconds,
                "prior_fraction": m.prior_fraction,
                "tile": m.tile,
                "window": timing(m.window),
                "deform_gflop": m.deform_gflop,
                "seconds_per_frame": m.seconds_per_frame,
                "fps": m.fps,
                "peak_memory_bytes": m.peak_memory,
                "device_peak_tflops": m.peak_tflops,
                "peak_fraction": m.peak_fraction,
                "conv": timing(m.conv),
                "conv_fraction": m.conv_fraction,
                "references": {name: timing(t) for name, t in m.references.items()},
                "conv_fractions": {name: m.conv_fraction_of(name) for name in m.references},
                "end_to_end": pipeline(p, m),
            }
            for m, p in zip(self.models, pipelines)
        ]
        deform = None
        if self.deform is not None:
            deform = {
                "shape": list(self.deform.shape),
                "groups": self.deform.groups,
                **{name: timing(getattr(self.deform, name)) for name in ("torchvision", "stvsr", "conv")},
            }
        return {
            "device": self.device,
            "threads": self.threads,
            "torch_version": self.torch_version,
            "models": models,
            "deform": deform,
        }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU ({cpu})"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """torchvision::deform_conv2d: 2 * Cin/groups * k * k multiply-adds per output value."""
    return 2 * _numel(out_shape) * weight_shape[1] * weight_shape[2] * weight_shape[3]


def _numel(shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


@contextlib.contextmanager
def count_flops(model: nn.Module) -> Iterator[dict[str, int]]:
    """Counts the FLOPs of what runs inside: {"total": ..., "deform": ...}.

    "deform" is the deformable convolutions' share, by the same formula
    whichever implementation runs.
    """
    counts = {"total": 0, "deform": 0}

    def deform_hook(module: ModulatedDeformConv, inputs, output: Tensor) -> None:
        counts["deform"] += module.flops(output.shape)

    hooks = [m.register_forward_hook(deform_hook) for m in model.modules() if isinstance(m, ModulatedDeformConv)]
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.torchvision.deform_conv2d: _deform_conv2d_flops})
    try:
        with counter:
            yield counts
    finally:
        for hook in hooks:
            hook.remove()
    counts["total"] = counter.get_total_flops()


def reference_conv(
    device: torch.device, dtype: torch.dtype, lr_size: tuple[int, int]
) -> tuple[Callable[[], Tensor], float]:
    """The plain 64 -> 64 3x3 convolution on 4 LR-sized maps, channels-last
    on the CPU, and its GFLOP."""
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    x = torch.randn(REFERENCE_BATCH, REFERENCE_CHANNELS, *lr_size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=layout)
    conv = nn.Conv2d(REFERENCE_CHANNELS, REFERENCE_CHANNELS, 3, padding=1).to(device, dtype, memory_format=layout)
    gflop = 2 * REFERENCE_CHANNELS * REFERENCE_CHANNELS * 9 * x.numel() / REFERENCE_CHANNELS / 1e9

    def run() -> Tensor:
        with torch.inference_mode():
            return conv(x)

    return run, gflop


def reference_precisions(device: torch.device, dtype: torch.dtype) -> list[torch.dtype]:
    """The precisions of the reference convolution: the network's, and on the CPU fp32 and bf16."""
    extra = [torch.float32, torch.bfloat16] if device.type == "cpu" else []
    return list(dict.fromkeys([dtype, *extra]))


def _conv_repeats(gflop: float) -> int:
    """Reference runs per window: enough for a stable median, a small part of the run."""
    return 3 if gflop > 0.5 else 10


def bench_model(
    upscaler: Upscaler,
    preset: str,
    workload: Workload,
    runs: int = 3,
    warmup: int = 1,
    tile: int = DEFAULT_TILE,
    peak_tflops: float | None = None,
) -> ModelResult:
    """Time `runs` windows of `upscaler`'s network on `workload`, after
    `warmup` windows (at least one: it counts the FLOPs), with the reference
    convolution timed between them. `peak_tflops` overrides the device's
    figure from `DEVICE_PEAK_TFLOPS`."""
    device, dtype = upscaler.device, upscaler.dtype
    frames = torch.rand(1, upscaler.input_frames, 3, *workload.lr_size, device=device)
    convs = {_name(d): reference_conv(device, d, workload.lr_size) for d in reference_precisions(device, dtype)}

    def window() -> Tensor:
        return upscale_tiled(upscaler, frames, scale=upscaler.scale, tile=tile, overlap=DEFAULT_OVERLAP)

    _reset_peak_memory(device)
    with count_flops(upscaler.model) as counts:
        window()
    for _ in range(max(warmup, 1) - 1):
        window()
    conv_seconds: dict[str, list[float]] = {name: [] for name in convs}

    def time_references() -> None:
        for name, (conv, gflop) in convs.items():
            conv_seconds[name] += [_timed(conv, device) for _ in range(_conv_repeats(gflop))]

    for conv, _ in convs.values():
        conv()
    window_seconds, prior_seconds = [], []
    for _ in range(runs):
        time_references()
        with _time_motion_prior(device) as prior:
            window_seconds.append(_timed(window, device))
        prior_seconds.append(prior.seconds)
    time_references()
    return ModelResult(
        preset=preset,
        workload=workload,
        precision=_name(dtype),
        tile=tile,
        motion_prior=getattr(upscaler.model.config, "motion_prior", 0),
        window=Timing(counts["total"] / 1e9, window_seconds),
        deform_gflop=counts["deform"] / 1e9,
        references={name: Timing(gflop, conv_seconds[name]) for name, (_, gflop) in convs.items()},
        peak_memory=_peak_memory(device),
        peak_tflops=peak_tflops if peak_tflops is not None else device_peak_tflops(device, dtype),
        prior_seconds=prior_seconds if getattr(upscaler.model.config, "motion_prior", 0) else [],
    )


@dataclass
class _Spent:
    seconds: float = 0.0


@contextlib.contextmanager
def _time_motion_prior(device: torch.device) -> Iterator[_Spent]:
    """Seconds spent inside the motion prior's two steps (`motion.pair_flows`,
    the flows; `motion.interpolate`, the warped in-between frames) while the
    block runs, by wrapping them where the network looks them up. Timing the
    prior inside the windows themselves gives its share of the same work,
    which load on a shared machine cannot skew as it can two separate runs."""
    spent = _Spent()
    originals = {name: getattr(motion, name) for name in ("pair_flows", "interpolate")}

    def timed(function):
        def run(*args, **kwargs):
            _synchronize(device)
            start = time.perf_counter()
            result = function(*args, **kwargs)
            _synchronize(device)
            spent.seconds += time.perf_counter() - start
            return result

        return run

    for name, function in originals.items():
        setattr(motion, name, timed(function))
    try:
        yield spent
    finally:
        for name, function in originals.items():
            setattr(motion, name, function)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def windows_needed(frames: int, input_frames: int = 4) -> int:
    """Network windows a clip of `frames` LR frames without scene cuts takes."""
    planner: WindowPlanner[int] = WindowPlanner(input_frames)
    items = [item for index in range(frames) for item in planner.push(index, cut=False)] + planner.finish()
    return sum(isinstance(item, Window) for item in items)


def make_clip(path: Path, workload: Workload, frames: int, fps: int = 25) -> Path:
    """An H.264 clip of `frames` LR frames of ffmpeg's moving test pattern, with an AAC tone."""
    from .encode import ffmpeg_exe

    h, w = workload.lr_size
    seconds = frames / fps
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-frames:v", str(frames), "-c:v", "libx264", "-crf", "12",
        "-pix_fmt", "yuv444p" if w % 2 or h % 2 else "yuv420p", "-c:a", "aac", str(path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise StvsrError(f"could not make the benchmark clip with ffmpeg: {done.stderr.strip()[-300:]}")
    return path


def bench_pipeline(
    upscaler: Upscaler,
    preset: str,
    workload: Workload,
    frames: int,
    runs: int = 3,
    warmup: int = 1,
    tile: int = DEFAULT_TILE,
) -> PipelineResult:
    """Time `upscale_video` on a generated clip of `frames` LR frames with
    audio: `warmup` untimed runs, then `runs` timed ones."""
    options = UpscaleOptions(tile=tile, overwrite=True)
    with tempfile.TemporaryDirectory(prefix="stvsr-bench-") as folder:
        clip = make_clip(Path(folder) / "clip.mp4", workload, frames)
        output = Path(folder) / "upscaled.mp4"
        for _ in range(warmup):
            upscale_video(clip, output, options, upscaler=upscaler)
        seconds, result = [], None
        _reset_peak_memory(upscaler.device)
        for _ in range(runs):
            # upscale_video times itself, and it returns only once every frame
            # has left the GPU and been encoded, so no synchronisation is needed.
            result = upscale_video(clip, output, options, upscaler=upscaler)
            seconds.append(result.seconds)
        assert result is not None
    return PipelineResult(
        preset=preset,
        workload=workload,
        precision=str(upscaler.dtype).removeprefix("torch."),
        motion_prior=getattr(upscaler.model.config, "motion_prior", 0),
        input_frames=result.input_frames,
        output_frames=result.output_frames,
        windows=windows_needed(result.input_frames, upscaler.input_frames),
        seconds=seconds,
        peak_memory=_peak_memory(upscaler.device),
    )


def bench_deform(device: torch.device, workload: Workload, runs: int = 3) -> DeformResult:
    """torchvision against stvsr's deformable convolution on the paper
    preset's full-size PCD layer (batch 2, 64 channels, 8 groups, offsets of
    a few pixels), alternately, with the plain convolution of the same shape
    (channels-last on the CPU, as in the network)."""
    config = PRESETS["paper"]
    c, groups = config.channels, config.deformable_groups
    layer = ModulatedDeformConv(c, c, groups)  # for its shapes and FLOPs
    h, w = (-(-size // 4) * 4 for size in workload.lr_size)  # padded to the network's multiple of 4
    x = torch.randn(2, c, h, w, device=device)
    offset = 2 * torch.randn(2, layer.offset_planes, h, w, device=device)
    mask = torch.rand(2, layer.mask_planes, h, w, device=device)
    weight = torch.randn(c, c, 3, 3, device=device) / (9 * c) ** 0.5
    bias = torch.zeros(c, device=device)
    gflop = layer.flops(x.shape) / 1e9  # the output has the input's shape

    # stvsr's and the plain convolution take the layout the network runs in on the CPU
    x_cl = x.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else x
    candidates = {
        "torchvision": lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask),
        "stvsr": lambda: deform_conv2d(x_cl, offset, weight, bias, padding=1, mask=mask),
        "conv": lambda: F.conv2d(x_cl, weight, bias, padding=1),
    }
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.inference_mode():
        for fn in candidates.values():
            fn()
        for _ in range(runs):
            for name, fn in candidates.items():
                seconds[name].append(_timed(fn, device))
    return DeformResult(
        shape=tuple(x.shape), groups=groups, **{name: Timing(gflop, s) for name, s in seconds.items()}
    )


def default_workloads(device: torch.device) -> list[Workload]:
    """Both standard workloads on a GPU; on a CPU only vid4 (1080p takes minutes a window there)."""
    return list(WORKLOADS.values()) if device.type == "cuda" else [WORKLOADS["vid4"]]


def default_clip_frames(device: torch.device) -> int:
    """LR frames of the end-to-end clip: enough on a GPU for start-up to fade; few on a CPU."""
    return 96 if device.type == "cuda" else 8


def run_bench(options: BenchOptions = BenchOptions()) -> BenchReport:
    """Benchmark as `options` say (see `BenchOptions`)."""
    torch_device = resolve_device(options.device)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    workloads = list(options.workloads or default_workloads(torch_device))
    clip_frames = options.clip_frames or default_clip_frames(torch_device)
    report = BenchReport(
        device=device_name(torch_device), threads=torch.get_num_threads(), torch_version=torch.__version__
    )
    if options.deform and torch_device.type == "cpu":
        report = dataclasses.replace(report, deform=bench_deform(torch_device, workloads[0], options.runs))
    models: list[ModelResult] = []
    pipelines: list[PipelineResult | None] = []
    for preset, prior, precision in itertools.product(options.presets, options.motion_priors, options.precisions):
        config = PRESETS[preset]
        if prior is not None:
            if not hasattr(config, "motion_prior"):
                raise StvsrError(f"--motion-prior is MEGAN's; the {preset} network has none")
            config = dataclasses.replace(config, motion_prior=MOTION_PRIORS[prior])
        upscaler = Upscaler(build_network(config), device=str(torch_device), precision=precision)
        for workload in workloads:
            models.append(bench_model(upscaler, preset, workload, options.runs, options.warmup, options.tile,
                                      options.peak_tflops))
            pipelines.append(
                bench_pipeline(upscaler, preset, workload, clip_frames, options.runs, options.warmup, options.tile)
                if options.end_to_end else None
            )
    return dataclasses.replace(report, models=models, pipelines=pipelines)
