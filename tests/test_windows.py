"""The window and stitch arithmetic, over many lengths and cut patterns."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stvsr_cli.windows import DEFAULT_SCENE_THRESHOLD, Emit, Stitcher, Window, WindowPlanner, plan, scene_change


def ideal_network(window: Window) -> torch.Tensor:
    """A perfect interpolator for frames whose value is their time: slot k
    is the mean of the two input frames around time k / 2 (one value per
    slot, shaped as a 1x1x1 'frame')."""
    values = [float(v) for v in window.frames]
    n = len(values)
    slots = [(values[k // 2] + values[min((k + 1) // 2, n - 1)]) / 2 for k in range(2 * n - 1)]
    return torch.tensor(slots, dtype=torch.float64).view(-1, 1, 1, 1)


def run(length: int, cuts: set[int], input_frames: int = 4) -> tuple[list[float], list[Window]]:
    stitcher = Stitcher()
    outputs, windows = [], []
    for item in plan(range(length), cuts, input_frames):
        if isinstance(item, Window):
            windows.append(item)
            stitcher.add(item.key, ideal_network(item))
        else:
            outputs.append(float(stitcher.emit(item)))
    return outputs, windows


def expected(length: int, cuts: set[int]) -> list[float]:
    """Input i gives outputs 2i (itself) and 2i + 1 (halfway to i + 1, or a
    repeat of i when i is the last frame of its shot)."""
    out = []
    for i in range(length):
        out.append(float(i))
        shot_ends = i == length - 1 or (i + 1) in cuts
        out.append(float(i) if shot_ends else i + 0.5)
    return out


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 60), data=st.data())
def test_every_input_gives_two_outputs_in_order_and_cuts_are_not_blended(length, data):
    cuts = set(data.draw(st.lists(st.integers(1, max(1, length - 1)), max_size=6))) if length > 1 else set()
    outputs, windows = run(length, cuts)
    assert len(outputs) == 2 * length
    assert outputs == expected(length, cuts)
    shot_of = [sum(1 for c in cuts if c <= i) for i in range(length)]
    for window in windows:
        assert len({shot_of[f] for f in window.frames}) == 1, "a window crosses a scene cut"


@settings(max_examples=100, deadline=None)
@given(length=st.integers(4, 80))
def test_outputs_come_from_the_middle_of_windows_away_from_shot_edges(length):
    planner = WindowPlanner(4)
    items = []
    for i in range(length):
        items += planner.push(i)
        assert len(planner._frames) <= 5, "the planner holds more frames than a window needs"
    items += planner.finish()
    emits = [item for item in items if isinstance(item, Emit)]
    windows = [item for item in items if isinstance(item, Window)]
    # One window per two input frames, plus at most one to end on the last frame.
    assert len(windows) == (length - 1) // 2
    for index, emit in enumerate(emits):
        assert abs(sum(weight for _, _, weight in emit.sources) - 1) < 1e-12
        t = index / 2
        if 1 <= t <= length - 2:
            # context on both sides: never an edge slot of its window
            assert all(0 < slot < 6 for _, slot, _ in emit.sources), (t, emit)


def test_a_single_frame_gives_two_copies_of_itself():
    outputs, windows = run(1, set())
    assert outputs == [0.0, 0.0]
    assert [window.frames for window in windows] == [(0, 0, 0, 0)]


def test_short_shots_keep_real_frames_in_the_middle_of_the_window():
    _, (window,) = run(2, set())
    assert window.frames == (0, 0, 1, 1)
    _, (window,) = run(3, set())
    assert window.frames == (0, 1, 2, 2)


def test_windows_overlap_by_two_frames_and_the_last_ends_on_the_last_frame():
    _, windows = run(9, set())
    assert [w.frames for w in windows] == [(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7), (5, 6, 7, 8)]


def test_other_window_sizes_work():
    for size in (2, 3, 5, 6):
        for length in range(1, 20):
            assert run(length, set(), size)[0] == expected(length, set())


def test_scene_change_is_small_for_motion_and_large_for_a_cut():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from videos import pattern

    def frame(index, scene=0):
        return torch.from_numpy(pattern(index, 64, 48, scene)).permute(2, 0, 1)

    assert scene_change(frame(0), frame(0)) == 0
    motion = scene_change(frame(3), frame(4))
    cut = scene_change(frame(3), frame(4, scene=1))
    assert motion < DEFAULT_SCENE_THRESHOLD < 0.5 < cut
