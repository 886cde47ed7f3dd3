"""The classical motion prior (`stvsr_cli.motion`): warping, DIS flow, the
occlusion-aware in-between frame, and its use inside MEGAN."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import perturb_zero_initialised
from stvsr_cli import MEGAN, PRESETS, motion
from stvsr_cli.layers.deformable import ModulatedDeformConv


def texture(height: int = 48, width: int = 64, seed: int = 0, grain: int = 4) -> torch.Tensor:
    """(1, 3, H, W): random noise enlarged `grain` times with bicubic, something flow can lock on to."""
    noise = torch.rand(1, 3, height // grain + 3, width // grain + 3, generator=torch.Generator().manual_seed(seed))
    size = (height + 3 * grain, width + 3 * grain)
    return F.interpolate(noise, size=size, mode="bicubic", align_corners=False)[..., :height, :width]


def shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """The image's content moved by (dx, dy) pixels (edges wrap, tests look inside)."""
    return torch.roll(image, shifts=(dy, dx), dims=(-2, -1))


def constant_flow(dx: float, dy: float, height: int, width: int) -> torch.Tensor:
    flow = torch.zeros(1, 2, height, width)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def test_warp_by_a_known_translation_gives_the_exactly_shifted_frame():
    a = texture()
    b = shifted(a, 3, -2)  # a's content moved right 3 and up 2: a(x) = b(x + (3, -2))
    warped = motion.warp(b, constant_flow(3, -2, 48, 64))
    assert torch.allclose(warped[..., 4:-4, 4:-4], a[..., 4:-4, 4:-4], atol=1e-5)


def test_the_in_between_frame_of_a_known_translation_is_the_frame_shifted_halfway():
    a = texture()
    b = shifted(a, 4, -4)
    forward, backward = constant_flow(4, -4, 48, 64), constant_flow(-4, 4, 48, 64)
    middle = motion.interpolate(a, b, forward, backward)
    assert torch.allclose(middle[..., 6:-6, 6:-6], shifted(a, 2, -2)[..., 6:-6, 6:-6], atol=1e-5)
    # and a quarter of the way: Super SloMo's approximation holds for any t
    quarter = motion.interpolate(a, b, forward, backward, t=0.25)
    assert torch.allclose(quarter[..., 6:-6, 6:-6], shifted(a, 1, -1)[..., 6:-6, 6:-6], atol=1e-5)


def test_lr_flows_on_hr_frames_are_enlarged_and_scaled():
    a = texture(96, 128)
    b = shifted(a, 8, 4)
    lr_forward, lr_backward = constant_flow(2, 1, 24, 32), constant_flow(-2, -1, 24, 32)
    middle = motion.interpolate(a, b, lr_forward, lr_backward)
    assert torch.allclose(middle[..., 8:-8, 8:-8], shifted(a, 4, 2)[..., 8:-8, 8:-8], atol=1e-5)


def test_dis_recovers_a_translation_both_ways():
    a = texture(64, 96)
    b = shifted(a, 3, -2)
    flows = motion.estimate_flow(torch.cat([a, b]), torch.cat([b, a]))
    inside = flows[..., 12:-12, 12:-12].flatten(2).median(dim=2).values
    assert torch.allclose(inside, torch.tensor([[3.0, -2.0], [-3.0, 2.0]]), atol=0.1), inside


def test_flow_of_frames_smaller_than_a_dis_patch_has_their_size():
    a = texture(8, 12)
    flow = motion.estimate_flow(a, a)
    assert flow.shape == (1, 2, 8, 12) and flow.abs().max() < 0.5


def test_pair_flows_of_windows_are_forward_and_backward_per_neighbouring_pair():
    a = texture(32, 48)
    window = torch.stack([shifted(a, 2 * k, 0)[0] for k in range(4)])[None]  # (1, 4, 3, 32, 48)
    forward, backward = motion.pair_flows(window)
    assert forward.shape == backward.shape == (1, 3, 2, 32, 48)
    assert forward[0, :, 0, 8:-8, 8:-8].median() == pytest.approx(2, abs=0.1)
    assert backward[0, :, 0, 8:-8, 8:-8].median() == pytest.approx(-2, abs=0.1)


def band_background() -> torch.Tensor:
    columns = torch.linspace(0, 1, 40)
    return torch.stack([columns, columns.flip(0), (columns * 7).sin().abs()]).view(1, 3, 1, 40).expand(1, 3, 8, 40)


def band_scene(position: int) -> torch.Tensor:
    """(1, 3, 8, 40): a static background varying along x, and a flat band at columns position..position+5."""
    scene = band_background().clone()
    scene[..., position : position + 6] = torch.tensor([0.9, 0.1, 0.5]).view(1, 3, 1, 1)
    return scene


def band_flow(position: int, dx: float) -> torch.Tensor:
    flow = torch.zeros(1, 2, 8, 40)
    flow[:, 0, :, position : position + 6] = dx
    return flow


