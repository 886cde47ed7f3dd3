"""The inference contract: everything between "frames in" and "frames out".

`Upscaler` is the one object that knows the network's value range, the size
multiple it needs (padding and cropping), the device and the precision.
Code outside it hands over frames and never thinks about padding again.
`WindowUpscaler` names what that code relies on, so tests can hand it a
stand-in network.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import StvsrError
from .frames import turn, turn_back
from .networks import Network
from .weights import load_model

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# The eight symmetries of the square, as (quarter turns, left-right flip):
# self-ensemble (Lim et al., EDSR, sec. 4.3) runs the network on each and
# averages the outputs mapped back. Time reversal was tried as well and
# added nothing (weights/README.md, "Self-ensemble").
SYMMETRIES = tuple((quarter_turns, flip) for flip in (False, True) for quarter_turns in range(4))


@runtime_checkable
class WindowUpscaler(Protocol):
    """What `stream.upscale_frames` and `evaluate.score_clips` need of a
    network: `Upscaler` is one, and tests pass stand-ins (a network that
    blends frames linearly, or outputs one grey level) to check the
    windowing, stitching and scoring exactly."""

    @property
    def input_frames(self) -> int:  # n + 1 LR frames a window
        ...

    @property
    def scale(self) -> int:  # of the width and height
        ...

    def __call__(self, frames: Tensor) -> Tensor:
        """(B, n+1, 3, H, W) LR frames, floats in [0, 1] or uint8 -> (B, 2n+1, 3, scale*H, scale*W) floats in [0, 1]."""
        ...


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' (the GPU when there is one), 'cpu', 'cuda' or 'cuda:N', checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StvsrError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StvsrError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise StvsrError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise StvsrError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


# CPU features for bf16 dot products in hardware (x86): with either, oneDNN's
# bf16 convolutions run at about twice the fp32 rate (shared/docs/measuring.md).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products in hardware (`NATIVE_BF16_FLAGS`).

    Elsewhere bf16 still works, converted to and from fp32 around every
    product, and is much slower than fp32: on an AMD EPYC with AVX2 only, a
    64-channel 3x3 convolution ran at an eighth to a ninth of its fp32 speed.
    (`torch.ops.mkldnn._is_mkldnn_bf16_supported` says whether oneDNN can
    run bf16 at all, which AVX-512 CPUs that emulate it also can.) ARM CPUs
    with bf16 instructions are not detected, not having been measured; on
    them `--precision bf16` chooses it.
    """
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # PyTorch 2.8 and newer
    if capabilities is not None:
        return any(capabilities().get(flag, False) for flag in NATIVE_BF16_FLAGS)
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_precision(name: str, device: torch.device, training: bool = False) -> torch.dtype:
    """The dtype the network computes in (under autocast; weights stay fp32).

    'auto' is reduced precision on a GPU (bf16 where supported, else fp16).
    On the CPU it is bf16 where the CPU has native bf16 (`cpu_has_native_bf16`)
    and fp32 elsewhere; for `training` it is always fp32 on the CPU: bf16
    steps there have not yet been shown faster with the same loss curve
    (`--precision bf16` trains in it)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if not training and cpu_has_native_bf16() else torch.float32
    try:
        return PRECISIONS[name]
    except KeyError:
        raise StvsrError(f"unknown precision {name!r}; use auto, {', '.join(PRECISIONS)}") from None


class Upscaler:
    """Runs the network (MEGAN or Zooming Slow-Mo) on frames of any size.

    Call it with a window of n + 1 LR frames, (B, n+1, 3, H, W) or
    (n+1, 3, H, W), as floats in [0, 1] or uint8 in [0, 255], on any device.
    It returns the 2n + 1 HR frames, (B, 2n+1, 3, 4H, 4W) (or unbatched),
    float32 in [0, 1] on `self.device`. Sizes the network cannot take are
    padded by repeating the edge pixels and cropped back after; reduced
    precision runs under autocast, with the weights kept in fp32.

    With `self_ensemble`, each window runs eight times, once for each
    rotation and flip of its frames (`SYMMETRIES`), and the outputs, turned
    back, are averaged: 8x the time, for a little more detail (measured in
    weights/README.md, "Self-ensemble").
    """

    def __init__(self, model: Network, device: str = "auto", precision: str = "auto",
                 self_ensemble: bool = False) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.self_ensemble = self_ensemble

    @classmethod
    def from_weights(cls, path: str | os.PathLike, device: str = "auto", precision: str = "auto",
                     self_ensemble: bool = False) -> Upscaler:
        return cls(load_model(path), device=device, precision=precision, self_ensemble=self_ensemble)

    @property
    def input_frames(self) -> int:
        return self.model.config.input_frames

    @property
    def output_frames(self) -> int:
        return self.model.config.output_frames

    @property
    def scale(self) -> int:
        return self.model.scale

    def __call__(self, frames: Tensor) -> Tensor:
        unbatched = frames.dim() == 4
        if unbatched:
            frames = frames.unsqueeze(0)
        if frames.dim() != 5 or frames.shape[1] != self.input_frames or frames.shape[2] != 3:
            raise ValueError(
                f"expected frames shaped (B, {self.input_frames}, 3, H, W) or ({self.input_frames}, 3, H, W), "
                f"got {tuple(frames.shape)}"
            )
        frames = frames.to(self.device, non_blocking=True)
        frames = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
        with torch.inference_mode():
            if not self.self_ensemble:
                output = self._run(frames)
            else:  # summed in place: the sum and one pass (with its turned copy) at a time
                output = None
                for quarter_turns, flip in SYMMETRIES:
                    turned = turn_back(self._run(turn(frames, quarter_turns, flip)), quarter_turns, flip)
                    output = turned if output is None else output.add_(turned)
                output = output.div_(len(SYMMETRIES))
        return output[0] if unbatched else output

    def _run(self, frames: Tensor) -> Tensor:
        """One pass: (B, n+1, 3, H, W) floats in [0, 1] -> (B, 2n+1, 3, scale*H, scale*W)."""
        b, n1, _, h, w = frames.shape
        multiple = self.model.size_multiple
        pad_h, pad_w = -h % multiple, -w % multiple
        if pad_h or pad_w:
            frames = F.pad(frames.flatten(0, 1), (0, pad_w, 0, pad_h), mode="replicate").unflatten(0, (b, n1))

        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32 else nullcontext()
        )
        with autocast:
            return self.model(frames)[..., : h * self.scale, : w * self.scale].float().clamp_(0, 1)
