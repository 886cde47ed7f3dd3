"""Zooming Slow-Mo: the network, its released weights' layout, and every command with it.

The released weights are not downloaded: `zsm_state` makes random tensors
under their names and shapes, listed in tests/zsm_manifest.json. That
the network computes what ZSM's own code computes was checked outside the
test suite (see the README), since that code cannot be part of this one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from conftest import perturb_zero_initialised
from datasets import make_layout, write_frames
from stvsr_cli import PRESETS, ZSM, StvsrError, WeightsError, ZSMConfig, load_model, save_weights
from stvsr_cli.bench import BenchOptions, Workload, run_bench
from stvsr_cli.cli import main
from stvsr_cli.megan import BidirectionalDeformableConvLSTM
from stvsr_cli.train import TrainOptions, train
from stvsr_cli.weights import read_weights, weights_metadata
from stvsr_cli.zsm_weights import stvsr_name
from videos import make_video, read_video

MANIFEST = json.loads((Path(__file__).parent / "zsm_manifest.json").read_text())


def zsm_state(extraction_blocks: int = 5, residual_blocks: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the released weights' names and shapes, keeping the
    first `extraction_blocks` and `residual_blocks` residual blocks (fewer: faster)."""
    generator = torch.Generator().manual_seed(seed)
    kept = {"feature_extraction": extraction_blocks, "recon_trunk": residual_blocks}
    state = {}
    for name, shape in MANIFEST["tensors"].items():
        block = re.match(r"(feature_extraction|recon_trunk)\.(\d+)\.", name)
        if block and int(block[2]) >= kept[block[1]]:
            continue
        state[name] = torch.randn(shape, generator=generator) * 0.02
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A file laid out exactly as xiang2020zooming.pth: torch.save of a plain state dict."""
    path = tmp_path_factory.mktemp("zsm") / "xiang2020zooming.pth"
    torch.save(zsm_state(), path)
    return path


@pytest.fixture(scope="module")
def shallow(tmp_path_factory) -> Path:
    """The same layout with 1 + 2 residual blocks instead of 5 + 40, for the slower tests."""
    path = tmp_path_factory.mktemp("zsm") / "shallow.pth"
    torch.save(zsm_state(1, 2), path)
    return path


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    return result.exit_code, result.output


def one_error_line(args: list[str]) -> str:
    code, output = run(args)
    assert code == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stvsr: error: ") and "Traceback" not in output, output
    return lines[0]


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


# --- the released weights' layout ---------------------------------------------------------------


def test_the_released_layout_loads_every_tensor_once_and_runs(released):
    model = load_model(released)
    assert model.config == PRESETS["zsm"]
    ours = model.state_dict()
    theirs = torch.load(released, weights_only=True)
    assert len({stvsr_name(name) for name in theirs}) == len(theirs) == len(ours)
    for name, tensor in theirs.items():
        assert torch.equal(ours[stvsr_name(name)], tensor), name
    with torch.inference_mode():
        out = model(torch.rand(1, 4, 3, 8, 8))
    assert out.shape == (1, 7, 3, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("zsm", "ours"),
    [
        ("conv_first.weight", "extraction.shallow.weight"),
        ("feature_extraction.4.conv2.bias", "extraction.blocks.4.conv2.bias"),
        ("fea_L3_conv1.weight", "interpolation.interpolate.pyramid.down.1.0.weight"),
        # L1 is full size (levels[0]); _1 samples the first feature towards the second (align_a)
        ("pcd_align.L1_dcnpack_1.conv_offset_mask.weight", "interpolation.interpolate.align_a.levels.0.deform.offset_mask.weight"),
        ("pcd_align.L2_dcnpack_2.weight", "interpolation.interpolate.align_b.levels.1.deform.conv.weight"),
        ("pcd_align.L2_offset_conv2_1.bias", "interpolation.interpolate.align_a.levels.1.offset_cascade.bias"),
        ("pcd_align.L3_offset_conv2_2.bias", "interpolation.interpolate.align_b.levels.2.offset_out.bias"),
        ("pcd_align.L1_fea_conv_2.weight", "interpolation.interpolate.align_b.levels.0.feature_cascade.weight"),
        ("fusion.weight", "interpolation.interpolate.blend.weight"),
        ("ConvBLSTM.forward_net.pcd_h.fusion.bias", "convlstm.align_hidden.blend.bias"),
        ("ConvBLSTM.forward_net.pcd_c.pcd_align.L3_offset_conv1_1.weight", "convlstm.align_cell.align_a.levels.2.offset_in.weight"),
        ("ConvBLSTM.forward_net.cell_list.0.conv.weight", "convlstm.step.gates.weight"),
        ("ConvBLSTM.conv_1x1.weight", "convlstm.merge.weight"),
        ("recon_trunk.39.conv1.weight", "reconstruction.body.39.conv1.weight"),
        ("upconv2.bias", "reconstruction.upsample.3.bias"),
        ("conv_last.weight", "reconstruction.upsample.8.weight"),
        # not in the layout: the quarter-size level has no cascade; no batch norms anywhere
        ("pcd_align.L3_fea_conv_1.weight", None),
        ("pcd_align.L3_offset_conv3_1.weight", None),
        ("conv_first.running_mean", None),
    ],
)
def test_names_map_as_zsms_modules_mean_them(zsm, ours):
    assert stvsr_name(zsm) == ours


@pytest.mark.parametrize("container", ["DataParallel", "wrapped", "safetensors"])
def test_the_layout_is_recognised_in_other_containers_and_counts_its_blocks(tmp_path, container):
    state = zsm_state(extraction_blocks=1, residual_blocks=2)
    path = tmp_path / ("zsm.safetensors" if container == "safetensors" else "zsm.pth")
    if container == "DataParallel":
        torch.save({f"module.{name}": tensor for name, tensor in state.items()}, path)
    elif container == "wrapped":
        torch.save({"state_dict": state, "iteration": 600_000}, path)
    else:
        save_file(state, path)  # no stvsr metadata
    config, _ = read_weights(path)
    assert config == ZSMConfig(extraction_blocks=1, residual_blocks=2)
    assert load_model(path).num_parameters() == sum(t.numel() for t in state.values())


def test_damaged_zsm_weights_get_one_line_naming_the_problem(tmp_path):
    cases = {}
    state = zsm_state(1, 3)
    cases["gap"] = {k: v for k, v in state.items() if not k.startswith("recon_trunk.1.")}
    cases["extra"] = {**state, "pcd_align.L3_fea_conv_1.weight": torch.zeros(64, 128, 3, 3)}
    cases["narrow"] = {**state, "conv_first.weight": torch.zeros(32, 3, 3, 3)}
    cases["incomplete"] = {k: v for k, v in state.items() if k != "ConvBLSTM.forward_net.pcd_h.fusion.bias"}
    expected = {
        "gap": "lacks recon_trunk block(s) [1] of 0 to 2",
        "extra": "1 tensor(s) that layout does not have (pcd_align.L3_fea_conv_1.weight)",
        "narrow": "32 channels wide; stvsr reads ZSM's layout at the released width, 64",
        "incomplete": "missing 1 (convlstm.align_hidden.blend.bias). Is it a complete checkpoint",
    }
    for case, damaged in cases.items():
        torch.save(damaged, tmp_path / f"{case}.pth")
        assert expected[case] in one_error_line(["info", "--weights", str(tmp_path / f"{case}.pth")]), case


def test_an_unknown_layout_says_which_layouts_stvsr_reads(tmp_path, tiny_model):
    path = tmp_path / "bare.pth"
    torch.save(tiny_model.state_dict(), path)  # a state dict without stvsr's configuration
    line = one_error_line(["info", "--weights", str(path)])
    assert "in no layout stvsr knows: expected a stvsr checkpoint (with the 'config' and 'model' entries" in line
    assert "or Zooming Slow-Mo's released state dict (conv_first.weight" in line
    assert "its first names are attention.shallow.weight" in line


# --- the configuration travels in weights files --------------------------------------------------


def test_weights_files_name_their_network_and_older_files_are_megan(tmp_path, tiny_model):
    tiny_zsm = ZSM(ZSMConfig(channels=8, deformable_groups=2, extraction_blocks=1, residual_blocks=1))
    save_weights(tiny_zsm, tmp_path / "zsm.safetensors")
    assert weights_metadata(tmp_path / "zsm.safetensors")["network"] == "zsm"
    assert load_model(tmp_path / "zsm.safetensors").config == tiny_zsm.config

    # written before there were two networks: no "network" entry
    state = {name: tensor.contiguous() for name, tensor in tiny_model.state_dict().items()}
    config = json.dumps(tiny_model.config.to_dict())
    save_file(state, tmp_path / "old.safetensors", metadata={"format": "stvsr-megan", "config": config})
    assert load_model(tmp_path / "old.safetensors").config == PRESETS["tiny"]

    save_file(state, tmp_path / "new.safetensors", metadata={"format": "stvsr-megan", "config": config,
                                                             "network": "hyperzoom"})
    with pytest.raises(WeightsError, match="unknown network 'hyperzoom'.*upgrade stvsr"):
        load_model(tmp_path / "new.safetensors")


def test_info_shows_zooming_slow_mo_and_its_11_10_m_parameters(released):
    for source in (["--preset", "zsm"], ["--weights", str(released)]):
        code, output = run(["info", *source])
        assert code == 0, output
        assert "Zooming Slow-Mo" in output and "11,102,771 (11.10 M)" in output
        assert "residual_blocks" in output and "40" in output


# --- convert ------------------------------------------------------------------------------------


def test_convert_turns_the_released_layout_into_a_self_describing_file_and_round_trips(shallow, tmp_path):
    first, second = tmp_path / "zsm.safetensors", tmp_path / "again.safetensors"
    code, output = run(["convert", str(shallow), str(first)])
    assert code == 0, output
    assert f"wrote {first}: Zooming Slow-Mo, custom preset, " in output
    metadata = weights_metadata(first)
    assert metadata["network"] == "zsm" and metadata["trained"] == "yes"
    assert "Zooming Slow-Mo weights, converted from shallow.pth" in metadata["description"]
    x = torch.rand(1, 4, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(load_model(first)(x), load_model(shallow)(x))
    assert run(["convert", str(first), str(second)])[0] == 0  # a converted file converts to itself:
    assert weights_metadata(second) == metadata
    (config, state), (again, state_again) = read_weights(first), read_weights(second)
    assert again == config and state.keys() == state_again.keys()
    assert all(torch.equal(state[name], state_again[name]) for name in state)


def test_convert_keeps_a_checkpoints_network_and_a_files_precision(tmp_path, tiny_model):
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict(), "step": 3}, checkpoint)
    assert run(["convert", str(checkpoint), str(tmp_path / "from-checkpoint.safetensors")])[0] == 0
    assert load_model(tmp_path / "from-checkpoint.safetensors").config == PRESETS["tiny"]

    save_weights(tiny_model, tmp_path / "half.safetensors", dtype=torch.float16, description="kept")
    assert run(["convert", str(tmp_path / "half.safetensors"), str(tmp_path / "copy.safetensors")])[0] == 0
    _, state = read_weights(tmp_path / "copy.safetensors")
    _, original = read_weights(tmp_path / "half.safetensors")
    assert all(torch.equal(state[name], tensor) and state[name].dtype == tensor.dtype for name, tensor in original.items())
    assert weights_metadata(tmp_path / "copy.safetensors")["description"] == "kept"


def test_convert_refuses_other_outputs_in_one_line(tmp_path, tiny_model):
    source = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, source)
    assert "name it *.safetensors" in one_error_line(["convert", str(source), str(tmp_path / "tiny.pth")])
    (tmp_path / "taken.safetensors").write_bytes(b"mine")
    assert "add --overwrite" in one_error_line(["convert", str(source), str(tmp_path / "taken.safetensors")])
    assert run(["convert", str(source), str(tmp_path / "taken.safetensors"), "--overwrite"])[0] == 0


# --- every command with Zooming Slow-Mo ----------------------------------------------------------


def test_upscale_a_video_with_the_released_layout(released, tmp_path):
    source = make_video(tmp_path / "in.mp4", frames=3, width=16, height=12)
    code, output = run(["upscale", str(source), str(tmp_path / "out.mp4"), "--weights", str(released),
                        "--device", "cpu", "--quiet"])
    assert code == 0, output
    video, _ = read_video(tmp_path / "out.mp4")
    assert len(video) == 6 and video[0].shape == (48, 64, 3)


def test_eval_scores_zsm_weights(shallow, tmp_path):
    write_frames(tmp_path / "clips" / "walk", 5, width=32, height=24)
    code, output = run(["eval", str(tmp_path / "clips"), "--weights", str(shallow), "--device", "cpu",
                        "--json", str(tmp_path / "scores.json"), "-q"])
    assert code == 0, output
    assert len(json.loads((tmp_path / "scores.json").read_text())["clips"][0]["frames"]["model"]) == 5


TRAIN = dict(iters=1, batch=1, crop=8, lr=1e-3, workers=0, device="cpu", quiet=True)


def test_train_fine_tunes_the_released_layout_and_resumes_it(shallow, tmp_path):
    data = [str(make_layout("clips", tmp_path))]
    tuned = train(TrainOptions(data=data, out=tmp_path / "tuned", init=shallow, **TRAIN))
    start = load_model(shallow).state_dict()
    assert isinstance(tuned.model, ZSM) and tuned.model.config == ZSMConfig(extraction_blocks=1, residual_blocks=2)
    assert any(not torch.equal(tensor, start[name]) for name, tensor in tuned.model.state_dict().items())
    assert weights_metadata(tmp_path / "tuned" / "last.safetensors")["network"] == "zsm"
    resumed = train(TrainOptions(data=data, out=tmp_path / "tuned", init=shallow, resume=True, **TRAIN))
    assert resumed.step == 1 and isinstance(resumed.model, ZSM)  # the checkpoint knows its network


def test_train_the_zsm_preset_without_megans_motion_prior(tmp_path):
    data = [str(make_layout("clips", tmp_path))]
    with pytest.raises(StvsrError, match="--motion-prior is MEGAN's; the Zooming Slow-Mo network has none"):
        train(TrainOptions(data=data, out=tmp_path / "flow", preset="zsm", motion_prior="flow", **TRAIN))
    fresh = train(TrainOptions(data=data, out=tmp_path / "fresh", preset="zsm", **TRAIN))
    assert fresh.model.config == PRESETS["zsm"]
    assert weights_metadata(tmp_path / "fresh" / "last.safetensors")["preset"] == "zsm"


def test_bench_times_the_zsm_preset_beside_megans():
    report = run_bench(BenchOptions(["zsm", "tiny"], [Workload(16, 16)], device="cpu", runs=1, deform=False,
                                    end_to_end=False))
    assert [m.preset for m in report.models] == ["zsm", "tiny"]
    assert report.models[0].window.gflop > 10 * report.models[1].window.gflop > 0
