"""One prepared training session on a lent GPU machine, in one command.

A GPU is lent to a task only now and then, for about 15 minutes in all,
machine start included, and one command may run 10 minutes. That leaves
no room to debug there, so the whole session is this script, tried here on
the CPU first. The machine (see the device tool's KINDS.md) has PyTorch,
torchvision, OpenCV, click, rich, safetensors and Pillow, but no PyAV
and no imageio-ffmpeg, and only the checkout travels (64 MiB in all), so
the data goes as frame folders, which need neither.

Here, once (copies, not links: a link to ../shared would arrive dangling):

    python tools/device_session.py pack data/device

Then, on the machine, with `data/device` named in the run's `carry`:

    python3 tools/device_session.py run data/device --out "$OUT" --mode small --minutes 5

What `run` does, printing as it goes:

1. reports the machine (GPU, PyTorch, the packages the network needs);
2. a probe run of a few steps, which checks that training works there and
   measures the time a step;
3. one training run whose `--iters` fill `--minutes` at that pace, so the
   cosine schedule anneals to its end (`--stop-after` is only a backstop);
4. scores the new weights and version 5 (`weights/default.safetensors`) on
   the three validation sets, full frames, fp32 without TF32, as `stvsr
   eval --device cuda --precision fp32` would;
5. leaves in OUT what the device tool can bring back (at most 8 files of
   16 MiB): the weights in fp16 (split into parts of 15 MiB when larger;
   `cat NAME.part* > NAME` joins them), log.jsonl, options.json,
   progress.png and summary.json (every score).

Recipes (`--mode`):

- `small`: version 5's recipe (weights/README, run 11: the real clips with
  bikes shots 1 to 5 twice, the photographs, LR crops of 48, learning rate
  2e-4 to 1e-6) from version 5, at batch 16 instead of 4.
- `paper`: the `paper` preset as the paper trains it (batch 16, LR crops
  of 32, 1e-4 to 1e-7) on the same data plus the moving objects, from
  scratch or from `--init` (a previous session's weights, carried).

The scores decide nothing by themselves: weights ship only after `stvsr
eval` on the CPU here beats the default on every set (weights/README).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's stvsr_cli, not installed there

DEFAULT_WEIGHTS = ROOT / "weights" / "default.safetensors"
PART = 15 * 2**20  # bytes: the device tool brings back files of at most 16 MiB
TRAIN_CLIPS = ("bikes_shot1", "bikes_shot2", "bikes_shot3", "bikes_shot4", "bikes_shot5")
VALIDATION = {  # name: (folder under the package, what `pack` copies there)
    "carphone": ("val/carphone", "data/carphone"),
    "bbb": ("val/bbb", "data/val_bbb"),
    "fast": ("val/fast", "data/val_fast"),
}
QUICK_VALIDATION = ("val/fast/bikes_shot0/GT", "val/bbb/bigbuckbunny_tail/GT")  # `stvsr train --val`, as weights/README
RECIPES = {
    "small": dict(init=DEFAULT_WEIGHTS, batch=16, crop=48, lr=2e-4, lr_min=1e-6, objects=False),
    "paper": dict(preset="paper", batch=16, crop=32, lr=1e-4, lr_min=1e-7, objects=True),
}


# --- here: the data package ------------------------------------------------------------------------


def pack(destination: Path, shared: Path) -> None:
    """Copy the training and validation frames of the shipped weights' recipe into `destination`."""
    train_clips = shared / "data" / "train" / "clips"
    sources = {f"train/clips/{name}": train_clips / name for name in TRAIN_CLIPS}
    sources["train/clips/bigbuckbunny_head"] = ROOT / "data" / "split" / "clips" / "bigbuckbunny_head"
    sources["train/images"] = shared / "data" / "train" / "images"
    sources.update({folder: ROOT / source for folder, source in VALIDATION.values()})
    missing = [str(path) for path in sources.values() if not path.is_dir()]
    if missing:
        sys.exit(f"device_session: missing {', '.join(missing)}; make the data as weights/README.md says "
                 "(Data, versions 1 and 2) first")
    if destination.exists():
        shutil.rmtree(destination)
    for folder, source in sources.items():
        shutil.copytree(source, destination / folder, symlinks=False)
    size = sum(f.stat().st_size for f in destination.rglob("*") if f.is_file())
    print(f"packed {destination}: {size / 2**20:.1f} MiB (the checkout and this travel; 64 MiB at most)")


