"""Training: each data layout, the recipe's safety nets, checkpoints, resume, DDP, the command.

Everything runs the tiny preset on the CPU on generated data a few dozen
pixels across (LR crops of 8), so each test takes seconds.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from stvsr_cli import MEGAN, PRESETS, StvsrError, load_model, save_weights
from stvsr_cli.cli import main
from stvsr_cli.data import TrainingSet, open_source
from stvsr_cli.train import TrainOptions, charbonnier, load_checkpoint, train
from stvsr_cli.weights import weights_metadata

sys.path.insert(0, str(Path(__file__).parent))
from datasets import make_layout, write_frames  # noqa: E402

CROP = 8  # LR; HR crops are 32x32


def options(data, out, **overrides) -> TrainOptions:
    values = dict(data=[str(d) for d in data], out=out, iters=6, batch=2, crop=CROP, lr=2e-3, lr_min=1e-4,
                  log_every=2, save_every=3, workers=0, device="cpu", quiet=True)
    values.update(overrides)
    return TrainOptions(**values)


def fixed_loss(model: MEGAN, data: Path) -> float:
    samples = TrainingSet([open_source(data, CROP * 4)], CROP, seed=123)
    lr, hr = (torch.stack(x) for x in zip(*(samples.sample(i) for i in range(4))))
    with torch.no_grad():
        return float(charbonnier(model.eval()(lr), hr))


@pytest.mark.parametrize("kind", ["clips", "vimeo", "videos", "stills"])
def test_a_few_steps_on_each_layout_lower_the_loss(kind, tmp_path):
    data = make_layout(kind, tmp_path)
    assert open_source(data, CROP * 4).kind == kind
    start = tmp_path / "start.safetensors"
    save_weights(MEGAN(PRESETS["tiny"]), start)
    result = train(options([data], tmp_path / "run", init=start, iters=5, lr=3e-3, lr_min=3e-3))
    assert fixed_loss(result.model, data) < 0.8 * fixed_loss(load_model(start), data)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch):
    data = make_layout("clips", tmp_path)
    # log lines every 3 steps: the one at step 3 averages steps on both sides of the checkpoint
    straight = train(options([data], tmp_path / "straight", preset="tiny", iters=4, save_every=2, log_every=3))

    import stvsr_cli.train as training

    save = training.save_checkpoint

    def save_then_die(path, state, rng):
        save(path, state, rng)
        raise KeyboardInterrupt  # killed right after the checkpoint of step 2

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(options([data], tmp_path / "resumed", preset="tiny", iters=4, save_every=2, log_every=3))
    monkeypatch.setattr(training, "save_checkpoint", save)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 2
    # loader workers do not change the samples either
    resumed = train(options([data], tmp_path / "resumed", preset="tiny", iters=4, save_every=2, log_every=3,
                            resume=True, workers=1))

    assert resumed.step == straight.step == 4
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name

    def log(run):
        return [{k: v for k, v in json.loads(line).items() if k != "it_per_s"}
                for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]

    assert log("resumed") == log("straight")


def test_resume_refuses_a_changed_recipe_and_a_new_run_refuses_an_old_folder(tmp_path):
    data = make_layout("clips", tmp_path)
    train(options([data], tmp_path / "run", preset="tiny", iters=2))
    with pytest.raises(StvsrError, match=r"--iters 2 \(not 4\)"):
        train(options([data], tmp_path / "run", preset="tiny", iters=4, resume=True))
    with pytest.raises(StvsrError, match="already holds a run; add --resume"):
        train(options([data], tmp_path / "run", preset="tiny", iters=2))
    with pytest.raises(StvsrError, match="does not exist; start the run without --resume"):
        train(options([data], tmp_path / "new", preset="tiny", resume=True))


def test_resume_on_the_command_line_needs_only_the_run_folder(tmp_path, monkeypatch):
    """`stvsr train --out RUN --resume` continues with the DATA, recipe and
    validation the run started with, from any working directory; a recipe
    value given anew must still match."""
    data = make_layout("clips", tmp_path)
    write_frames(tmp_path / "val" / "clip", 7)  # --val val, relative
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # DATA and --val given relative to where the run starts
    args = ["train", "clips:" + data.name, "--out", str(run), "--preset", "tiny", "--iters", "4", "--batch", "1",
            "--crop", str(CROP), "--lr", "2e-3", "--seed", "5", "--save-every", "2", "--log-every", "2",
            "--val", "val", "--val-every", "2", "--workers", "0"]
    straight = CliRunner().invoke(main, [*args[:3], str(tmp_path / "straight"), *args[4:]])
    assert straight.exit_code == 0, straight.output

    import stvsr_cli.train as training

    save = training.save_checkpoint

    def save_then_die(path, state, rng):
        save(path, state, rng)
        raise KeyboardInterrupt  # stopped right after the checkpoint of step 2

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    assert CliRunner().invoke(main, args).exit_code != 0
    monkeypatch.setattr(training, "save_checkpoint", save)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    changed = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--iters", "8"])
    assert changed.exit_code == 1 and "--iters 4 (not 8)" in changed.output
    resumed = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained 4 steps" in resumed.output and "best validation PSNR-Y" in resumed.output
    a, b = load_model(tmp_path / "straight" / "last.safetensors"), load_model(run / "last.safetensors")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name

    nothing = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "nothing"), "--resume"])
    assert nothing.exit_code == 1
    assert nothing.output.strip() == (f"stvsr: error: --resume: {tmp_path / 'nothing'} holds no run (no options.json); "
                                      "give DATA and the run's options, or start a new run without --resume")
    no_data = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "new")])
    assert no_data.exit_code == 1 and "give at least one DATA source" in no_data.output


def test_stop_after_stops_cleanly_and_resume_finishes_as_an_uninterrupted_run(tmp_path):
    """--stop-after 1ms has passed once the first step is done: the run stops
    there with its checkpoint and weights, and --resume (without it) ends
    where an unstopped run ends, bit for bit, on the same schedule."""
    data = make_layout("clips", tmp_path)
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--preset", "tiny", "--iters", "4", "--batch", "1",
            "--crop", str(CROP), "--lr", "2e-3", "--save-every", "3", "--log-every", "2", "--workers", "0"]
    straight = CliRunner().invoke(main, [*args[:3], str(tmp_path / "straight"), *args[4:]])
    assert straight.exit_code == 0, straight.output

    stopped = CliRunner().invoke(main, [*args, "--stop-after", "0.001s"])
    assert stopped.exit_code == 0, stopped.output
    assert "stopped at step 1 of 4 (--stop-after; --resume continues)" in stopped.output
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 1
    assert weights_metadata(run / "last.safetensors")["description"] == "stvsr train: step 1 of 4, stopped by --stop-after"

    resumed = CliRunner().invoke(main, ["train", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0 and "trained 4 steps" in resumed.output, resumed.output
    a, b = load_model(tmp_path / "straight" / "last.safetensors"), load_model(run / "last.safetensors")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name

    for bad in ("10", "soon", "0s"):
        result = CliRunner().invoke(main, [*args[:3], str(tmp_path / "bad"), *args[4:], "--stop-after", bad])
        assert result.exit_code == 1
        assert result.output.strip().splitlines()[-1].startswith("stvsr: error:"), result.output
        assert "duration" in result.output


def test_motion_prior_is_added_to_init_weights_and_kept_by_the_run(tmp_path):
    """--motion-prior flow fine-tunes weights trained without the prior (it
    adds no parameters); the run's weights record it, and --resume keeps it."""
    data = make_layout("clips", tmp_path)
    start = tmp_path / "start.safetensors"
    save_weights(MEGAN(PRESETS["tiny"]), start)
    result = train(options([data], tmp_path / "run", init=start, motion_prior="flow", iters=2))
    assert result.model.config.motion_prior == 1
    assert load_model(tmp_path / "run" / "last.safetensors").config.motion_prior == 1
    with pytest.raises(StvsrError, match=r"--motion-prior flow \(not None\)"):
        train(options([data], tmp_path / "run", init=start, iters=2, resume=True))
    off = train(options([data], tmp_path / "off", preset="small", motion_prior="none", iters=1, crop=CROP))
    assert off.model.config.motion_prior == 0 and PRESETS["small"].motion_prior == 1
    with pytest.raises(StvsrError, match="--motion-prior must be one of none, flow"):
        train(options([data], tmp_path / "bad", preset="tiny", motion_prior="dis"))


