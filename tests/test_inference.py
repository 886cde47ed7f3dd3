"""The inference contract: any size in, range [0, 1] out, device and precision."""

import dataclasses
from pathlib import Path

import pytest
import torch

from conftest import perturb_zero_initialised
from stvsr_cli import MEGAN, PRESETS, StvsrError, Upscaler, inference, save_weights
from stvsr_cli.inference import resolve_device, resolve_precision

WITH_PRIOR = dataclasses.replace(PRESETS["tiny"], image_residual=1, motion_prior=1)


@pytest.fixture
def upscaler(tiny_model) -> Upscaler:
    perturb_zero_initialised(tiny_model)
    return Upscaler(tiny_model, device="cpu", precision="fp32")


@pytest.mark.parametrize("size", [(13, 17), (1, 1), (6, 9), (36, 60)])
def test_any_size_is_padded_and_cropped(upscaler, size):
    out = upscaler(torch.rand(1, 4, 3, *size))
    assert out.shape == (1, 7, 3, 4 * size[0], 4 * size[1])
    assert out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


def test_sizes_the_network_takes_are_passed_through_unchanged(upscaler):
    x = torch.rand(2, 4, 3, 8, 12)
    with torch.inference_mode():
        expected = upscaler.model(x).clamp(0, 1)
    assert torch.equal(upscaler(x), expected)


def test_padding_only_touches_the_border(upscaler):
    """Far from the padded edge, an odd-sized frame gives what the full frame gives."""
    x = torch.rand(1, 4, 3, 16, 16)
    full, cropped = upscaler(x), upscaler(x[..., :15, :15])
    torch.testing.assert_close(cropped[..., :16, :16], full[..., :16, :16])


def test_unbatched_and_uint8_input(upscaler):
    x = torch.randint(0, 256, (4, 3, 9, 10), dtype=torch.uint8)
    out = upscaler(x)
    assert out.shape == (7, 3, 36, 40)
    torch.testing.assert_close(out, upscaler(x.float().unsqueeze(0) / 255)[0])


def test_wrong_window_length_is_refused(upscaler):
    with pytest.raises(ValueError, match=r"\(B, 4, 3, H, W\)"):
        upscaler(torch.rand(1, 5, 3, 8, 8))


class Ramp(torch.nn.Module):
    """A stand-in network whose output depends only on where a pixel is: a
    ramp from 0 at the left edge to 1 at the right, whatever the frames."""

    config = PRESETS["tiny"]  # 4 frames in, 7 out
    scale, size_multiple = 4, 4

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (B, 4, 3, h, w) -> (B, 7, 3, 4h, 4w)
        b, _, _, h, w = frames.shape
        return torch.linspace(0, 1, 4 * w).repeat(b, 7, 3, 4 * h, 1)


def test_self_ensemble_averages_the_eight_rotations_and_flips():
    """A ramp turned back from each of the 8 symmetries of the square points
    left, right, up and down twice each: their mean is 0.5 everywhere."""
    x = torch.rand(1, 4, 3, 8, 8)
    plain = Upscaler(Ramp(), device="cpu", precision="fp32")
    ensemble = Upscaler(Ramp(), device="cpu", precision="fp32", self_ensemble=True)
    torch.testing.assert_close(plain(x), torch.linspace(0, 1, 32).expand(1, 7, 3, 32, 32))
    torch.testing.assert_close(ensemble(x), torch.full((1, 7, 3, 32, 32), 0.5))


def test_self_ensemble_is_the_mean_of_the_network_on_each_turned_window(upscaler):
    """On a size that is padded differently when turned (13 x 18 becomes 16 x
    20, and 20 x 16 turned), each pass is cropped back before the mean."""
    x = torch.rand(2, 4, 3, 13, 18)
    expected = torch.zeros(2, 7, 3, 52, 72)
    for flip in (False, True):
        for quarter_turns in range(4):
            turned = x.flip(-1) if flip else x
            out = upscaler(turned.rot90(quarter_turns, (-2, -1))).rot90(-quarter_turns, (-2, -1))
            expected += (out.flip(-1) if flip else out) / 8
    ensemble = Upscaler(upscaler.model, device="cpu", precision="fp32", self_ensemble=True)
    torch.testing.assert_close(ensemble(x), expected)
    torch.testing.assert_close(ensemble(x[0]), expected[0])  # unbatched too


@pytest.mark.parametrize("config", [PRESETS["tiny"], WITH_PRIOR], ids=["tiny", "tiny+prior"])
def test_bf16_on_cpu_stays_close_to_fp32(config):
    """bf16 runs on any CPU (slowly without native bf16), convolutions and the
    deformable matrix multiplies in bf16, the sampling in fp32."""
    model = MEGAN(config).eval()
    perturb_zero_initialised(model)
    x = torch.rand(1, 4, 3, 12, 12)
    fp32 = Upscaler(model, device="cpu", precision="fp32")(x)
    bf16 = Upscaler(model, device="cpu", precision="bf16")(x)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() < 0.05


def test_from_weights(tmp_path, tiny_model):
    path = tmp_path / "w.safetensors"
    save_weights(tiny_model, path)
    upscaler = Upscaler.from_weights(path, device="cpu")
    assert upscaler.dtype == resolve_precision("auto", torch.device("cpu"))
    assert (upscaler.input_frames, upscaler.output_frames, upscaler.scale) == (4, 7, 4)


def test_device_and_precision_choices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    native = torch.bfloat16 if inference.cpu_has_native_bf16() else torch.float32
    assert resolve_precision("auto", torch.device("cpu")) == native
    assert resolve_precision("auto", torch.device("cpu"), training=True) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16  # on any CPU, when asked
    with pytest.raises(StvsrError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(StvsrError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize(
    "flags, native",
    [
        ({"avx2": True, "avx512_bf16": False, "amx_bf16": False}, False),  # AVX2 only (the EPYC these tests ran on)
        ({"avx512_f": True, "avx512_bw": True, "avx512_bf16": False}, False),  # AVX-512 without bf16: emulated
        ({"avx512_f": True, "avx512_bf16": True}, True),  # Zen 4, Cooper Lake
        ({"amx_tile": True, "amx_bf16": True, "avx512_bf16": True}, True),  # Sapphire Rapids
    ],
)
def test_auto_is_bf16_on_cpus_with_native_bf16_only(monkeypatch, flags, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags, raising=False)
    assert inference.cpu_has_native_bf16() == native
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("auto", cpu, training=True) == torch.float32


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="Linux's list of CPU flags")
def test_native_bf16_detection_agrees_with_the_kernels_cpu_flags(monkeypatch):
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    expected = "avx512_bf16" in flags or "amx_bf16" in flags
    assert inference.cpu_has_native_bf16() == expected
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # older PyTorch: read /proc/cpuinfo
    assert inference.cpu_has_native_bf16() == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_missing_gpu_says_what_to_do():
    with pytest.raises(StvsrError, match="--device cpu"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_output_matches_cpu(tiny_model):
    perturb_zero_initialised(tiny_model)
    x = torch.rand(1, 4, 3, 16, 20)
    cpu = Upscaler(tiny_model, device="cpu", precision="fp32")(x)
    gpu = Upscaler(tiny_model, device="cuda", precision="fp32")(x).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    assert resolve_precision("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
