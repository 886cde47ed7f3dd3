"""Training MEGAN (or Zooming Slow-Mo): `train(TrainOptions(...))`, what `stvsr train` runs.

The default recipe is the paper's (MEGAN sec. 4.1): Charbonnier loss with
eps 1e-3, Adam, the learning rate annealed by a cosine from 1e-4 to 1e-7
over 20,000 iterations, batch 16, LR crops of 32x32 (HR 128x128); every
value is an option. The paper gives no Adam betas, so PyTorch's defaults
(0.9, 0.999) are used (Zooming Slow-Mo used (0.9, 0.99)). The loss is the
mean, not the sum, of the per-pixel Charbonnier terms, so its size does not
depend on the batch or the crop. The same recipe trains Zooming Slow-Mo
(`--preset zsm`, or `--init` with its released weights to fine-tune them).

Choices made here:

- `interp_weight` (`--interp-weight`, not in the paper) counts each
  in-between frame (outputs 1, 3, 5) that many times in the mean over the 7
  frames; 1, the default, is the paper's plain mean.
- Steps whose loss (or, without a gradient scaler, gradient norm) is not
  finite are skipped, counted, and logged; `max_bad_steps` of them in a row
  stop the run with an error, before the weights are touched.
- Mixed precision on a GPU (bf16 where supported, else fp16 with a gradient
  scaler); fp32 on the CPU, even where it has native bf16 (`--precision
  bf16` trains in bf16 autocast there: on a CPU with native bf16, a Zen 4,
  a `small` step took about 0.7x fp32's time with losses within 3e-4 of
  fp32's, relative; without native bf16 it is emulated and about 3x slower,
  hence fp32 unless asked. Measured in the README, "Training").
  Validation runs in the training precision.
- `--batch` is the global batch: under `torchrun` each of W processes takes
  batch / W samples of it, and sample i of step s is the same picture
  whatever W is (see `data.TrainingSet`). Gradients are averaged by
  DistributedDataParallel, so the weights stay identical on every process.
- A checkpoint (RUN_DIR/checkpoint.pt) holds the model, optimiser,
  scheduler, gradient scaler, step, every process's RNG state and the
  recipe; it is written atomically, so a crash during a write leaves the
  previous one usable. `--resume` continues from it exactly: on the CPU the
  weights equal an uninterrupted run's bit for bit.
- `stop_after` (`--stop-after`) ends a run at a deadline: after the step
  during which that much time has passed since `train` was called, with a
  checkpoint and last.safetensors, so `--resume` continues it. Under
  `torchrun` rank 0's clock decides for all processes (a broadcast each
  step), so every process stops after the same step.
- Validation here is a quick check: the PSNR on Y (`metrics.psnr_y`) of
  every output frame of septuplets (7 HR frames) of the validation data,
  inputs made with `frames.make_lr` from frames 0, 2, 4, 6, septuplets
  centre-cropped to `val_size` so memory stays bounded, averaged over them. `stvsr
  eval` is the full protocol (whole frames, SSIM, per-clip averages).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from rich.console import Console
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from . import __version__
from .config import MEGANConfig, NetworkConfig, config_from_dict, preset
from .data import BadData, TrainingSet, collate, open_source, validation_set
from .errors import StvsrError
from .files import write_atomically
from .frames import SCALE, make_lr
from .inference import PRECISIONS, Upscaler, resolve_device, resolve_precision
from .metrics import psnr_y
from .networks import Network, build_network
from .options import MOTION_PRIORS, RECIPE, TrainOptions
from .runlog import RunLog, progress_bar
from .weights import (
    clean_state_dict,
    load_state_strict,
    open_weights,
    read_checkpoint,
    save_weights,
)

log = logging.getLogger("stvsr")

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "stvsr-train-checkpoint"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float | None  # mean training loss of the last logging interval
    best_psnr: float | None  # best validation PSNR-Y in dB, if validated
    skipped_steps: int  # steps skipped for a non-finite loss or gradient
    model: Network  # the trained network (on the training device, in eval mode)
    stopped: bool = False  # stopped by `stop_after` before the last step; `--resume` continues


def charbonnier(prediction: Tensor, target: Tensor, eps: float = 1e-3, frame_weights: Tensor | None = None) -> Tensor:
    """Mean of sqrt((prediction - target)^2 + eps^2), the paper's loss (sec. 3.5).

    With `frame_weights` (T,) for (B, T, C, H, W) frames, the weighted mean
    of each frame's mean instead (not part of the paper: `--interp-weight`).
    """
    error = torch.sqrt((prediction - target).square() + eps * eps)
    if frame_weights is None:
        return error.mean()
    per_frame = error.mean(dim=(0, 2, 3, 4))  # (T,)
    return (per_frame * frame_weights).sum() / frame_weights.sum()


def frame_weights(interp_weight: float, frames: int = 7, device: torch.device | str = "cpu") -> Tensor | None:
    """Loss weights of the output frames: `interp_weight` for the in-between
    ones (odd indices), 1 for those at the inputs' times; None for 1, the
    plain mean, so runs without the option stay bit for bit what they were."""
    if interp_weight == 1:
        return None
    weights = torch.ones(frames, device=device)
    weights[1::2] = interp_weight
    return weights


def train(options: TrainOptions) -> TrainResult:
    """Train the network as `options` say; see the module docstring for the recipe."""
    options.check()
    deadline = None if options.stop_after is None else time.monotonic() + options.stop_after
    rank, world, device, started_here = _start_processes(options.device)
    try:
        return _train(options, rank, world, device, deadline)
    finally:
        if started_here:
            dist.destroy_process_group()


@dataclass
class Interval:
    """What the next line of log.jsonl averages: the steps since the last one.

    A checkpoint keeps it (as the list [loss_sum, finite_steps, steps]), so
    after `--resume` the next line averages the same steps as it would have.
    """

    loss_sum: float = 0.0  # of the finite losses
    finite_steps: int = 0  # steps whose loss was finite (and applied)
    steps: int = 0  # all steps, skipped ones included

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.finite_steps if self.finite_steps else None

    def to_list(self) -> list:
        return [self.loss_sum, self.finite_steps, self.steps]

    @classmethod
    def from_list(cls, values: Sequence) -> Interval:
        return cls(*values)


@dataclass
class TrainState:
    """What a checkpoint holds and `--resume` restores, besides the RNG states."""

    model: Network
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    options: TrainOptions
    step: int = 0
    best: float | None = None  # best validation PSNR-Y so far
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    interval: Interval = field(default_factory=Interval)


@dataclass
class _Run:
    """One process's training run: its state and what it trains with, built once by `_start_run`."""

    state: TrainState
    rank: int
    world: int
    device: torch.device
    precision: str  # the training precision's name, for validation
    run_dir: Path
    console: Console
    network: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    sources: list  # the training data (data.open_source)
    validation: list[Tensor]  # septuplets, (7, 3, H, W) uint8
    runlog: RunLog | None  # rank 0 only
    autocast: object
    deadline: float | None = None  # time.monotonic() at which `stop_after` stops the run
    last_loss: float | None = None  # mean loss of the last logged interval
    bad_in_a_row: int = 0
    seconds: float = 0.0  # loading and training time of the interval (validation and saving excluded)

    def due(self, every: int) -> bool:
        return self.state.step % every == 0 or self.state.step == self.state.options.iters

    def out_of_time(self) -> bool:
        """Whether `stop_after` has passed; rank 0's clock decides for every process, so all stop at one step."""
        if self.deadline is None:
            return False
        late = time.monotonic() >= self.deadline
        if self.world == 1:  # no tensor, so no device sync, on the step's path
            return late
        flag = torch.tensor([float(late)], device=self.device)
        dist.broadcast(flag, 0)
        return bool(flag.item())


