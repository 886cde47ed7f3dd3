"""Zooming Slow-Mo: the network.

That the network computes what ZSM's own code computes was checked outside
the test suite, since that code cannot be part of this one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import perturb_zero_initialised
from stvsr_cli import PRESETS, ZSM, StvsrError, ZSMConfig
from stvsr_cli.megan import BidirectionalDeformableConvLSTM

MANIFEST = json.loads((Path(__file__).parent / "zsm_manifest.json").read_text())


# --- the network --------------------------------------------------------------------------------


def test_the_zsm_preset_has_the_papers_parameters_stage_by_stage():
    model = ZSM(PRESETS["zsm"])
    assert model.num_parameters() == MANIFEST["parameters"] == 11_102_771  # "11.10 M" in the paper
    millions = {stage: round(count / 1e6, 2) for stage, count in model.parameter_counts().items()}
    # The paper's breakdown: extraction 0.37, interpolation PCD 2.22 (+ its pyramid and 1x1 blend),
    # deformable ConvLSTM 5.06, 40 residual blocks 2.95, upsampling 0.33.
    assert millions == {"extraction": 0.37, "interpolation": 2.38, "convlstm": 5.06, "reconstruction.body": 2.95,
                        "reconstruction.upsample": 0.33}


def test_tiny_zsm_makes_2n_plus_1_frames_and_refuses_wrong_shapes():
    model = ZSM(ZSMConfig(channels=8, deformable_groups=2, extraction_blocks=1, residual_blocks=1)).eval()
    with torch.inference_mode():
        assert model(torch.rand(2, 4, 3, 8, 12)).shape == (2, 7, 3, 32, 48)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 4, 3, 10, 12))
    with pytest.raises(StvsrError, match="multiple of deformable_groups"):
        ZSMConfig(channels=12, deformable_groups=8)


def test_zsm_order_in_the_convlstm_is_megans_with_the_blend_halves_swapped():
    """ZSM blends (input, state) where MEGAN blends (state, input): the same function
    once the two alignments and the halves of the 1x1 blend change places."""
    torch.manual_seed(0)
    megan_order = BidirectionalDeformableConvLSTM(8, groups=2, state_first=True).eval()
    perturb_zero_initialised(megan_order, scale=0.05)
    zsm_order = BidirectionalDeformableConvLSTM(8, groups=2, state_first=False).eval()
    state = megan_order.state_dict()
    swapped = {}
    for name, tensor in state.items():
        if ".align_a." in name or ".align_b." in name:
            name = name.replace(".align_a.", ".align_x.").replace(".align_b.", ".align_a.").replace(".align_x.", ".align_b.")
        elif name.endswith("blend.weight"):
            tensor = torch.cat(tensor.chunk(2, dim=1)[::-1], dim=1)
        swapped[name] = tensor
    zsm_order.load_state_dict(swapped)
    features = torch.randn(1, 7, 8, 8, 8)
    with torch.inference_mode():
        expected = megan_order(features)
        torch.testing.assert_close(zsm_order(features), expected, rtol=1e-5, atol=1e-6)
        zsm_order.load_state_dict(state)  # the same weights without the swap are another network
        assert (zsm_order(features) - expected).abs().max() > 1e-3


def test_zsm_aligns_the_hidden_state_by_sampling_the_input_first_as_its_code_does():
    """ZSM's pcd_h(input, state): its first alignment (_1, align_a) samples the input."""
    model = ZSM(ZSMConfig(channels=8, deformable_groups=2, extraction_blocks=1, residual_blocks=1)).eval()
    sampled = []
    full_size = model.convlstm.align_hidden.align_a.levels[0].deform
    handle = full_size.register_forward_hook(lambda module, inputs, output: sampled.append(inputs[0].clone()))
    features = []
    model.interpolation.register_forward_hook(lambda module, inputs, output: features.append(output))
    with torch.inference_mode():
        model(torch.rand(1, 4, 3, 8, 8))
    handle.remove()
    first_input = features[0][:, 0]  # the forward pass's first step; the state is still zero there
    torch.testing.assert_close(sampled[0][:1], first_input)
    assert sampled[0].abs().max() > 0
