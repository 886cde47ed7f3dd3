"""The MEGAN network: block shapes, the whole forward pass, gradients, determinism, layout."""

import dataclasses

import pytest
import torch

from conftest import perturb_zero_initialised
from stvsr_cli import MEGAN, PRESETS, MEGANConfig, StvsrError
from stvsr_cli.megan import (
    BidirectionalDeformableConvLSTM,
    FrameFeatureInterpolation,
    LongRangeMemoryGraphAggregation,
    MemoryGraphLayer,
    ProgressiveFusionBlock,
    ProgressiveFusionReconstruction,
    ResidualNonLocalAttention,
)

C = 8  # block tests run at a tiny width


def test_attention_module_shape():
    out = ResidualNonLocalAttention(C, blocks=2, window=8)(torch.rand(3, 3, 12, 20))
    assert out.shape == (3, C, 12, 20)


def test_interpolation_makes_2n_plus_1_features_and_keeps_the_inputs():
    features = torch.randn(2, 4, C, 8, 12)
    out = FrameFeatureInterpolation(C, groups=2)(features)
    assert out.shape == (2, 7, C, 8, 12)
    assert torch.equal(out[:, 0::2], features)  # inputs at the even indices
    assert not torch.allclose(out[:, 1], out[:, 3])  # each new feature comes from its own pair


def test_convlstm_shape_and_both_directions_matter():
    lstm = BidirectionalDeformableConvLSTM(C, groups=2).eval()
    features = torch.randn(1, 7, C, 8, 8)
    out = lstm(features)
    assert out.shape == features.shape
    # The middle output hears from the frame before it only through the forward
    # pass, and from the frame after it only through the backward pass.
    for frame in (2, 4):
        changed = features.clone()
        changed[:, frame] += 1
        assert (lstm(changed)[:, 3] - out[:, 3]).abs().max() > 1e-6


def test_graph_layer_pairs_cover_every_ordered_pair_symmetrically():
    layer = MemoryGraphLayer(C, nodes=7)
    pair_of = layer.pair_of
    assert torch.equal(pair_of, pair_of.T)
    assert pair_of.unique().numel() == 7 * 8 // 2
    x = torch.randn(2, 7, C, 6, 5)
    assert layer(x).shape == x.shape


def test_graph_layer_is_eq_13():
    """E_p <- LeakyReLU(theta * sum_q A_pq E_q), A_pq = softmax_q(phi(|E_p - E_q|)), written out."""
    layer = MemoryGraphLayer(C, nodes=7)
    x = torch.randn(2, 7, C, 6, 5)
    rows = [torch.stack([layer.edge((x[:, p] - x[:, q]).abs()) for q in range(7)], 1) for p in range(7)]
    adjacency = torch.stack(rows, 1).squeeze(3).softmax(dim=2)  # (B, T, T, H, W)
    messages = torch.einsum("bpqhw,bqchw->bpchw", adjacency, x)
    expected = torch.nn.functional.leaky_relu(layer.theta(messages.flatten(0, 1)), 0.1).view_as(x)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_lmga_memory_is_fixed_at_inference_and_random_in_training():
    lmga = LongRangeMemoryGraphAggregation(C, frames=7, memory_size=4, graph_layers=2)
    lmga.eval()
    assert lmga.memory_indices().tolist() == [0, 2, 4, 6]
    lmga.train()
    draws = {tuple(lmga.memory_indices().tolist()) for _ in range(50)}
    assert len(draws) > 1
    assert all(len(set(d)) == 4 and list(d) == sorted(d) and max(d) < 7 for d in draws)
    x = torch.randn(2, 7, C, 6, 5)
    assert lmga(x).shape == x.shape


def test_progressive_fusion_shapes():
    x = torch.randn(2, 7, C, 6, 5)
    assert ProgressiveFusionBlock(C, frames=7)(x).shape == x.shape
    out = ProgressiveFusionReconstruction(C, frames=7, fusion_blocks=2, residual_blocks=2)(x)
    assert out.shape == (2, 7, 3, 24, 20)