def _train(options: TrainOptions, rank: int, world: int, device: torch.device,
           deadline: float | None) -> TrainResult:
    run = _start_run(options, rank, world, device)
    run.deadline = deadline
    state, pace = run.state, _Pace()
    with progress_bar(run.console, enabled=not options.quiet and rank == 0) as progress:
        task = progress.add_task("train", total=options.iters, completed=state.step, loss="-", lr="-")
        mark = time.perf_counter()
        for batch in _loader(run):
            loss_value = _step(run, batch)
            progress.update(task, advance=1, loss=f"{loss_value:.4f}", lr=f"{state.schedule.get_last_lr()[0]:.2e}")
            elapsed = time.perf_counter() - mark
            run.seconds += elapsed
            if pace.add(elapsed) and rank == 0:
                _report_pace(progress.console, pace.per_step, options.iters - state.step, device)
            if run.due(options.log_every):
                _log(run)
            if run.validation and run.due(options.val_every):
                _validate(run, progress.console)
            if run.due(options.save_every):
                _save(run)
            if state.step < options.iters and run.out_of_time():
                break
            mark = time.perf_counter()

    stopped = state.step < options.iters
    if stopped:  # by stop_after: keep where it stopped, for --resume and as weights
        if not run.due(options.save_every):
            _save(run)
        run.console.print(f"stopped at step {state.step} of {options.iters}: --stop-after "
                          f"{_duration(options.stop_after)} has passed; `stvsr train --out {run.run_dir} --resume` "
                          "continues the run", highlight=False)
    if rank == 0:
        where = f"step {state.step} of {options.iters}, stopped by --stop-after" if stopped else f"step {state.step}"
        save_weights(state.model, run.run_dir / "last.safetensors", description=f"stvsr train: {where}")
        run.runlog.plot()
    return TrainResult(run.run_dir, state.step, run.last_loss, state.best, state.skipped, state.model.eval(),
                       stopped)