def test_interp_weight_weighs_the_in_between_frames_of_the_loss():
    """--interp-weight W: the loss is the mean of the 7 frames' means, the
    in-between ones (1, 3, 5) counted W times; W = 1 is the plain mean."""
    from stvsr_cli.train import frame_weights

    target = torch.zeros(2, 7, 3, 4, 4)
    prediction = torch.arange(7.0).view(1, 7, 1, 1, 1).expand(2, 7, 3, 4, 4)  # frame t is off by t everywhere
    per_frame = torch.sqrt(torch.arange(7.0).square() + 1e-6)
    assert frame_weights(1.0) is None
    weights = frame_weights(3.0)
    assert weights.tolist() == [1, 3, 1, 3, 1, 3, 1]
    expected = (per_frame[0::2].sum() + 3 * per_frame[1::2].sum()) / (4 + 3 * 3)
    assert torch.allclose(charbonnier(prediction, target, 1e-3, weights), expected)
    assert torch.allclose(charbonnier(prediction, target, 1e-3, torch.ones(7)), charbonnier(prediction, target))


def test_interp_weight_is_part_of_the_recipe(tmp_path):
    """A run records --interp-weight, --resume refuses another value, and a
    checkpoint written before the option existed resumes as weight 1."""
    data = make_layout("clips", tmp_path)
    run = tmp_path / "run"
    train(options([data], run, preset="tiny", iters=2, save_every=2, interp_weight=2.0))
    assert load_checkpoint(run / "checkpoint.pt")["recipe"]["interp_weight"] == 2.0
    assert json.loads((run / "options.json").read_text())["options"]["interp_weight"] == 2.0
    with pytest.raises(StvsrError, match=r"--interp-weight 2.0 \(not 1.0\)"):
        train(options([data], run, preset="tiny", iters=4, save_every=2, resume=True))
    assert TrainOptions.resuming(run, iters=4).interp_weight == 2.0

    older = tmp_path / "older"
    train(options([data], older, preset="tiny", iters=2, save_every=2))
    checkpoint = load_checkpoint(older / "checkpoint.pt")
    del checkpoint["recipe"]["interp_weight"]
    torch.save(checkpoint, older / "checkpoint.pt")
    assert train(options([data], older, preset="tiny", iters=2, save_every=2, resume=True)).step == 2
    with pytest.raises(StvsrError, match=r"--interp-weight must be positive \(got 0.0\)"):
        options([data], tmp_path / "bad", preset="tiny", interp_weight=0.0)


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    data = make_layout("clips", tmp_path)
    run = tmp_path / "run"
    real_save = torch.save
    calls = []

    def disk_full_on_second_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_on_second_save)
    with pytest.raises(OSError, match="No space left"):
        train(options([data], run, preset="tiny", iters=4, save_every=2))
    monkeypatch.setattr(torch, "save", real_save)

    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert (run / "checkpoint.pt").stat().st_mode & 0o077 == 0o644 & ~_umask() & 0o077  # not mkstemp's 0600
    assert train(options([data], run, preset="tiny", iters=4, save_every=2, resume=True)).step == 4


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_non_finite_losses_are_skipped_and_too_many_stop_the_run(tmp_path, monkeypatch):
    data = make_layout("clips", tmp_path)
    import stvsr_cli.train as training

    calls = []

    def nan_on_second_step(prediction, target, eps=1e-3, frame_weights=None):
        calls.append(1)
        loss = charbonnier(prediction, target, eps, frame_weights)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(training, "charbonnier", nan_on_second_step)
    result = train(options([data], tmp_path / "one", preset="tiny", iters=3))
    assert result.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert json.loads((tmp_path / "one" / "log.jsonl").read_text().splitlines()[-1])["skipped_steps"] == 1

    monkeypatch.setattr(training, "charbonnier", lambda p, t, eps=1e-3, w=None: (p - t).sum() * float("inf"))
    with pytest.raises(StvsrError, match="3 steps in a row had a non-finite loss"):
        train(options([data], tmp_path / "many", preset="tiny", max_bad_steps=3))