# --- there: the session ------------------------------------------------------------------------------


def run(package: Path, out: Path, mode: str, minutes: float, device: str, seed: int, init: Path | None,
        probe_steps: int, batch: int | None, crop: int | None, sets: list[str]) -> None:
    import torch

    from stvsr_cli import save_weights
    from stvsr_cli.evaluate import MODEL, EvalOptions, evaluate
    from stvsr_cli.train import TrainOptions, train

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    recipe = dict(RECIPES[mode])
    if init is not None:
        recipe.pop("preset", None)
        recipe["init"] = init
    recipe["batch"] = batch or recipe["batch"]
    recipe["crop"] = crop or recipe["crop"]
    summary: dict = {"mode": mode, "recipe": {k: str(v) if isinstance(v, Path) else v for k, v in recipe.items()},
                     "machine": _machine(torch, device)}
    print(json.dumps(summary["machine"], indent=1), flush=True)

    # The links give the bikes shots twice the weight, as in version 5's recipe (`clips:data/bikes_again`).
    again = package / "train" / "bikes_again"
    again.mkdir(exist_ok=True)
    for name in TRAIN_CLIPS:  # made anew: links from a run elsewhere (a trial here) arrive dangling
        link = again / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to((package / "train" / "clips" / name).resolve())
    data = [str(package / "train" / "clips"), f"clips:{again}", f"stills:{package / 'train' / 'images'}"]
    if recipe.pop("objects"):
        data.append(f"objects:{package / 'train' / 'images'}")
    val = [str(package / folder) for folder in QUICK_VALIDATION]
    common = dict(data=data, lr=recipe["lr"], lr_min=recipe["lr_min"], batch=recipe["batch"], crop=recipe["crop"],
                  seed=seed, device=device, workers=min(12, os.cpu_count() or 1), quiet=True,
                  **{k: recipe[k] for k in ("init", "preset") if k in recipe})

    # 2. The probe: does training run here, and how fast? Its first step (loaders, cuDNN's search) is not counted.
    with tempfile.TemporaryDirectory() as scratch:
        log_every = max(1, probe_steps // 3)
        train(TrainOptions(out=Path(scratch) / "probe", iters=probe_steps, log_every=log_every,
                           save_every=10**6, **common))
        lines = [json.loads(line) for line in (Path(scratch) / "probe" / "log.jsonl").read_text().splitlines()]
    rates = [line["it_per_s"] for line in lines if "it_per_s" in line][1:] or [lines[-1]["it_per_s"]]
    per_step = 1 / (sum(rates) / len(rates))
    iters = max(1, int(minutes * 60 / per_step))
    print(f"probe: {per_step:.3f} s a step; training {iters} steps in about {minutes:g} min "
          f"({time.monotonic() - started:.0f} s so far)", flush=True)
    summary["probe"] = {"steps": probe_steps, "seconds_per_step": per_step}

    # 3. The run.
    run_dir = Path(tempfile.mkdtemp(prefix="stvsr_device_")) / "run"
    result = train(TrainOptions(out=run_dir, iters=iters, val=val, val_windows=8, val_every=max(1, iters // 4),
                                save_every=10**6, log_every=max(1, iters // 50), stop_after=minutes * 60 * 1.25 + 60,
                                **common))
    summary["run"] = {"iters": iters, "steps": result.step, "stopped": result.stopped, "last_loss": result.loss,
                      "best_val_psnr_y": result.best_psnr, "minutes_so_far": (time.monotonic() - started) / 60}
    print(f"trained {result.step} of {iters} steps, last loss {result.loss}, "
          f"{(time.monotonic() - started) / 60:.1f} min so far", flush=True)
    name = f"device_{mode}_seed{seed}.safetensors"
    save_weights(result.model, out / name, torch.float16, trained=True,
                 description=f"tools/device_session.py --mode {mode}: {result.step} steps of batch {recipe['batch']} "
                             f"on {summary['machine']['device']}, from {recipe.get('init') or 'scratch'}")
    for file in ("log.jsonl", "options.json", "progress.png"):
        if (run_dir / file).exists():
            shutil.copy(run_dir / file, out / file)

    # 4. Scores, as `stvsr eval --precision fp32` (TF32 would differ from the CPU's fp32 in the third decimal).
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    summary["scores"] = {}
    for label, weights in (("version 5", DEFAULT_WEIGHTS), ("new", out / name)):
        for key in sets:
            folder = VALIDATION[key][0]
            report = evaluate(package / folder, EvalOptions(weights=weights, device=device, precision="fp32"))
            summary["scores"].setdefault(label, {})[key] = report.to_dict()["mean"][MODEL]  # as --json writes it
            _write(out / "summary.json", summary)
    _print_scores(summary["scores"])

    # 5. What comes back: files of at most 16 MiB.
    weights_file = out / name
    if weights_file.stat().st_size > PART:
        data_bytes = weights_file.read_bytes()
        for index in range(math.ceil(len(data_bytes) / PART)):
            (out / f"{name}.part{index}").write_bytes(data_bytes[index * PART:(index + 1) * PART])
        weights_file.unlink()
        print(f"{name} is in parts: cat {name}.part* > {name}")
    summary["minutes"] = (time.monotonic() - started) / 60
    _write(out / "summary.json", summary)
    print(f"done in {summary['minutes']:.1f} min; OUT holds {sorted(p.name for p in out.iterdir())}")


def _machine(torch, device: str) -> dict:
    import cv2
    import torchvision

    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "opencv": cv2.__version__, "cpus": os.cpu_count(), "device": device}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit("device_session: no CUDA device is visible; give --device cpu to try the script here")
        info["device"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["driver"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as error:  # only a report: never worth the session
            info["driver"] = f"nvidia-smi: {error}"
    return info


def _print_scores(scores: dict) -> None:
    print("PSNR-Y all / interpolated / reconstructed, SSIM-Y all (fp32):")
    for key in [key for key in VALIDATION if any(key in by_set for by_set in scores.values())]:
        cells = []
        for label in scores:
            if key in scores[label]:
                s = scores[label][key]
                cells.append(f"{label} {s['all']['psnr_y']:.3f} / {s['interpolated']['psnr_y']:.3f} / "
                             f"{s['reconstructed']['psnr_y']:.3f}, {s['all']['ssim_y']:.5f}")
        print(f"  {key}: " + " | ".join(cells))


def _write(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="copy the frames the session needs into a folder that travels")
    packing.add_argument("destination", type=Path)
    packing.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    session = commands.add_parser("run", help="the session, on the lent machine")
    session.add_argument("package", type=Path, help="the folder `pack` made")
    session.add_argument("--out", type=Path, required=True, help="what comes back ($OUT there)")
    session.add_argument("--mode", choices=list(RECIPES), default="small")
    session.add_argument("--minutes", type=float, default=5.0, help="training time after the probe")
    session.add_argument("--device", default="cuda")
    session.add_argument("--seed", type=int, default=31)
    session.add_argument("--init", type=Path, help="start from these weights instead of the mode's")
    session.add_argument("--probe-steps", type=int, default=30)
    session.add_argument("--batch", type=int, help="instead of the recipe's (to try the script on a CPU)")
    session.add_argument("--crop", type=int, help="instead of the recipe's (to try the script on a CPU)")
    session.add_argument("--score", action="append", choices=list(VALIDATION),
                         help="score on this validation set only (repeatable; to try the script on a CPU)")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.destination, args.shared)
    else:
        run(args.package, args.out, args.mode, args.minutes, args.device, args.seed, args.init, args.probe_steps,
            args.batch, args.crop, args.score or list(VALIDATION))


if __name__ == "__main__":
    main()