def _start_run(options: TrainOptions, rank: int, world: int, device: torch.device) -> _Run:
    """Check the run folder, open the data, build the network and its optimiser, fresh or from the checkpoint."""
    if options.batch % world:
        raise StvsrError(f"--batch {options.batch} does not split over {world} processes; make it a multiple")
    run_dir = Path(options.out)
    console = Console(stderr=True, quiet=options.quiet or rank != 0)
    checkpoint = _open_run(run_dir, options)
    _barrier(world)  # every process has looked at the run folder before rank 0 writes to it

    dtype = resolve_precision(options.precision, device, training=True)
    sources = [open_source(spec, options.crop * SCALE) for spec in options.data]
    septuplets = validation_set(options.val, options.val_size, options.val_windows) if options.val else []
    for source in sources:
        console.print(f"data: {source.describe()}")
    if septuplets:
        console.print(f"validation: {len(septuplets)} septuplets from {', '.join(map(str, options.val))}")

    state = _new_state(options, checkpoint, device, dtype)
    if checkpoint is not None:
        _restore(state, checkpoint, run_dir, rank, device)
    else:
        torch.manual_seed(options.seed + 1 + rank)  # LMGA's random memory draws
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the crop size never changes
    network = state.model
    if world > 1:
        network = DistributedDataParallel(state.model, device_ids=[device] if device.type == "cuda" else None)

    console.print(
        f"network: {state.model.num_parameters():,} parameters ({_describe(options, checkpoint)}); "
        f"device {device}, {str(dtype).removeprefix('torch.')}, {world} process(es); "
        f"step {state.step} of {options.iters}"
    )
    runlog = RunLog(run_dir, keep_until=state.step) if rank == 0 else None
    if rank == 0 and checkpoint is None:
        _write_options(run_dir, options, state.model.config)
    return _Run(
        state=state, rank=rank, world=world, device=device, run_dir=run_dir, console=console, network=network,
        precision=next(name for name, value in PRECISIONS.items() if value == dtype),
        sources=sources, validation=septuplets, runlog=runlog,
        autocast=torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext(),
    )


def _network_config(options: TrainOptions, checkpoint: dict | None) -> tuple[NetworkConfig, object]:
    """The network to train, and the weights to start it from (None: the seed's): the checkpoint's
    network, `--init`'s, or a preset, with `--motion-prior` applied to a new run."""
    if checkpoint is not None:
        return config_from_dict(checkpoint.get("network", "megan"), checkpoint["config"]), None
    initial = None
    if options.init is not None:
        initial = open_weights(options.init)
        config = initial.config
    else:
        config = preset(options.preset or "paper")
    if options.motion_prior is not None:
        if not isinstance(config, MEGANConfig):
            raise StvsrError(f"--motion-prior is MEGAN's; the {config.title} network has none, so drop the option")
        config = dataclasses.replace(config, motion_prior=MOTION_PRIORS[options.motion_prior])
    return config, initial


