"""`stvsr eval`: data layouts, frame counting, known scores, baselines, outputs, errors.

Clips are a few small generated PNG frames; stand-in networks with a known
output make the scores predictable, and the tiny shipped network checks the
command end to end.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import perturb_zero_initialised
from stvsr_cli import MEGAN, PRESETS, StvsrError, Upscaler, metrics, save_weights
from stvsr_cli.cli import main
from stvsr_cli.evaluate import (
    BASELINES,
    BLEND,
    FLOW,
    MCI,
    MODEL,
    REPEAT,
    EvalOptions,
    find_clips,
    score_clips,
    write_json,
)
from stvsr_cli.frames import make_lr
from videos import make_video, pattern


def write_clip(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    return folder


def moving(count: int, width: int = 48, height: int = 32) -> list[np.ndarray]:
    """A smooth pattern drifting 2 pixels a frame."""
    return [pattern(index, width, height) for index in range(count)]


def flat(count: int, level: int, width: int = 48, height: int = 32) -> list[np.ndarray]:
    return [np.full((height, width, 3), level, np.uint8) for _ in range(count)]


class Constant:
    """A stand-in network that outputs one grey level everywhere."""

    input_frames, scale = 4, 4

    def __init__(self, level: int) -> None:
        self.level = level

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:  # (B, 4, 3, h, w) -> (B, 7, 3, 4h, 4w)
        b, _, _, h, w = frames.shape
        return torch.full((b, 7, 3, 4 * h, 4 * w), self.level / 255)


class BicubicInTime:
    """A stand-in network: slot k shows its inputs blended linearly at time
    k / 2 and enlarged with bicubic, so it scores as the blend baseline when
    every output frame lands on the GT frame of its time."""

    input_frames, scale = 4, 4

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.float()
        slots = [frames[:, k // 2] if k % 2 == 0 else (frames[:, k // 2] + frames[:, k // 2 + 1]) / 2 for k in range(7)]
        out = torch.stack(slots, 1)  # (B, 7, 3, h, w)
        return F.interpolate(out.flatten(0, 1), scale_factor=4, mode="bicubic", align_corners=False).unflatten(0, out.shape[:2])


def score(data: Path, network, **options):
    return score_clips(find_clips(data, options.pop("lists", ())), network, EvalOptions(**options))


# --- known scores ------------------------------------------------------------------------------------


def test_a_known_error_gives_the_known_psnr_and_bicubic_is_exact_on_a_flat_clip(tmp_path):
    write_clip(tmp_path / "grey" / "GT", flat(7, 100))
    report = score(tmp_path, Constant(110), baselines=True)
    y_error = 10 * sum(metrics.Y_WEIGHTS) / 255  # 10 levels in R, G and B move Y by this much
    scores = report.mean(MODEL)
    assert scores.psnr_rgb == pytest.approx(20 * math.log10(255 / 10), abs=1e-5)  # frames are float32
    assert scores.psnr_y == pytest.approx(20 * math.log10(255 / y_error), abs=1e-5)
    assert [f.index for f in report.clips[0].frames[MODEL]] == list(range(7))
    for row in BASELINES:  # bicubic reproduces a flat picture exactly, and so does every way between frames
        assert report.mean(row).psnr_y == math.inf and report.mean(row).ssim_y == pytest.approx(1)
    # JSON has no infinity: a strict parser reads the file, with null for it.
    write_json(report, tmp_path / "r.json")
    strict = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert strict["mean"][BLEND]["all"]["psnr_y"] is None and strict["mean"][MODEL]["all"]["psnr_y"] > 0


def test_outputs_land_on_the_gt_frame_of_their_time(tmp_path):
    """A network exact in time scores as the blend baseline frame by frame, on
    reconstructed and interpolated frames: the stitch puts every output at
    the right GT index."""
    write_clip(tmp_path / "clip", moving(13))
    clip = score(tmp_path / "clip", BicubicInTime(), baselines=True).clips[0]
    model, blend = clip.frames[MODEL], clip.frames[BLEND]
    assert [f.index for f in model] == [f.index for f in blend] == list(range(13))
    for ours, theirs in zip(model, blend):
        assert ours.psnr_y == pytest.approx(theirs.psnr_y, abs=0.05), ours.index
        assert ours.ssim_y == pytest.approx(theirs.ssim_y, abs=1e-3), ours.index


def test_blend_beats_repeat_on_a_smoothly_moving_pattern_and_they_agree_on_inputs(tmp_path):
    write_clip(tmp_path / "clip", moving(9))
    clip = score(tmp_path, Constant(0), baselines=True).clips[0]
    assert clip.scores(BLEND, "interpolated").psnr_y > clip.scores(REPEAT, "interpolated").psnr_y + 3
    assert clip.scores(BLEND, "all").ssim_y > clip.scores(REPEAT, "all").ssim_y
    assert clip.scores(BLEND, "reconstructed") == clip.scores(REPEAT, "reconstructed")
    assert clip.scores(BLEND, "reconstructed").psnr_y > 30  # bicubic x4 of a smooth picture is close


def fast(count: int, width: int = 96, height: int = 64, step: int = 2) -> list[np.ndarray]:
    """A smooth random texture moving `step` GT pixels a frame to the right: the
    inputs are 2 * step / 4 LR pixels apart. (Much faster, and minterpolate
    takes the jump for a scene change and repeats a frame.)"""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((1, 3, height // 16 + 2, (width + step * count) // 16 + 2))).float()
    wide = F.interpolate(coarse, scale_factor=16, mode="bicubic", align_corners=False)[0, :, :height]
    frames = [wide[:, :, step * (count - i) : step * (count - i) + width] for i in range(count)]
    return [(f.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy() for f in frames]


def test_mci_puts_each_input_on_an_even_frame_and_interpolates_every_pair_to_the_last(tmp_path):
    """minterpolate's frame between inputs k and k + 1 must show GT frame 2k + 1,
    not 2k or 2k + 2 (a frame off), for every pair: the last pair checks the
    padding that keeps minterpolate from dropping the end, and the 24x16 LR
    frames the padding up to the 32 pixels minterpolate needs."""
    gt = fast(9)
    write_clip(tmp_path / "clip", gt)
    from stvsr_cli.evaluate import _MotionCompensated

    lr = [make_lr(torch.from_numpy(frame).permute(2, 0, 1).float() / 255) for frame in gt]
    interpolated = _MotionCompensated(find_clips(tmp_path)[0], 4)
    try:
        for k in range(4):
            between = interpolated.between(k)
            assert between.shape == lr[0].shape
            errors = [(between - lr[index]).abs().mean().item() for index in (2 * k, 2 * k + 1, 2 * k + 2)]
            assert errors[1] < min(errors[0], errors[2]) / 3, (k, errors)
    finally:
        interpolated.close()
    clip = score(tmp_path, Constant(0), baselines=True).clips[0]
    assert [f.index for f in clip.frames[MCI]] == list(range(9))


def test_motion_baselines_beat_the_blend_on_fast_motion(tmp_path):
    write_clip(tmp_path / "clip", fast(9, 192, 128, step=4))  # inputs 2 LR pixels apart
    clip = score(tmp_path, Constant(0), baselines=True).clips[0]
    blend = clip.scores(BLEND, "interpolated").psnr_y
    assert clip.scores(FLOW, "interpolated").psnr_y > blend + 3
    assert clip.scores(MCI, "interpolated").psnr_y > blend + 3
    for row in (MCI, FLOW):  # at the inputs' times every baseline is the bicubic input
        assert clip.scores(row, "reconstructed") == clip.scores(BLEND, "reconstructed")


# --- a video as DATA ------------------------------------------------------------------------------------


def decoded_frames(video: Path) -> list[np.ndarray]:
    """The frames as `stvsr upscale` decodes them (the file's own colour matrix)."""
    from stvsr_cli.decode import decode, probe

    return list(decode(probe(video)))


@pytest.mark.parametrize("count", [9, 10])
def test_a_video_scores_as_its_frames_written_as_a_clip(tmp_path, count):
    """`stvsr eval VIDEO`: the decoded frames are the ground truth, so it
    scores exactly what a folder of those frames scores; 2n frames lose the last."""
    video = make_video(tmp_path / "clip.mp4", frames=count, width=48, height=32)
    write_clip(tmp_path / "frames" / "clip", decoded_frames(video))
    from_video = score(video, BicubicInTime(), baselines=True)
    from_folder = score(tmp_path / "frames", BicubicInTime(), baselines=True)
    (clip,), (reference,) = from_video.clips, from_folder.clips
    assert (clip.name, clip.gt_frames, clip.inputs, clip.size) == ("clip", count, (count + 1) // 2, (48, 32))
    assert [f.index for f in clip.frames[MODEL]] == list(range(count - 1 + count % 2))
    for row in (MODEL, *BASELINES):
        for ours, theirs in zip(clip.frames[row], reference.frames[row], strict=True):
            assert ours.psnr_y == pytest.approx(theirs.psnr_y, abs=1e-4), (row, ours.index)


def test_the_command_on_a_video_prints_what_a_full_upscale_would_cost(tmp_path, tiny_weights):
    video = make_video(tmp_path / "mine.mp4", frames=7, width=48, height=32)
    code, output = run([str(video), "--weights", str(tiny_weights), "--baselines", "--json", str(tmp_path / "r.json")])
    assert code == 0, output
    assert "mine (7/7)" in output and MCI in output and FLOW in output
    assert "A full upscale of mine.mp4 (48x32 to 192x128, 7 frames to 14) would take about" in output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["clips"][0]["upscale_estimate_seconds"] > 0


def test_a_file_that_is_not_a_video_gets_one_line(tmp_path, tiny_weights):
    (tmp_path / "notes.txt").write_text("not a video")
    assert "notes.txt" in bad([str(tmp_path / "notes.txt")], tiny_weights)
    short = make_video(tmp_path / "short.mp4", frames=2)
    assert "needs at least 3" in bad([str(short)], tiny_weights)


# --- counting frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gt, scored", [(3, 3), (4, 3), (5, 5), (6, 5), (7, 7), (8, 7), (9, 9), (12, 11)])
def test_2n_plus_1_gt_frames_are_all_scored_and_2n_lose_the_last(tmp_path, gt, scored):
    write_clip(tmp_path / "clip", moving(gt))
    frames = score(tmp_path, Constant(0)).clips[0].frames[MODEL]
    assert [f.index for f in frames] == list(range(scored))
    assert [f.kind for f in frames[:3]] == ["reconstructed", "interpolated", "reconstructed"]


def test_progress_starts_at_zero_so_that_a_rate_can_be_measured(tmp_path):
    """The progress bar measures its rate from the first call: at 0 frames,
    before the first window, not at the first frame of its burst."""
    write_clip(tmp_path / "clip", moving(9))
    seen = []
    score_clips(find_clips(tmp_path), Constant(0), EvalOptions(), progress=lambda done, total: seen.append(done))
    assert seen == list(range(10))


def test_clips_shorter_than_3_frames_are_skipped_with_a_warning(tmp_path, caplog):
    write_clip(tmp_path / "a", moving(2))
    write_clip(tmp_path / "b", moving(3))
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        report = score(tmp_path, Constant(0))
    assert [clip.name for clip in report.clips] == ["b"] and report.skipped == ("a",)
    assert "skipped clip a" in caplog.text
    (tmp_path / "b" / "00002.png").unlink()
    with pytest.raises(StvsrError, match="3 GT frames"):
        score(tmp_path, Constant(0))


def test_sizes_not_a_multiple_of_4_are_cropped(tmp_path):
    write_clip(tmp_path / "clip", moving(3, width=50, height=35))
    assert score(tmp_path, Constant(0)).clips[0].size == (48, 32)


# --- layouts -----------------------------------------------------------------------------------------


def write_lr(folder: Path, gt: list[np.ndarray], every: bool) -> None:
    hr = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in gt]).float() / 255
    lr = make_lr(hr if every else hr[::2])
    write_clip(folder, [(f * 255).round().byte().permute(1, 2, 0).numpy() for f in lr])


