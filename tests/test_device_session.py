"""tools/device_session.py, the prepared session for a lent GPU, tried as it runs there but on the CPU.

A GPU is lent rarely and briefly, so the script must work the first time:
here it runs without PyAV (the GPU machine has none) on a tiny package of
the layout `pack` makes, from tiny weights, for a few steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from stvsr_cli import MEGAN, PRESETS, load_model, save_weights

sys.path.insert(0, str(Path(__file__).parent))
from datasets import make_layout, write_frames  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "device_session.py"


def test_the_session_trains_scores_and_leaves_what_comes_back_without_pyav(tmp_path):
    package = tmp_path / "device"
    for index, name in enumerate(["bikes_shot1", "bikes_shot2", "bikes_shot3", "bikes_shot4", "bikes_shot5"]):
        write_frames(package / "train" / "clips" / name, 8, first=10 * index)
    make_layout("stills", tmp_path).rename(package / "train" / "images")
    (package / "train" / "bikes_again").mkdir()  # a link left by a trial elsewhere arrives dangling
    (package / "train" / "bikes_again" / "bikes_shot1").symlink_to(tmp_path / "elsewhere" / "bikes_shot1")
    for clip in ("val/fast/bikes_shot0", "val/bbb/bigbuckbunny_tail", "val/carphone/carphone"):
        write_frames(package / clip / "GT", 7, width=48, height=32)
    torch.manual_seed(0)
    save_weights(MEGAN(PRESETS["tiny"]), tmp_path / "tiny.safetensors", trained=True)
    out = tmp_path / "out"

    without_pyav = f"import runpy, sys; sys.modules['av'] = None; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", without_pyav, "run", str(package), "--out", str(out), "--device", "cpu",
         "--init", str(tmp_path / "tiny.safetensors"), "--minutes", "0.02", "--probe-steps", "3", "--batch", "1",
         "--crop", "8", "--score", "fast"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "probe:" in result.stdout and "done in" in result.stdout

    names = {path.name for path in out.iterdir()}
    assert names == {"device_small_seed31.safetensors", "log.jsonl", "options.json", "progress.png", "summary.json"}
    assert load_model(out / "device_small_seed31.safetensors").config == PRESETS["tiny"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["steps"] == summary["run"]["iters"] >= 1 and not summary["run"]["stopped"]
    assert set(summary["scores"]) == {"version 5", "new"}
    for label in summary["scores"]:
        assert set(summary["scores"][label]) == {"fast"}
        assert 0 < summary["scores"][label]["fast"]["all"]["psnr_y"] < 100
    options = json.loads((out / "options.json").read_text())["options"]
    assert any(spec.startswith("clips:") and spec.endswith("bikes_again") for spec in options["data"])