def _new_state(options: TrainOptions, checkpoint: dict | None, device: torch.device, dtype: torch.dtype) -> TrainState:
    """The network (seeded by --seed, or --init's weights), Adam and the cosine schedule at step 0."""
    config, initial = _network_config(options, checkpoint)
    torch.manual_seed(options.seed)
    model = build_network(config)
    if initial is not None:
        initial.load_into(model, options.init)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, betas=tuple(options.betas))
    return TrainState(
        model=model,
        optimizer=optimizer,
        schedule=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options.iters, eta_min=options.lr_min),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        options=options,
    )


def _restore(state: TrainState, checkpoint: dict, run_dir: Path, rank: int, device: torch.device) -> None:
    """Put `state` and this process's RNG back as `save_checkpoint` found them."""
    load_state_strict(state.model, checkpoint["model"], source=str(run_dir / CHECKPOINT))
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.schedule.load_state_dict(checkpoint["scheduler"])
    if state.scaler.is_enabled() and checkpoint["scaler"]:  # empty when the run so far was not fp16
        state.scaler.load_state_dict(checkpoint["scaler"])
    state.step, state.best, state.skipped = checkpoint["step"], checkpoint["best_psnr"], checkpoint["skipped_steps"]
    state.interval = Interval.from_list(checkpoint["interval"])
    _restore_rng(checkpoint["rng"], rank, device, fallback=state.options.seed + 1 + rank + state.step)


def _loader(run: _Run) -> DataLoader:
    """The batches of the steps left, this process's share of each."""
    options = run.state.options
    return DataLoader(
        TrainingSet(run.sources, options.crop, options.seed),
        batch_sampler=_StepBatches(run.state.step, options.iters, options.batch, run.rank, run.world),
        num_workers=options.workers,
        collate_fn=collate,
        pin_memory=run.device.type == "cuda",
        prefetch_factor=4 if options.workers else None,
        generator=torch.Generator(),  # the loader must not draw from the global RNG (exact resume)
    )


def _step(run: _Run, batch) -> float:
    """One training step on `batch`, counted; its loss. Too many non-finite steps in a row stop the run."""
    if isinstance(batch, BadData):
        raise StvsrError(batch.message)
    state, options = run.state, run.state.options
    lr_frames, hr_frames = (t.to(run.device, non_blocking=True) for t in batch)
    loss_value, applied = _optimise(run.network, state.optimizer, state.scaler, lr_frames, hr_frames, options.eps,
                                    frame_weights(options.interp_weight, hr_frames.shape[1], run.device), run.autocast,
                                    run.world)
    if applied:
        run.bad_in_a_row = 0
        state.interval.loss_sum += loss_value
        state.interval.finite_steps += 1
    else:
        state.skipped += 1
        run.bad_in_a_row += 1
        if run.bad_in_a_row >= options.max_bad_steps:
            raise StvsrError(
                f"stopped at step {state.step + 1}: {run.bad_in_a_row} steps in a row had a non-finite loss or "
                f"gradient; the weights of step {state.step} are intact. Try a lower --lr, --precision fp32, "
                "or --resume from the last checkpoint"
            )
    with warnings.catch_warnings():  # after a skipped first step PyTorch warns of an order that is intended
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        state.schedule.step()
    state.step += 1
    state.interval.steps += 1
    return loss_value


def _log(run: _Run) -> None:
    """A line of log.jsonl: the interval's mean loss and speed; then a new interval."""
    state = run.state
    run.last_loss = state.interval.mean_loss
    if run.runlog is not None:
        run.runlog.write({
            "step": state.step,
            "loss": run.last_loss,
            "lr": state.schedule.get_last_lr()[0],
            "it_per_s": round(state.interval.steps / run.seconds, 4),
            "skipped_steps": state.skipped,
        })
    state.interval, run.seconds = Interval(), 0.0


def _validate(run: _Run, console: Console) -> None:
    """Score the validation samples; log the score and keep the best weights."""
    state = run.state
    score = validate(state.model, run.validation, run.device, run.precision, run.rank, run.world)
    improved = state.best is None or score > state.best
    state.best = score if improved else state.best
    if run.runlog is not None:
        run.runlog.write({"step": state.step, "val_psnr_y": round(score, 4), "val_windows": len(run.validation),
                          "best": improved})
        if improved:
            save_weights(state.model, run.run_dir / "best.safetensors",
                         description=f"stvsr train: step {state.step}, validation PSNR-Y {score:.2f} dB")
        run.runlog.plot()
    console.print(f"step {state.step}: validation PSNR-Y {score:.2f} dB{' (best)' * improved}")