def test_vid4_lr_folders_of_every_frame_or_of_the_inputs_give_the_scores_of_lr_made_from_gt(tmp_path):
    gt = moving(7)
    for name in ("made", "every", "inputs"):
        write_clip(tmp_path / name / "GT", gt)
    write_lr(tmp_path / "every" / "LR", gt, every=True)
    write_lr(tmp_path / "inputs" / "LR", gt, every=False)
    clips = {clip.name: clip for clip in score(tmp_path, BicubicInTime(), baselines=True).clips}
    assert [clips[name].lr_source for name in ("made", "every", "inputs")] == ["made from GT", "LR/", "LR/"]
    assert clips["every"].frames == clips["inputs"].frames == clips["made"].frames


def test_vid4_lr_frames_are_the_inputs(tmp_path):
    gt = moving(5)
    write_clip(tmp_path / "clip" / "GT", gt)
    write_clip(tmp_path / "clip" / "LR", flat(3, 0, 12, 8))  # black inputs: nothing like GT
    clip = score(tmp_path, BicubicInTime()).clips[0]
    assert clip.scores().psnr_y < 15


def test_a_folder_of_clip_folders_and_a_single_clip_folder(tmp_path):
    write_clip(tmp_path / "clips" / "shot10", moving(3))
    write_clip(tmp_path / "clips" / "shot2", moving(5))
    (tmp_path / "clips" / "notes").mkdir()  # no frames: not a clip
    assert [c.name for c in find_clips(tmp_path / "clips")] == ["shot2", "shot10"]
    assert [c.name for c in find_clips(tmp_path / "clips" / "shot2")] == ["shot2"]
    write_clip(tmp_path / "vid4" / "walk" / "GT", moving(3))
    assert [c.name for c in find_clips(tmp_path / "vid4" / "walk")] == ["walk"]