WITH_PRIOR = dataclasses.replace(PRESETS["tiny"], image_residual=1, motion_prior=1)


@pytest.mark.parametrize("config", [PRESETS["tiny"], WITH_PRIOR], ids=["tiny", "tiny+prior"])
def test_on_the_cpu_every_convolution_sees_channels_last_maps_and_the_output_is_nchw(config):
    """Batch 2, so that slices of frames must be copied (in the same layout)."""
    model = MEGAN(config).eval()
    layouts = []
    hooks = [
        conv.register_forward_pre_hook(
            lambda module, inputs, name=name: layouts.append(
                (name, inputs[0].is_contiguous(memory_format=torch.channels_last))
            )
        )
        for name, conv in model.named_modules()
        if isinstance(conv, torch.nn.Conv2d)
    ]
    with torch.inference_mode():
        out = model(torch.rand(2, 4, 3, 12, 16))
    for hook in hooks:
        hook.remove()
    assert len(layouts) > 50
    assert [name for name, channels_last in layouts if not channels_last] == []
    assert out.is_contiguous()


@pytest.mark.parametrize(
    "config, size",
    [
        (PRESETS["tiny"], (20, 20)),  # 2 x 2 attention windows of 16
        # small's widths, motion prior and image residual; 2 x 3 attention windows
        (dataclasses.replace(PRESETS["small"], attention_window=8), (12, 20)),
    ],
    ids=["tiny", "small"],
)
def test_channels_last_gives_the_nchw_result(config, size, monkeypatch):
    """The layout changes only the order of the convolutions' sums: outputs
    agree within 1e-5, and so do the gradients of a training step."""
    torch.manual_seed(0)
    model = MEGAN(config)
    perturb_zero_initialised(model)
    x = torch.rand(2, 4, 3, *size)
    results = {}
    for channels_last in (True, False):
        monkeypatch.setattr(MEGAN, "channels_last_on_cpu", channels_last)
        model.zero_grad()
        torch.manual_seed(1)  # LMGA's random memory in training
        out = model.train()(x)
        out.square().mean().backward()
        with torch.inference_mode():
            inference = model.eval()(x)
        results[channels_last] = out.detach(), inference, [p.grad.clone() for p in model.parameters()]
    (out, inference, grads), (out_nchw, inference_nchw, grads_nchw) = results[True], results[False]
    torch.testing.assert_close(out, out_nchw, rtol=0, atol=1e-5)
    torch.testing.assert_close(inference, inference_nchw, rtol=0, atol=1e-5)
    scale = max(g.abs().max() for g in grads_nchw)
    for grad, grad_nchw in zip(grads, grads_nchw):
        torch.testing.assert_close(grad, grad_nchw, rtol=0, atol=1e-4 * scale)


def test_tiny_forward_shape(tiny_model):
    with torch.inference_mode():
        out = tiny_model(torch.rand(1, 4, 3, 36, 60))
    assert out.shape == (1, 7, 3, 144, 240)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(4, 4), (8, 44), (20, 12)])
def test_tiny_forward_shapes_for_other_multiples_of_four(tiny_model, size):
    with torch.inference_mode():
        out = tiny_model(torch.rand(2, 4, 3, *size))
    assert out.shape == (2, 7, 3, 4 * size[0], 4 * size[1])


def test_forward_refuses_wrong_shapes_in_words(tiny_model):
    with pytest.raises(ValueError, match="multiples of 4"):
        tiny_model(torch.rand(1, 4, 3, 13, 16))
    with pytest.raises(ValueError, match=r"\(B, 4, 3, H, W\)"):
        tiny_model(torch.rand(1, 3, 3, 16, 16))


