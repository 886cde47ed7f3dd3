"""The CPU deformable convolution against torchvision's, forward and backward.

Tolerances: in float64 the two agree to rounding (1e-9); in float32 to
rtol = atol = 1e-4 on values and gradients of order 1 to 10. Integer offsets
(zero at initialisation) give the same bilinear corners, hence the same
one-sided offset gradients, as torchvision.
"""

import pytest
import torch
import torchvision

from conftest import perturb_zero_initialised
from stvsr_cli import MEGAN, PRESETS
from stvsr_cli.layers import ModulatedDeformConv
from stvsr_cli.layers import deform_cpu
from stvsr_cli.layers.deform_cpu import cpu_backend, deform_conv2d, deform_conv2d_cpu

F32 = dict(rtol=1e-4, atol=1e-4)
F64 = dict(rtol=1e-9, atol=1e-9)

# (batch, in, out, H, W, groups, kernel, stride, padding, dilation)
CASES = {
    "paper call site: 64 channels, 8 groups": (2, 64, 64, 6, 7, 8, (3, 3), 1, 1, 1),
    "small preset: 32 channels, 4 groups": (1, 32, 32, 5, 9, 4, (3, 3), 1, 1, 1),
    "tiny preset: 8 channels, 2 groups": (2, 8, 8, 4, 4, 2, (3, 3), 1, 1, 1),
    "general: stride, padding, dilation, 3x2 kernel": (2, 6, 5, 9, 11, 3, (3, 2), (2, 1), (1, 0), (2, 1)),
    "one pixel": (1, 4, 3, 1, 1, 1, (3, 3), 1, 1, 1),
}


def _inputs(case, dtype, offset_scale=3.0, integer=False):
    n, cin, cout, h, w, groups, (kh, kw), stride, padding, dilation = case
    x = torch.randn(n, cin, h, w, dtype=dtype)
    weight = torch.randn(cout, cin, kh, kw, dtype=dtype) / (cin * kh * kw) ** 0.5
    bias = torch.randn(cout, dtype=dtype)
    out_size = _out_size(h, w, kh, kw, stride, padding, dilation)
    offset = torch.randn(n, 2 * groups * kh * kw, *out_size, dtype=dtype) * offset_scale
    if integer:
        offset = offset.round()
    mask = torch.rand(n, groups * kh * kw, *out_size, dtype=dtype)
    return [x, offset, weight, bias, mask], dict(stride=stride, padding=padding, dilation=dilation)


def _out_size(h, w, kh, kw, stride, padding, dilation):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def _forward_backward(fn, tensors, options):
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    x, offset, weight, bias, mask = tensors
    out = fn(x, offset, weight, bias, mask=mask, **options)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    return out.detach(), [t.grad for t in tensors]


NAMES = ["input", "offset", "weight", "bias", "mask"]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, F64), (torch.float32, F32)], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_torchvision_forward_and_backward(case, dtype, tolerance, layout):
    """Random fractional offsets up to several pixels: many taps land between
    pixels, across the border (blending with the zero padding) or far outside.
    A channels-last input (the network's on the CPU) gives a channels-last output."""
    tensors, options = _inputs(case, dtype)
    expected, expected_grads = _forward_backward(torchvision.ops.deform_conv2d, tensors, options)
    tensors[0] = tensors[0].contiguous(memory_format=layout)
    out, grads = _forward_backward(deform_conv2d_cpu, tensors, options)
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out, expected, **tolerance)
    for name, grad, expected_grad in zip(NAMES, grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, **tolerance, msg=lambda m: f"grad wrt {name}: {m}")


@pytest.mark.parametrize("offset_scale", [0.0, 2.0], ids=["zero", "integers"])
def test_integer_offsets_pick_torchvisions_corners(offset_scale):
    """Integer positions (zero offsets at initialisation, border taps exactly
    at -1) are where bilinear sampling has a kink; the one-sided offset
    gradients must be the ones torchvision takes, not the other side's."""
    case = CASES["paper call site: 64 channels, 8 groups"]
    tensors, options = _inputs(case, torch.float32, offset_scale, integer=True)
    expected, expected_grads = _forward_backward(torchvision.ops.deform_conv2d, tensors, options)
    out, grads = _forward_backward(deform_conv2d_cpu, tensors, options)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for name, grad, expected_grad in zip(NAMES, grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5, msg=lambda m: f"grad wrt {name}: {m}")


def test_without_mask_and_with_non_contiguous_inputs():
    tensors, options = _inputs(CASES["tiny preset: 8 channels, 2 groups"], torch.float64)
    x, offset, weight, bias, _ = tensors
    x_strided = x.transpose(2, 3).contiguous().transpose(2, 3)
    offset_strided = offset.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    expected = torchvision.ops.deform_conv2d(x, offset, weight, bias, **options)
    torch.testing.assert_close(deform_conv2d_cpu(x_strided, offset_strided, weight, bias, **options), expected, **F64)
    expected = torchvision.ops.deform_conv2d(x, offset, weight, None, **options)
    torch.testing.assert_close(deform_conv2d_cpu(x, offset, weight, None, **options), expected, **F64)


