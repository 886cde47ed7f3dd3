"""Benchmarks: seconds per output frame, and achieved FLOP/s against what the
same device does on a plain convolution, measured in the same run.

How the numbers are made (see also shared/docs/measuring.md):

- A workload is an output size; the network runs on windows of n + 1 = 4 LR
  frames at a quarter of it. Windows start every 2 LR frames
  (`stvsr_cli.windows`), so on a long video each window adds 4 output frames:
  seconds per output frame = seconds per window / 4.
- FLOPs are counted from the model (`torch.utils.flop_counter`) during the
  first, warm-up, window. `FlopCounterMode` does not know torchvision's
  deformable convolution, so it is given its formula, 2 * Cin * Cout * k * k
  per output pixel (the multiply-adds with the weights; the bilinear sampling
  is not counted); the CPU path's matrix multiply counts the same FLOPs.
- The reference is a plain 64 -> 64 3x3 convolution on a batch of 4 feature
  maps of the workload's LR size, the most common layer in the network. It is
  timed between the network's windows (A B A B ...), so a machine that gets
  busier or quieter during the run moves both, and their ratio holds.
- Every figure is the median of the timed runs, after warm-up.

The command line (`stvsr bench`) is a thin layer over `run_bench`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchvision.ops
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .config import PRESETS
from .errors import StvsrError
from .inference import Upscaler, resolve_device, resolve_precision
from .layers import ModulatedDeformConv
from .layers.deform_cpu import deform_conv2d
from .megan import MEGAN

OUTPUT_FRAMES_PER_WINDOW = 4  # a window every 2 LR frames, 2 output frames per LR frame
REFERENCE_BATCH = 4  # feature maps in the reference convolution: the window's LR frames
REFERENCE_CHANNELS = 64


@dataclass(frozen=True)
class Workload:
    """An output size; the network sees LR frames a quarter of it on each side."""

    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 4 or self.height < 4 or self.width % 4 or self.height % 4:
            raise StvsrError(f"output size must be multiples of 4 (the network's scale), got {self}")

    @property
    def lr_size(self) -> tuple[int, int]:
        """(height, width) of the LR frames."""
        return self.height // 4, self.width // 4

    @classmethod
    def parse(cls, text: str) -> Workload:
        try:
            width, height = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise StvsrError(f"size {text!r} should be WIDTHxHEIGHT of the output, e.g. 640x360") from None
        return cls(width, height)

    def __str__(self) -> str:
        h, w = self.lr_size
        return f"{self.width}x{self.height} output ({w}x{h} LR)"


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
    window: Timing  # one window of 4 LR frames through `Upscaler`
    deform_gflop: float  # the deformable convolutions' part of window.gflop
    conv: Timing  # the reference convolution

    @property
    def seconds_per_frame(self) -> float:
        return self.window.median_seconds / OUTPUT_FRAMES_PER_WINDOW

    @property
    def conv_fraction(self) -> float:
        """Achieved GFLOP/s of the network over those of the reference convolution."""
        return self.window.gflops / self.conv.gflops


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
    deform: DeformResult | None = None

    def to_dict(self) -> dict:
        """Everything, with the derived figures (medians, GFLOP/s, ratios) spelled out."""

        def timing(t: Timing) -> dict:
            return {"gflop": t.gflop, "seconds": t.seconds, "median_seconds": t.median_seconds, "gflops": t.gflops}

        models = [
            {
                "preset": m.preset,
                "output_size": [m.workload.width, m.workload.height],
                "lr_size": [m.workload.lr_size[1], m.workload.lr_size[0]],
                "precision": m.precision,
                "window": timing(m.window),
                "deform_gflop": m.deform_gflop,
                "seconds_per_frame": m.seconds_per_frame,
                "conv": timing(m.conv),
                "conv_fraction": m.conv_fraction,
            }
            for m in self.models
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
        counts["deform"] += 2 * output.numel() * module.conv.weight[0].numel()

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
    """The plain 64 -> 64 3x3 convolution on 4 LR-sized maps, and its GFLOP."""
    x = torch.randn(REFERENCE_BATCH, REFERENCE_CHANNELS, *lr_size, device=device, dtype=dtype)
    conv = nn.Conv2d(REFERENCE_CHANNELS, REFERENCE_CHANNELS, 3, padding=1).to(device, dtype)
    gflop = 2 * REFERENCE_CHANNELS * REFERENCE_CHANNELS * 9 * x.numel() / REFERENCE_CHANNELS / 1e9

    def run() -> Tensor:
        with torch.inference_mode():
            return conv(x)

    return run, gflop


def _conv_repeats(gflop: float) -> int:
    """Reference runs per window: enough for a stable median, a small part of the run."""
    return 3 if gflop > 0.5 else 10


def bench_model(
    preset: str,
    workload: Workload,
    device: torch.device,
    precision: str = "auto",
    runs: int = 3,
    warmup: int = 1,
) -> ModelResult:
    """Time `runs` windows of `preset` (random weights) on `workload`, after
    `warmup` windows (at least one: it counts the FLOPs), with the reference
    convolution timed between them."""
    dtype = resolve_precision(precision, device)
    upscaler = Upscaler(MEGAN(PRESETS[preset]), device=str(device), precision=precision)
    frames = torch.rand(1, upscaler.input_frames, 3, *workload.lr_size, device=device)
    conv, conv_gflop = reference_conv(device, dtype, workload.lr_size)

    with count_flops(upscaler.model) as counts:
        upscaler(frames)
    for _ in range(max(warmup, 1) - 1):
        upscaler(frames)
    conv()
    conv_seconds, window_seconds = [], []
    for _ in range(runs):
        conv_seconds += [_timed(conv, device) for _ in range(_conv_repeats(conv_gflop))]
        window_seconds.append(_timed(lambda: upscaler(frames), device))
    conv_seconds += [_timed(conv, device) for _ in range(_conv_repeats(conv_gflop))]
    return ModelResult(
        preset=preset,
        workload=workload,
        precision=str(dtype).removeprefix("torch."),
        window=Timing(counts["total"] / 1e9, window_seconds),
        deform_gflop=counts["deform"] / 1e9,
        conv=Timing(conv_gflop, conv_seconds),
    )


def bench_deform(device: torch.device, workload: Workload, runs: int = 3) -> DeformResult:
    """torchvision against stvsr's deformable convolution on the paper
    preset's full-size PCD layer (batch 2, 64 channels, 8 groups, offsets of
    a few pixels), alternately, with the plain convolution of the same shape."""
    config = PRESETS["paper"]
    c, groups = config.channels, config.deformable_groups
    h, w = (-(-size // 4) * 4 for size in workload.lr_size)  # padded to the network's multiple of 4
    x = torch.randn(2, c, h, w, device=device)
    offset = 2 * torch.randn(2, 18 * groups, h, w, device=device)
    mask = torch.rand(2, 9 * groups, h, w, device=device)
    weight = torch.randn(c, c, 3, 3, device=device) / (9 * c) ** 0.5
    bias = torch.zeros(c, device=device)
    gflop = 2 * c * c * 9 * 2 * h * w / 1e9

    candidates = {
        "torchvision": lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask),
        "stvsr": lambda: deform_conv2d(x, offset, weight, bias, padding=1, mask=mask),
        "conv": lambda: F.conv2d(x, weight, bias, padding=1),
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


def run_bench(
    presets: list[str],
    workload: Workload,
    device: str = "auto",
    precision: str = "auto",
    runs: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    deform: bool = True,
) -> BenchReport:
    """Benchmark each preset on `workload`; with `deform`, also compare the
    deformable convolutions (on the CPU, where stvsr has its own)."""
    if runs < 1:
        raise StvsrError(f"--runs must be at least 1 (got {runs})")
    torch_device = resolve_device(device)
    if threads is not None:
        if threads < 1:
            raise StvsrError(f"--threads must be at least 1 (got {threads})")
        torch.set_num_threads(threads)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise StvsrError(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
    report = BenchReport(
        device=device_name(torch_device), threads=torch.get_num_threads(), torch_version=torch.__version__
    )
    if deform and torch_device.type == "cpu":
        report = dataclasses.replace(report, deform=bench_deform(torch_device, workload, runs))
    models = [bench_model(p, workload, torch_device, precision, runs, warmup) for p in presets]
    return dataclasses.replace(report, models=models)