def test_paper_preset_parameter_count_matches_the_paper():
    model = MEGAN(PRESETS["paper"])
    count = model.num_parameters()
    print(f"\nMEGAN paper preset: {count:,} parameters ({count / 1e6:.2f} M; the paper reports 10.7 M)")
    for stage, n in model.parameter_counts().items():
        print(f"  {stage:15s} {n:>10,}")
    assert abs(count - 10.7e6) / 10.7e6 < 0.05
    # The stages MEGAN shares with Zooming Slow-Mo have ZSM's reported sizes.
    assert abs(model.parameter_counts()["convlstm"] - 5.06e6) < 0.02e6


def test_every_parameter_gets_a_gradient():
    model = MEGAN(PRESETS["tiny"]).train()
    perturb_zero_initialised(model)  # zero-initialised layers would block the gradients behind them
    out = model(torch.rand(2, 4, 3, 16, 16))
    (out - torch.rand_like(out)).abs().mean().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_inference_is_bit_identical_on_cpu(tiny_model):
    perturb_zero_initialised(tiny_model)
    x = torch.rand(1, 4, 3, 20, 24)
    with torch.inference_mode():
        assert torch.equal(tiny_model(x), tiny_model(x.clone()))


def test_config_validation_is_in_words():
    with pytest.raises(StvsrError, match="multiple of deformable_groups"):
        MEGANConfig(channels=12, deformable_groups=8)
    with pytest.raises(StvsrError, match="memory_size"):
        MEGANConfig(memory_size=9)
    with pytest.raises(StvsrError, match="unknown preset 'huge'"):
        MEGANConfig.preset("huge")


def test_config_round_trips_through_a_dict():
    for config in PRESETS.values():
        assert type(config).from_dict(config.to_dict()) == config
    assert MEGANConfig.preset("paper") == PRESETS["paper"]
    with pytest.raises(StvsrError, match="preset 'zsm' is a Zooming Slow-Mo network, not MEGAN"):
        MEGANConfig.preset("zsm")
    with pytest.raises(StvsrError, match="newer stvsr"):
        MEGANConfig.from_dict({**PRESETS["tiny"].to_dict(), "wings": 2})


RESIDUAL = MEGANConfig(**{**PRESETS["tiny"].to_dict(), "image_residual": 1})


def test_image_residual_adds_bicubic_plus_blend_to_the_reconstruction():
    """The baseline: inputs enlarged with bicubic at the even indices, neighbours'
    means between them; with image_residual the network's output is added to it."""
    model = MEGAN(RESIDUAL).eval()
    frames = torch.rand(2, 4, 3, 8, 12)
    enlarged = torch.nn.functional.interpolate(frames.flatten(0, 1), scale_factor=4, mode="bicubic")
    enlarged = enlarged.view(2, 4, 3, 32, 48)
    baseline = model.baseline(frames)
    assert torch.equal(baseline[:, 0::2], enlarged)
    assert torch.allclose(baseline[:, 1::2], (enlarged[:, :-1] + enlarged[:, 1:]) / 2)
    plain = MEGAN(PRESETS["tiny"]).eval()
    plain.load_state_dict(model.state_dict())
    with torch.inference_mode():
        assert torch.allclose(model(frames), plain(frames) + baseline, atol=1e-6)


def test_image_residual_trains_every_parameter():
    model = MEGAN(RESIDUAL).train()
    perturb_zero_initialised(model)
    out = model(torch.rand(2, 4, 3, 16, 16))
    (out - torch.rand_like(out)).abs().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_image_residual_is_off_in_the_paper_preset_and_in_older_weights_files():
    assert PRESETS["paper"].image_residual == 0 and PRESETS["small"].image_residual == 1
    older = {k: v for k, v in PRESETS["paper"].to_dict().items() if k != "image_residual"}
    assert MEGANConfig.from_dict(older) == PRESETS["paper"]
    with pytest.raises(StvsrError, match="image_residual must be 0 or 1"):
        MEGANConfig(image_residual=2)