def test_bf16_training_on_the_cpu_runs_and_keeps_close_to_fp32(tmp_path):
    """bf16 autocast on the CPU, asked for (auto stays fp32 there): the same
    samples, finite losses within a few percent of fp32's at every logged
    step, and weights that stay fp32. (On a CPU without native bf16 it is
    slow; whether it is faster on one that has it is measured there, not here.)"""
    data = make_layout("clips", tmp_path)
    runs = {precision: train(options([data], tmp_path / precision, preset="tiny", iters=4, precision=precision))
            for precision in ("fp32", "bf16")}
    losses = {
        precision: [json.loads(line)["loss"] for line in (tmp_path / precision / "log.jsonl").read_text().splitlines()]
        for precision in runs
    }
    assert len(losses["bf16"]) == len(losses["fp32"]) == 2
    for fp32, bf16 in zip(losses["fp32"], losses["bf16"]):
        assert math.isfinite(bf16) and abs(bf16 - fp32) < 0.05 * fp32, losses
    assert runs["bf16"].skipped_steps == 0
    assert all(p.dtype == torch.float32 for p in runs["bf16"].model.parameters())


def test_the_command_writes_the_run_folder(tmp_path):
    data = make_layout("clips", tmp_path)
    val = write_frames(tmp_path / "val" / "clip", 7)
    out = tmp_path / "run"
    args = ["train", str(data), "--out", str(out), "--preset", "tiny", "--iters", "4", "--batch", "1",
            "--crop", str(CROP), "--log-every", "2", "--val", str(val.parent), "--val-every", "2", "--workers", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "trained 4 steps" in result.output
    names = {p.name for p in out.iterdir()}
    assert names == {
        "checkpoint.pt", "last.safetensors", "best.safetensors", "log.jsonl", "progress.png", "options.json"
    }
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert all(math.isfinite(r["val_psnr_y"]) for r in records if "val_psnr_y" in r)
    assert (out / "progress.png").read_bytes().startswith(b"\x89PNG")
    assert load_model(out / "best.safetensors").config == PRESETS["tiny"]

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert again.output.strip().splitlines()[-1].startswith("stvsr: error:")


def test_bad_data_in_a_loader_worker_is_one_line(tmp_path):
    clip = write_frames(tmp_path / "clips" / "walk", 8)
    (clip / "00003.png").write_bytes(b"not a picture")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "clips"), "--out", str(tmp_path / "run"),
                                       "--preset", "tiny", "--iters", "2", "--batch", "2", "--crop", str(CROP),
                                       "--workers", "1"])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("stvsr: error:") and "00003.png: not a readable image" in last
    assert "Traceback" not in result.output