def test_occluded_areas_take_the_frame_that_sees_them():
    """A band moves from columns 10-15 to 18-23 over a static background, with
    its true flows. Halfway, columns 10-13 show background that only frame 1
    sees (frame 0 has the band there) and columns 20-23 background that only
    frame 0 sees (frame 1 has the band there): each must come from that frame
    alone, with no band in it, where a plain average of the two warped frames
    would make them half band."""
    frame0, frame1 = band_scene(10), band_scene(18)
    flow01, flow10 = band_flow(10, 8), band_flow(18, -8)
    middle = motion.interpolate(frame0, frame1, flow01, flow10)
    flow_t0, flow_t1 = motion.flows_to_time(flow01, flow10)
    warped0, warped1 = motion.warp(frame0, flow_t0), motion.warp(frame1, flow_t1)
    assert torch.allclose(middle[..., 10:14], warped1[..., 10:14], atol=1e-6)
    assert torch.allclose(middle[..., 20:24], warped0[..., 20:24], atol=1e-6)
    band = torch.tensor([0.9, 0.1, 0.5]).view(1, 3, 1, 1)
    for columns in (slice(10, 14), slice(20, 24)):
        assert (middle[..., columns] - band).abs().amax(dim=1).min() > 0.2  # no band in any pixel
        plain = (warped0 + warped1) / 2
        assert (plain[..., columns] - middle[..., columns]).abs().max() > 0.2  # what the occlusion test prevents
    # Far from the band both frames agree: the static background stays as it is.
    assert torch.allclose(middle[..., 30:], band_background()[..., 30:], atol=1e-6)


def test_occlusion_is_the_forward_backward_check():
    flow01, flow10 = band_flow(10, 8), band_flow(18, -8)
    occluded0 = motion.occlusion(flow01, flow10)[0, 0, 0]  # frame-0 pixels that frame 1 does not show
    # frame 0's background under the band's new place (18-23) is covered in frame 1
    assert occluded0[18:24].tolist() == [1.0] * 6
    assert occluded0[:18].sum() == 0 and occluded0[24:].sum() == 0  # the band itself moves consistently


def test_flow_guided_deformable_sampling_follows_the_flow():
    """With its offset head at zero (as it starts), a deformable convolution
    given a flow samples the input where the flow points: the same as an
    ordinary (half-weighted) convolution of the warped input."""
    torch.manual_seed(0)
    layer = ModulatedDeformConv(channels=4, offset_channels=4, groups=2)
    x = torch.rand(1, 4, 20, 24)
    flow = constant_flow(2, -1, 20, 24)
    ours = layer(x, torch.zeros(1, 4, 20, 24), flow)
    reference = F.conv2d(motion.warp(x, flow), layer.conv.weight * 0.5, padding=1) + layer.conv.bias.view(1, -1, 1, 1)
    assert torch.allclose(ours[..., 3:-3, 4:-4], reference[..., 3:-3, 4:-4], atol=1e-5)


def test_under_bf16_autocast_the_flow_is_added_to_the_offsets_in_fp32():
    """bf16 keeps 8 significant bits: a flow of 37.3 pixels would become
    37.25, every sample 0.05 pixel off (2e-4 off in this layer's output).
    The offsets and the flow are added in fp32, so under CPU autocast the
    layer still samples where the flow points (its matrix multiply runs in
    the dtype of x, fp32 here)."""
    torch.manual_seed(0)
    layer = ModulatedDeformConv(channels=4, offset_channels=4, groups=2)
    x = torch.linspace(0, 1, 96).expand(1, 4, 8, 96).contiguous()  # a ramp: a shifted sample changes the value
    flow = constant_flow(37.3, 0, 8, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = layer(x, torch.zeros(1, 4, 8, 96), flow)
    reference = F.conv2d(motion.warp(x, flow), layer.conv.weight * 0.5, padding=1) + layer.conv.bias.view(1, -1, 1, 1)
    inside = (..., slice(1, -1), slice(1, 50))  # where neither the map's edge nor the zero padding is sampled
    torch.testing.assert_close(mixed[inside], reference[inside], rtol=0, atol=1e-5)


PRIOR = dataclasses.replace(PRESETS["tiny"], image_residual=1, motion_prior=1)


def test_a_network_with_the_motion_prior_makes_in_between_frames_from_its_own_reconstructions():
    """With its correction at zero, the network's frames at the inputs' times
    are the bicubic inputs and each in-between frame is `motion.interpolate`
    of those two: on a translating texture it beats the plain blend."""
    torch.manual_seed(0)
    model = MEGAN(PRIOR).eval()
    last = model.reconstruction.upsample[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    hr = torch.stack([shifted(texture(128, 160, grain=16), 8 * k, 4 * k)[0] for k in range(7)])  # (7, 3, 128, 160)
    lr = F.interpolate(hr[0::2], scale_factor=0.25, mode="bicubic", antialias=True)[None]  # (1, 4, 3, 32, 40)
    with torch.no_grad():
        output = model(lr)[0]
        blend = model.baseline(lr)[0]
    assert torch.equal(output[0::2], blend[0::2])
    forward, backward = motion.pair_flows(lr)
    expected = motion.interpolate(output[0:6:2], output[2::2], forward[0], backward[0])
    assert torch.allclose(output[1::2], expected, atol=1e-6)
    inside = (..., slice(16, -16), slice(16, -16))
    error = (output[1::2] - hr[1::2])[inside].abs().mean()
    blend_error = (blend[1::2] - hr[1::2])[inside].abs().mean()
    assert error < blend_error / 2, (error, blend_error)


def test_the_motion_prior_adds_no_parameters_and_is_off_in_the_paper_preset():
    assert PRESETS["paper"].motion_prior == 0
    with_prior = MEGAN(PRIOR)
    without = MEGAN(dataclasses.replace(PRIOR, motion_prior=0))
    without.load_state_dict(with_prior.state_dict())  # strict: the same parameters
    x = torch.rand(1, 4, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(with_prior.eval()(x), without.eval()(x))


def test_a_network_with_the_motion_prior_trains_every_parameter():
    torch.manual_seed(0)
    model = MEGAN(PRIOR).train()
    perturb_zero_initialised(model)  # zero-initialised layers would block the gradients behind them
    model(torch.rand(1, 4, 3, 16, 16)).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing
