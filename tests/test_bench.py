"""`stvsr bench` and its library: FLOP counting and the report, at tiny sizes (no timings are checked)."""

import json

import pytest
import torch
from click.testing import CliRunner

from stvsr_cli import MEGAN, PRESETS, StvsrError
from stvsr_cli.bench import (
    WORKLOADS, BenchOptions, Workload, count_flops, device_peak_tflops, run_bench, windows_needed,
)
from stvsr_cli.cli import main
from stvsr_cli.layers import ModulatedDeformConv
from stvsr_cli.layers.deform_cpu import cpu_backend


def test_deformable_convolution_flops_are_counted_by_formula_on_either_path():
    """FlopCounterMode does not know torchvision's op; both paths count 2 * Cin * Cout * 9 per output pixel."""
    layer = ModulatedDeformConv(16, offset_channels=8, groups=4)
    x, feature = torch.randn(2, 16, 5, 7), torch.randn(2, 8, 5, 7)
    offset_conv = 2 * 8 * (27 * 4) * 9 * 2 * 5 * 7
    deform = 2 * 16 * 16 * 9 * 2 * 5 * 7
    for backend in ("auto", "torchvision"):
        with cpu_backend(backend), count_flops(layer) as counts:
            layer(x, feature)
        assert counts == {"total": offset_conv + deform, "deform": deform}, backend


def test_network_flops_do_not_depend_on_the_deformable_path():
    model = MEGAN(PRESETS["tiny"]).eval()
    frames = torch.rand(1, 4, 3, 8, 12)
    totals = []
    for backend in ("auto", "torchvision"):
        with cpu_backend(backend), count_flops(model) as counts, torch.inference_mode():
            model(frames)
        totals.append(counts)
    assert totals[0] == totals[1]
    assert 0 < totals[0]["deform"] < totals[0]["total"]


def test_run_bench_reports_every_preset_with_consistent_derived_figures(monkeypatch):
    import stvsr_cli.inference as inference

    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)  # auto is fp32, as on a CPU without it
    report = run_bench(BenchOptions(["tiny"], [Workload(32, 24)], device="cpu", runs=1, warmup=1, end_to_end=False))
    (model,) = report.models
    assert model.preset == "tiny" and model.workload.lr_size == (6, 8) and model.precision == "float32"
    assert model.seconds_per_frame == pytest.approx(model.window.median_seconds / 4)
    assert model.fps == pytest.approx(1 / model.seconds_per_frame)
    assert model.conv_fraction == pytest.approx(model.window.gflops / model.conv.gflops)
    assert model.conv is model.references["float32"]
    assert model.peak_fraction is None and model.peak_memory > 0  # a CPU has no datasheet peak here
    assert report.deform is not None and report.deform.torchvision.gflop == report.deform.stvsr.gflop
    saved = json.loads(json.dumps(report.to_dict()))["models"][0]
    assert saved["preset"] == "tiny" and saved["end_to_end"] is None


def test_end_to_end_runs_the_whole_upscale_path_on_a_clip_with_audio():
    report = run_bench(BenchOptions(["tiny"], [Workload(48, 32)], device="cpu", runs=2, warmup=1, deform=False,
                                    clip_frames=6))
    (model,), (pipeline,) = report.models, report.pipelines
    assert (pipeline.input_frames, pipeline.output_frames, pipeline.windows) == (6, 12, 2)
    assert len(pipeline.seconds) == 2 and pipeline.fps == pytest.approx(12 / pipeline.median_seconds)
    # The network's share of the clip's time: its windows at the network-alone speed.
    assert pipeline.efficiency(model) == pytest.approx(2 * model.window.median_seconds / pipeline.median_seconds)
    saved = report.to_dict()["models"][0]["end_to_end"]
    assert saved["output_frames"] == 12 and saved["efficiency"] == pytest.approx(pipeline.efficiency(model))


def test_the_motion_prior_is_timed_without_and_with_it_side_by_side(tmp_path):
    path = tmp_path / "bench.json"
    args = ["bench", "--device", "cpu", "--preset", "tiny", "--size", "64x48", "--runs", "1", "--no-deform",
            "--model-only", "--motion-prior", "none", "--motion-prior", "flow", "--json", str(path)]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tiny +flow" in result.output
    without, with_prior = json.loads(path.read_text())["models"]
    assert (without["motion_prior"], with_prior["motion_prior"]) == (0, 1)
    assert without["prior_fraction"] is None and without["prior_seconds"] == []
    assert len(with_prior["prior_seconds"]) == 1 and 0 < with_prior["prior_fraction"] < 1


def test_fp32_and_auto_side_by_side_against_the_fp32_and_bf16_convolutions(tmp_path, monkeypatch):
    """On the CPU each row is compared with the plain convolution in fp32 and
    in bf16; auto is bf16 on a CPU with native bf16 (faked here)."""
    import stvsr_cli.inference as inference

    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    path = tmp_path / "bench.json"
    args = ["bench", "--device", "cpu", "--preset", "tiny", "--size", "32x24", "--runs", "1", "--no-deform",
            "--model-only", "--precision", "fp32", "--precision", "auto", "--json", str(path)]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "of fp32 conv" in result.output and "of bf16 conv" in result.output
    assert "plain 64-channel 3x3 convolution (channels-last)" in result.output
    fp32, auto = json.loads(path.read_text())["models"]
    assert (fp32["precision"], auto["precision"]) == ("float32", "bfloat16")
    for row in (fp32, auto):
        assert set(row["references"]) == {"float32", "bfloat16"}
        for name, reference in row["references"].items():
            assert row["conv_fractions"][name] == pytest.approx(row["window"]["gflops"] / reference["gflops"])
        assert row["conv"] == row["references"][row["precision"]]


@pytest.mark.parametrize("frames, windows", [(1, 1), (4, 1), (5, 2), (6, 2), (8, 3), (96, 47)])
def test_windows_needed_follows_the_planner(frames, windows):
    assert windows_needed(frames) == windows


def test_standard_workloads_by_name():
    assert Workload.parse("vid4") == WORKLOADS["vid4"] and WORKLOADS["vid4"].lr_size == (144, 180)
    assert Workload.parse("1080P").lr_size == (270, 480)
    assert str(WORKLOADS["1080p"]) == "1080p, 1920x1080 output (480x270 LR)"


@pytest.mark.parametrize(
    "name, dtype, peak",
    [
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.4),
        ("NVIDIA H100 PCIe", torch.bfloat16, 756.0),
        ("NVIDIA H100 80GB HBM3", torch.float32, 494.7),
        ("NVIDIA GeForce GTX 1080", torch.float16, None),
    ],
)
def test_device_peak_comes_from_the_table_by_name(monkeypatch, name, dtype, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert device_peak_tflops(torch.device("cuda"), dtype) == peak
    assert device_peak_tflops(torch.device("cpu"), dtype) is None


@pytest.mark.parametrize("text", ["640x361", "640", "wide x tall"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(StvsrError, match="size"):
        Workload.parse(text)


def test_cli_bench_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    args = ["bench", "--device", "cpu", "--preset", "tiny", "--size", "32x24", "--runs", "1", "--no-deform",
            "--frames", "4"]
    result = CliRunner().invoke(main, [*args, "--json", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "of fp32 conv" in result.output and "of network" in result.output
    saved = json.loads(path.read_text())
    assert saved["deform"] is None and saved["models"][0]["output_size"] == [32, 24]
    assert saved["models"][0]["end_to_end"]["output_frames"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu"], "unknown device"),
        (["--size", "33x24"], "multiples of 4"),
        (["--runs", "0"], "--runs"),
        (["--frames", "0"], "--frames"),
        (["--size", "4k"], "vid4 or 1080p"),
        (["--json", "/no/such/folder/bench.json"], "does not exist"),
    ],
)
def test_cli_bench_errors_are_one_line(args, message):
    result = CliRunner().invoke(main, ["bench", "--preset", "tiny", "--size", "32x24", *args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stvsr: error:") and message in lines[0], result.output