def _save(run: _Run) -> None:
    """The checkpoint, with every process's RNG state, written by rank 0."""
    rng = _gather_rng(run.device, run.world)  # every process takes part
    if run.rank == 0:
        save_checkpoint(run.run_dir / CHECKPOINT, run.state, rng)


def _optimise(network, optimizer, scaler, lr_frames: Tensor, hr_frames: Tensor, eps: float,
              weights: Tensor | None, autocast, world: int) -> tuple[float, bool]:
    """One optimisation step: the loss (mean over processes), and whether the weights were updated.

    A non-finite loss, or without a gradient scaler a non-finite gradient
    norm, leaves the weights alone; every process sees the same numbers, so
    they all decide alike. With fp16 the scaler skips overflowing steps itself.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        output = network(lr_frames)
    loss = charbonnier(output.float(), hr_frames, eps, weights)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    health = torch.stack([loss.detach(), torch.nn.utils.get_total_norm(grads).to(loss.device)]).float()
    if world > 1:
        dist.all_reduce(health)
        health /= world
    loss_value, norm_value = health.tolist()
    applied = math.isfinite(loss_value) and (scaler.is_enabled() or math.isfinite(norm_value))
    if applied:
        scaler.step(optimizer)
    scaler.update()
    return loss_value, applied


def validate(model: Network, septuplets: list[Tensor], device: torch.device, precision: str = "auto", rank: int = 0,
             world: int = 1) -> float:
    """Mean PSNR-Y over the septuplets' 7 output frames; the processes share the septuplets.

    The network runs through `Upscaler`, as `stvsr upscale` runs it (padding,
    precision, clamping), and goes back to training mode after.
    """
    upscaler = Upscaler(model, device=str(device), precision=precision)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # sum of septuplet scores, septuplets
    try:
        for septuplet in septuplets[rank::world]:
            hr = septuplet.to(device).float().div(255)  # (7, 3, H, W)
            output = upscaler(make_lr(hr[0::2]))
            total[0] += sum(psnr_y(o, h) for o, h in zip(output, hr)) / len(hr)
            total[1] += 1
    finally:
        model.train()
    if world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def save_checkpoint(path: Path, state: TrainState, rng: list[dict]) -> None:
    """Everything `--resume` needs, with each process's RNG state (`rng`), written atomically
    (read back with `torch.load(weights_only=True)`)."""
    model = state.model
    payload = {
        "format": CHECKPOINT_FORMAT,
        "stvsr_version": __version__,
        "network": model.config.network,
        "config": model.config.to_dict(),
        "model": clean_state_dict(model.state_dict()),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.schedule.state_dict(),
        "scaler": state.scaler.state_dict(),
        "step": state.step,
        "best_psnr": state.best,
        "skipped_steps": state.skipped,
        "interval": state.interval.to_list(),  # so the next log line averages the same steps after --resume
        "rng": rng,
        "recipe": state.options.recipe(),
    }
    write_atomically(path, lambda temporary: torch.save(payload, temporary))


def load_checkpoint(path: Path) -> dict:
    if path.stat().st_size == 0:
        raise StvsrError(f"{path} is empty (0 bytes), so the run cannot be resumed from it; start a new run in "
                         f"another --out folder (with --init {path.parent / 'best.safetensors'} if there is one)")
    checkpoint = read_checkpoint(path)  # a WeightsError, in words, when it is not a checkpoint at all
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise StvsrError(f"{path} is not a stvsr training checkpoint")
    return checkpoint


# --- helpers -------------------------------------------------------------------------------

# A CPU run expected to take longer than this gets a warning: the defaults
# (paper preset, 20,000 steps of 16) are a GPU recipe and take weeks there.
_LONG_RUN = 24 * 3600.0


class _Pace:
    """Seconds a step, measured over `measure` steps after the first of
    this process (which also starts the data loaders and warms up the
    allocator), for the run's ETA; `add` says when the measurement is done."""

    def __init__(self, measure: int = 3) -> None:
        self.measure = measure
        self.steps = -1  # the first step is not measured
        self.seconds = 0.0

    def add(self, seconds: float) -> bool:
        self.steps += 1
        if self.steps >= 1:
            self.seconds += seconds
        return self.steps == self.measure

    @property
    def per_step(self) -> float:
        return self.seconds / max(self.steps, 1)