@pytest.mark.parametrize("chunk_bytes", [1, 40_000, deform_cpu.COLUMNS_CHUNK_BYTES], ids=["row", "rows", "default"])
def test_inference_mode_gives_the_same_result(monkeypatch, chunk_bytes):
    """Without autograd the fast path works in place, a few rows at a time
    (one row, a few, or all of this small map); the result is the same."""
    tensors = [t.requires_grad_() for t in _inputs(CASES["small preset: 32 channels, 4 groups"], torch.float32)[0]]
    x, offset, weight, bias, mask = tensors
    expected = deform_conv2d_cpu(x, offset, weight, bias, padding=1, mask=mask)
    monkeypatch.setattr(deform_cpu, "COLUMNS_CHUNK_BYTES", chunk_bytes)
    with torch.inference_mode():
        out = deform_conv2d_cpu(x, offset, weight, bias, padding=1, mask=mask)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_the_matrix_multiply_runs_in_the_dtype_asked_for(layout):
    """bf16 (as under CPU autocast): fp32 sampling, bf16 product and result,
    within bf16's rounding (8 bits) of the fp32 result; without autograd too."""
    tensors, options = _inputs(CASES["small preset: 32 channels, 4 groups"], torch.float32)
    x, offset, weight, bias, mask = tensors
    x = x.contiguous(memory_format=layout)
    expected = deform_conv2d_cpu(x, offset, weight, bias, mask=mask, **options)
    for grad_mode in (torch.enable_grad, torch.inference_mode):
        with grad_mode():
            out = deform_conv2d_cpu(x, offset, weight, bias, mask=mask, matmul_dtype=torch.bfloat16, **options)
        assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=layout)
        torch.testing.assert_close(out.float(), expected, rtol=0, atol=0.03 * expected.abs().max().item())


def test_dispatch_cpu_to_fast_path_and_the_rest_to_torchvision(monkeypatch):
    calls = []
    monkeypatch.setattr(torchvision.ops, "deform_conv2d", lambda *args: calls.append("torchvision") or "tv")
    monkeypatch.setattr(deform_cpu, "deform_conv2d_cpu", lambda *args: calls.append("fast") or "fast")
    x, offset, mask = torch.randn(1, 4, 5, 5), torch.randn(1, 18, 5, 5), torch.rand(1, 9, 5, 5)
    weight = torch.randn(4, 4, 3, 3)
    assert deform_conv2d(x, offset, weight, padding=1, mask=mask) == "fast"
    with cpu_backend("torchvision"):
        assert deform_conv2d(x, offset, weight, padding=1, mask=mask) == "tv"
    assert deform_conv2d(x.half(), offset.half(), weight.half(), padding=1, mask=mask.half()) == "tv"
    grouped = torch.randn(4, 2, 3, 3)  # torchvision's weight groups: not on the fast path
    assert deform_conv2d(x, offset, grouped, padding=1, mask=mask) == "tv"
    if torch.cuda.is_available():
        cuda = [t.cuda() for t in (x, offset, weight, mask)]
        assert deform_conv2d(*cuda[:3], padding=1, mask=cuda[3]) == "tv"
    assert calls == ["fast"] + ["torchvision"] * (4 if torch.cuda.is_available() else 3)


def test_bad_offset_shape_is_reported():
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(4, 4, 3, 3)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d_cpu(x, torch.randn(1, 17, 5, 5), weight, padding=1)


def test_layer_and_network_match_the_torchvision_backend():
    """The real call sites: ModulatedDeformConv with its sigmoid masks, and a
    whole tiny network with moving offsets, forward and backward."""
    layer = ModulatedDeformConv(16, offset_channels=8, groups=8)
    torch.nn.init.normal_(layer.offset_mask.weight, std=0.5)
    x, feature = torch.randn(2, 16, 8, 12), torch.randn(2, 8, 8, 12)
    with cpu_backend("torchvision"):
        expected = layer(x, feature)
    torch.testing.assert_close(layer(x, feature), expected, **F32)

    model = MEGAN(PRESETS["tiny"])
    perturb_zero_initialised(model, scale=0.05)
    frames = torch.rand(1, 4, 3, 16, 20)
    with cpu_backend("torchvision"):
        expected = model(frames)
        expected.square().mean().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = model(frames)
    out.square().mean().backward()
    torch.testing.assert_close(out, expected, **F32)
    for (name, p), expected_grad in zip(model.named_parameters(), expected_grads):
        torch.testing.assert_close(p.grad, expected_grad, rtol=1e-3, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        with cpu_backend("cuda-magic"):
            pass