def make_vimeo(root: Path, ids: list[str]) -> Path:
    for index, sequence in enumerate(ids):
        folder = root / "sequences" / sequence
        folder.mkdir(parents=True)
        for frame, image in enumerate(moving(7 + index, 32, 16)[index:]):
            Image.fromarray(image).save(folder / f"im{frame + 1}.png")
    (root / "sep_testlist.txt").write_text("\n".join(ids) + "\n")
    (root / "fast_testset.txt").write_text(ids[0] + "\n")
    (root / "slow_testset.txt").write_text("\n".join(ids[1:]) + "\n")
    return root


def test_vimeo_septuplets_by_list_grouped_per_list(tmp_path):
    root = make_vimeo(tmp_path / "vimeo", ["00001/0001", "00001/0002", "00002/0001"])
    default = score(root, Constant(0))
    assert [(c.name, c.group, len(c.frames[MODEL])) for c in default.clips] == [
        ("00001/0001", "sep_testlist", 7), ("00001/0002", "sep_testlist", 7), ("00002/0001", "sep_testlist", 7)]
    split = score(root, Constant(0), lists=("fast_testset.txt", "slow_testset.txt"), save=tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").glob("*/*/00006.png")) == [
        "00001/0001/00006.png", "00001/0002/00006.png", "00002/0001/00006.png"]
    assert split.groups == ("fast_testset", "slow_testset")
    assert [c.name for c in split.clips if c.group == "slow_testset"] == ["00001/0002", "00002/0001"]
    assert split.mean(group="fast_testset") == split.clips[0].scores()


# --- the command ---------------------------------------------------------------------------------------


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["eval", *args, "--device", "cpu"], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_the_command_writes_table_json_plot_and_frames_that_scikit_image_scores_the_same(tmp_path):
    write_clip(tmp_path / "vid4" / "walk" / "GT", moving(8, 40, 28))
    write_clip(tmp_path / "vid4" / "city" / "GT", moving(5, 40, 28))
    code, output = run([str(tmp_path / "vid4"), "--baselines", "--json", str(tmp_path / "r.json"),
                        "--plot", str(tmp_path / "r.png"), "--save", str(tmp_path / "out")])
    assert code == 0, output
    assert "placeholder" not in output  # the shipped weights are trained
    for text in ("walk (7/8)", "city (5/5)", "mean of 2 clips", *BASELINES, "Scored 12 frames of 2 clips"):
        assert text in output
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows"] == [MODEL, BLEND, REPEAT, MCI, FLOW]
    walk = next(clip for clip in report["clips"] if clip["name"] == "walk")
    assert (walk["gt_frames"], walk["inputs"], walk["scored_frames"], walk["size"]) == (8, 4, 7, [40, 28])
    assert set(report["mean"][MODEL]) == {"all", "reconstructed", "interpolated"}

    saved = sorted((tmp_path / "out" / "walk").glob("*.png"))
    assert [p.name for p in saved] == [f"{i:05d}.png" for i in range(7)]
    for path, frame in zip(saved, walk["frames"][MODEL]):
        pred = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
        gt = torch.from_numpy(moving(8, 40, 28)[frame["index"]]).permute(2, 0, 1).float() / 255
        pred_y, gt_y = metrics.rgb_to_y(pred).numpy(), metrics.rgb_to_y(gt).numpy()
        reference = structural_similarity(pred_y, gt_y, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=255)
        assert frame["ssim_y"] == pytest.approx(reference, abs=1e-4)
        assert frame["psnr_y"] == pytest.approx(peak_signal_noise_ratio(gt_y, pred_y, data_range=255), abs=1e-6)


def test_a_network_in_memory_is_scored_the_same_as_from_its_file(tmp_path):
    write_clip(tmp_path / "clip", moving(5, 32, 24))
    model = MEGAN(PRESETS["tiny"])
    save_weights(model, tmp_path / "tiny.safetensors")
    in_memory = score(tmp_path / "clip", Upscaler(model, device="cpu"))
    code, output = run([str(tmp_path / "clip"), "--weights", str(tmp_path / "tiny.safetensors"),
                        "--json", str(tmp_path / "r.json"), "-q"])
    assert code == 0 and output == "", output
    from_file = json.loads((tmp_path / "r.json").read_text())
    assert from_file["mean"][MODEL]["all"]["psnr_y"] == pytest.approx(in_memory.mean().psnr_y, abs=1e-9)


def test_self_ensemble_is_scored_as_the_upscaler_with_it(tmp_path):
    write_clip(tmp_path / "clip", moving(5, 32, 24))
    model = MEGAN(PRESETS["tiny"])
    perturb_zero_initialised(model)  # so that turning the frames changes what the network does
    save_weights(model, tmp_path / "tiny.safetensors")
    plain = score(tmp_path / "clip", Upscaler(model, device="cpu", precision="fp32"))
    ensemble = score(tmp_path / "clip", Upscaler(model, device="cpu", precision="fp32", self_ensemble=True))
    assert ensemble.mean().psnr_y != plain.mean().psnr_y
    code, output = run([str(tmp_path / "clip"), "--weights", str(tmp_path / "tiny.safetensors"), "--precision", "fp32",
                        "--self-ensemble", "--json", str(tmp_path / "r.json"), "-q"])
    assert code == 0 and output == "", output
    from_file = json.loads((tmp_path / "r.json").read_text())
    assert from_file["self_ensemble"] is True
    assert from_file["mean"][MODEL]["all"]["psnr_y"] == pytest.approx(ensemble.mean().psnr_y, abs=1e-9)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(MEGAN(PRESETS["tiny"]), path)
    return path


def bad(args: list[str], weights: Path) -> str:
    code, output = run([*args, "--weights", str(weights)])
    assert code == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stvsr: error: "), output
    return lines[0]


def test_bad_data_gets_one_line_saying_what_to_do(tmp_path, tiny_weights):
    assert "does not exist" in bad([str(tmp_path / "missing")], tiny_weights)
    (tmp_path / "empty").mkdir()
    assert "no clips found" in bad([str(tmp_path / "empty")], tiny_weights)

    write_clip(tmp_path / "broken" / "clip", moving(3))
    (tmp_path / "broken" / "clip" / "00001.png").write_bytes(b"not an image")
    assert "00001.png: not a readable image" in bad([str(tmp_path / "broken")], tiny_weights)

    write_clip(tmp_path / "sizes" / "clip", moving(3))
    Image.fromarray(moving(1, 40, 32)[0]).save(tmp_path / "sizes" / "clip" / "00002.png")
    assert "one size" in bad([str(tmp_path / "sizes")], tiny_weights)

    write_clip(tmp_path / "lr" / "clip" / "GT", moving(5))
    write_clip(tmp_path / "lr" / "clip" / "LR", flat(2, 0, 12, 8))
    assert "LR holds 2 frames for 5 GT frames" in bad([str(tmp_path / "lr")], tiny_weights)
    write_clip(tmp_path / "lr" / "clip" / "LR", flat(3, 0, 10, 8))
    assert "need LR frames of 12x8" in bad([str(tmp_path / "lr")], tiny_weights)

    write_clip(tmp_path / "small" / "clip", moving(3, 8, 8))
    assert "too small" in bad([str(tmp_path / "small")], tiny_weights)
    assert "not a Vimeo-90K root" in bad([str(tmp_path / "sizes"), "--list", "fast_testset.txt"], tiny_weights)
    root = make_vimeo(tmp_path / "vimeo", ["00001/0001"])
    assert "no medium_testset.txt" in bad([str(root), "--list", "medium_testset.txt"], tiny_weights)
    assert "does not exist" in bad([str(root), "--json", str(tmp_path / "no" / "r.json")], tiny_weights)