def _report_pace(console: Console, per_step: float, steps_left: int, device: torch.device) -> None:
    """After the first steps: the measured time a step and the time the
    rest of the run will take (validation and checkpoints not counted), with
    a warning when a CPU run would take more than a day."""
    left = per_step * steps_left
    console.print(f"{per_step:.2f} s a step (measured over the first steps); the {steps_left:,} steps left take "
                  f"about {_duration(left)}, not counting validation", highlight=False)
    if device.type == "cpu" and left > _LONG_RUN:
        log.warning("on the CPU this run would take about %s; the defaults (--preset paper, --iters 20000, "
                    "--batch 16) are the paper's GPU recipe: on a CPU use --preset small and fewer --iters or a "
                    "smaller --batch, or a GPU", _duration(left))


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"



class _StepBatches(Sampler):
    """Step s, process r of W: samples s * batch + r * batch / W ... (batch / W of them)."""

    def __init__(self, start: int, stop: int, batch: int, rank: int, world: int) -> None:
        self.start, self.stop, self.per_process, self.batch, self.rank = start, stop, batch // world, batch, rank

    def __iter__(self):
        for step in range(self.start, self.stop):
            first = step * self.batch + self.rank * self.per_process
            yield list(range(first, first + self.per_process))

    def __len__(self) -> int:
        return self.stop - self.start


def _start_processes(device_name: str) -> tuple[int, int, torch.device, bool]:
    """Rank, world size and device; under torchrun, the process group too."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return 0, 1, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, started_here


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _open_run(run_dir: Path, options: TrainOptions) -> dict | None:
    """The checkpoint to resume from (None for a new run), after checking the run folder."""
    path = run_dir / CHECKPOINT
    if not options.resume:
        if path.exists():
            raise StvsrError(f"{run_dir} already holds a run; add --resume to continue it, or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        return None
    if not path.is_file():
        raise StvsrError(f"--resume: {path} does not exist; start the run without --resume")
    checkpoint = load_checkpoint(path)
    saved, given = checkpoint["recipe"], options.recipe()
    # checkpoints of older versions lack newer recipe fields: they were trained with those fields' defaults
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    saved = {name: saved.get(name, defaults[name]) for name in RECIPE}
    changed = [
        f"--{name.replace('_', '-')} {saved[name]} (not {given[name]})" for name in RECIPE if saved[name] != given[name]
    ]
    if changed:
        raise StvsrError(
            f"--resume continues {run_dir} as it was started: give " + ", ".join(changed)
            + ". To change the recipe, start a new run with --init " + str(path)
        )
    return checkpoint


def _gather_rng(device: torch.device, world: int) -> list[dict]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return [state]
    states: list = [None] * world
    dist.all_gather_object(states, state)
    return states


def _restore_rng(states: list[dict], rank: int, device: torch.device, fallback: int) -> None:
    if rank >= len(states):  # resumed on more processes than saved it: new, distinct streams
        torch.manual_seed(fallback)
        return
    torch.set_rng_state(states[rank]["cpu"])
    if device.type == "cuda" and "cuda" in states[rank]:
        torch.cuda.set_rng_state(states[rank]["cuda"], device)


def _describe(options: TrainOptions, checkpoint: dict | None) -> str:
    if checkpoint is not None:
        return "resumed"
    if options.init is not None:
        return f"from {options.init}"
    return f"preset {options.preset or 'paper'}"


def _write_options(run_dir: Path, options: TrainOptions, config: NetworkConfig) -> None:
    values = {k: (str(v) if isinstance(v, Path) else list(map(str, v)) if k in ("data", "val") else v)
              for k, v in dataclasses.asdict(options).items()}
    values["cwd"] = os.getcwd()  # what relative DATA and --val paths are relative to, for --resume
    text = json.dumps({"stvsr_version": __version__, "options": values, "network": config.to_dict(),
                       "network_name": config.network}, indent=2)
    write_atomically(run_dir / "options.json", lambda temporary: temporary.write_text(text + "\n"))