DDP_SCRIPT = """
import os, sys
import torch
from stvsr_cli.train import TrainOptions, train
# with a third argument, --stop-after: rank 0's clock decides for both (rank 1's own limit is an hour away)
stop_after = None if len(sys.argv) < 4 else 1e-3 if os.environ["RANK"] == "0" else 3600.0
result = train(TrainOptions(data=[sys.argv[1]], out=sys.argv[2], preset="tiny", iters=3, batch=2, crop=8,
                            lr=2e-3, workers=0, device="cpu", quiet=True, stop_after=stop_after))
torch.save(result.model.state_dict(), f"{sys.argv[2]}/rank{os.environ['RANK']}.pt")
"""


def test_two_processes_with_ddp_keep_identical_weights_and_stop_at_one_step(tmp_path):
    data = make_layout("clips", tmp_path)
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for run, *stop in ((out,), (tmp_path / "run_stopped", "stop")):
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(script), str(data), str(run), *stop],
            check=True, env=environment, capture_output=True, timeout=300,
        )
    first, second = (torch.load(out / f"rank{rank}.pt") for rank in (0, 1))
    torch.manual_seed(0)
    initial = MEGAN(PRESETS["tiny"]).state_dict()
    assert any(not torch.equal(first[name], initial[name]) for name in initial)  # it trained
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3
    first, second = (torch.load(tmp_path / "run_stopped" / f"rank{rank}.pt") for rank in (0, 1))
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert load_checkpoint(tmp_path / "run_stopped" / "checkpoint.pt")["step"] == 1


