"""`upscale_frames`, the frames -> windows -> network -> stitch path that
`stvsr upscale` and `stvsr eval` share, with a stand-in network whose output
is known: each output frame must show the time the plan says it shows."""

import pytest
import torch

from stvsr_cli.stream import upscale_frames


class LinearInTime:
    """Slot k of a window shows its inputs blended linearly at time k / 2,
    enlarged 4x by repeating pixels: a network that is exact on frames whose
    values change linearly in time."""

    input_frames = 4
    scale = 4

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:  # (B, 4, 3, h, w) -> (B, 7, 3, 4h, 4w)
        frames = frames.float()
        slots = [frames[:, k // 2] if k % 2 == 0 else (frames[:, k // 2] + frames[:, k // 2 + 1]) / 2 for k in range(7)]
        return torch.stack(slots, 1).repeat_interleave(4, -1).repeat_interleave(4, -2)


def frames_at(times, size=(3, 12, 20)):
    return [torch.full(size, t / 100) for t in times]


def shown_times(outputs) -> list[float]:
    return [round(frame.mean().item() * 100, 4) for frame in outputs]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 9, 12])
@pytest.mark.parametrize("batch", [1, 3])
def test_n_frames_give_2n_frames_at_the_half_frame_times_the_last_repeated(count, batch):
    outputs = list(upscale_frames(((f, False) for f in frames_at(range(count))), LinearInTime(), tile=0, batch=batch))
    expected = [k / 2 for k in range(2 * count - 1)] + [count - 1]
    assert shown_times(outputs) == pytest.approx(expected)
    assert outputs[0].shape == (3, 48, 80)


def test_a_scene_cut_repeats_the_frame_before_it():
    frames = frames_at(range(10))
    outputs = list(upscale_frames(((f, i == 5) for i, f in enumerate(frames)), LinearInTime(), tile=0))
    assert shown_times(outputs)[8:11] == pytest.approx([4, 4, 5])


@pytest.mark.parametrize("batch, tile", [(2, 0), (4, 0), (5, 8), (1, 8)])
def test_batches_and_tiles_give_the_frames_of_one_whole_window_at_a_time(batch, tile):
    generator = torch.Generator().manual_seed(0)
    frames = [torch.rand(3, 12, 20, generator=generator) for _ in range(15)]
    plain = torch.stack(list(upscale_frames(((f, i == 7) for i, f in enumerate(frames)), LinearInTime(), tile=0)))
    other = torch.stack(list(upscale_frames(((f, i == 7) for i, f in enumerate(frames)), LinearInTime(),
                                            tile=tile, overlap=2, batch=batch)))
    assert other.shape == plain.shape == (30, 3, 48, 80)
    torch.testing.assert_close(other, plain)


@pytest.mark.parametrize("seed", range(6))
def test_any_lengths_cuts_and_batches_give_the_frames_of_batch_1(seed):
    generator = torch.Generator().manual_seed(seed)
    count = int(torch.randint(1, 30, (1,), generator=generator))
    cuts = set(torch.randint(1, max(count, 2), (3,), generator=generator).tolist())
    frames = [torch.rand(3, 4, 4, generator=generator) for _ in range(count)]
    runs = [torch.stack(list(upscale_frames(((f, i in cuts) for i, f in enumerate(frames)), LinearInTime(),
                                            tile=0, batch=batch)))
            for batch in (1, 2, 3, 4)]
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0])


def test_input_is_pulled_only_as_windows_need_it():
    pulled = []

    def source():
        for i, frame in enumerate(frames_at(range(20))):
            pulled.append(i)
            yield frame, False

    outputs = upscale_frames(source(), LinearInTime(), tile=0)
    next(outputs)
    assert len(pulled) == 4  # the first window's frames, no more


def test_the_upscaler_and_the_stand_in_networks_have_the_interface_upscale_frames_needs():
    from stvsr_cli import MEGAN, PRESETS, Upscaler
    from stvsr_cli.inference import WindowUpscaler

    assert isinstance(Upscaler(MEGAN(PRESETS["tiny"]), device="cpu"), WindowUpscaler)
    assert isinstance(LinearInTime(), WindowUpscaler)
    assert not isinstance(object(), WindowUpscaler)