def test_an_empty_checkpoint_or_weights_file_is_one_clean_line(tmp_path):
    data = make_layout("clips", tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "empty.pt").write_bytes(b"")
    for args in (["--out", str(run), "--resume", "--preset", "tiny"], ["--out", str(tmp_path / "new"), "--init",
                                                                      str(tmp_path / "empty.pt")]):
        result = CliRunner().invoke(main, ["train", str(data), *args, "--iters", "2", "--crop", str(CROP),
                                           "--workers", "0", "--device", "cpu"])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines()[-1].startswith("stvsr: error: ") and "is empty (0 bytes)" in result.output
        assert "unexpected" not in result.output


def test_the_first_steps_measure_the_time_a_step_and_the_run(tmp_path, capsys, caplog, monkeypatch):
    data = make_layout("clips", tmp_path)
    monkeypatch.setattr("stvsr_cli.train._LONG_RUN", 0.0)  # as if the run would take more than a day
    with caplog.at_level("WARNING", logger="stvsr"):
        train(options([data], tmp_path / "run", preset="tiny", iters=5, quiet=False))
    measured = re.search(r"([\d.]+) s a step \(measured over the first steps\); the (\d+) steps left take about",
                         capsys.readouterr().err)
    assert measured and float(measured.group(1)) > 0 and measured.group(2) == "1"  # after steps 2 to 4 of 5
    assert [r.getMessage() for r in caplog.records if "on the CPU this run would take about" in r.getMessage()]


def test_a_cpu_run_of_more_than_a_day_is_warned_about(caplog):
    from rich.console import Console

    from stvsr_cli.train import _report_pace

    console = Console(quiet=True)
    with caplog.at_level("WARNING", logger="stvsr"):
        _report_pace(console, 5.0, 19_996, torch.device("cpu"))  # paper on a CPU: 28 hours
        _report_pace(console, 5.0, 1_000, torch.device("cpu"))
        _report_pace(console, 5.0, 19_996, torch.device("meta"))  # not a CPU: no warning
    assert [r.getMessage().split(";")[0] for r in caplog.records] == ["on the CPU this run would take about 1.2 days"]


def test_frame_folders_train_and_score_without_pyav_and_a_video_then_gets_one_line(tmp_path):
    """A GPU machine's image may lack PyAV: frames need no video decoder, and
    a video there says what is missing instead of a traceback."""
    data = make_layout("clips", tmp_path)
    val = write_frames(tmp_path / "val" / "clip" / "GT", 7)
    make_layout("videos", tmp_path)
    without_pyav = "import sys; sys.modules['av'] = None; from stvsr_cli.cli import main; main()"
    run = tmp_path / "run"
    train_args = ["train", str(data), "--out", str(run), "--preset", "tiny", "--iters", "2", "--batch", "1",
                  "--crop", str(CROP), "--workers", "0", "--device", "cpu"]
    eval_args = ["eval", str(val.parent.parent), "--weights", str(run / "last.safetensors"), "--device", "cpu",
                 "--json", str(tmp_path / "scores.json"), "-q"]
    video_args = ["eval", str(tmp_path / "videos" / "a.mp4"), "--weights", str(run / "last.safetensors")]
    results = [subprocess.run([sys.executable, "-c", without_pyav, *args], capture_output=True, text=True)
               for args in (train_args, eval_args, video_args)]
    for result in results[:2]:
        assert result.returncode == 0, result.stderr
    assert (run / "last.safetensors").exists()
    assert json.loads((tmp_path / "scores.json").read_text())["clips"][0]["name"] == "clip"
    assert results[2].returncode == 1
    assert results[2].stderr.strip() == (
        "stvsr: error: reading video files needs PyAV, which does not import here "
        "(import of av halted; None in sys.modules); install it (pip install av) or give folders of frames"
    )
