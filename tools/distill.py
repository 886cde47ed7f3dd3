"""Fine-tuning on a fixed set of training windows, towards the ground truth or
towards the weights' own self-ensemble: the experiment behind runs 17 to 26
of weights/README.md ("Tried after version 5, not shipped"). Not part of the
product; kept so that those runs can be repeated and continued.

    python tools/distill.py targets OUT.pt --first I --count N
        windows I .. I+N-1 of `TrainingSet(run 11's sources, crop 48, --seed)`:
        LR inputs, GT frames and the teacher's frames (--weights with
        `--self-ensemble`, in --precision), the frames stored in fp16
    python tools/distill.py train RUN_DIR OUT.pt [OUT2.pt ...] [--target gt] [--fixed-memory]
        --init's weights trained on those windows (Charbonnier, Adam, cosine),
        one of the 8 turns of the square per batch; RUN_DIR/stepK.safetensors
        in fp16 every --save-every steps

`--fixed-memory` trains with LMGA's memory fixed to the frames inference
uses (0, 2, 4, 6) instead of drawn at random (see `megan.LongRangeMemoryGraphAggregation`).
`--ssim-weight W` adds W * (1 - SSIM-Y) to the Charbonnier loss (not part of
the paper; fine-tuning from version 5 tended to raise PSNR-Y and lower SSIM-Y).
Run it from the repository root with the data folders of weights/README.md.
"""
import argparse
import math
import time
from pathlib import Path

import torch

from stvsr_cli import load_model, save_weights
from stvsr_cli.data import TrainingSet, open_source
from stvsr_cli.frames import SCALE, turn
from stvsr_cli.inference import Upscaler
from stvsr_cli.megan import LongRangeMemoryGraphAggregation
from stvsr_cli.metrics import rgb_to_y, ssim_tensor
from stvsr_cli.train import charbonnier

SOURCES = ["data/split_flow/clips", "clips:data/bikes_again", "../shared/data/train/images"]
CROP = 48


def targets(args):
    sources = [open_source(s, CROP * SCALE) for s in SOURCES]
    data = TrainingSet(sources, CROP, args.seed)
    teacher = Upscaler(load_model(args.weights), device="cpu", precision=args.precision, self_ensemble=True)
    lrs, hrs, outs = [], [], []
    start = time.perf_counter()
    for k, i in enumerate(range(args.first, args.first + args.count)):
        lr, hr = data.sample(i)
        lrs.append(lr.float())
        hrs.append(hr.half())
        outs.append(teacher(lr).squeeze(0).half())
        if k % 20 == 0:
            print(f"{k}/{args.count} {time.perf_counter() - start:.0f} s", flush=True)
    torch.save({"first": args.first, "seed": args.seed, "lr": torch.stack(lrs), "hr": torch.stack(hrs),
                "teacher": torch.stack(outs)}, args.out)
    print("done", args.out, f"{time.perf_counter() - start:.0f} s")


def ssim_loss(prediction, target):
    """1 - mean SSIM-Y of (B, T, 3, H, W) frames in [0, 1], differentiable: the
    measure of `metrics.ssim_y` without its 8-bit quantisation."""
    return 1 - ssim_tensor(rgb_to_y(prediction), rgb_to_y(target), data_range=255)


def train(args):
    parts = [torch.load(p) for p in args.targets]
    lr = torch.cat([p["lr"] for p in parts])
    hr = torch.cat([p["hr"] for p in parts])
    target = torch.cat([p["teacher"] for p in parts]) if args.target == "teacher" else hr
    n = len(lr)
    print(f"{n} samples")
    torch.manual_seed(args.seed)
    model = load_model(args.init)
    model.train()
    if args.fixed_memory:  # LMGA's memory as at inference (frames 0, 2, 4, 6), not drawn at random
        for m in model.modules():
            if isinstance(m, LongRangeMemoryGraphAggregation):
                m.memory_indices = (lambda m=m: m.inference_memory)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.iters, eta_min=args.lr_min)
    order = torch.cat([torch.randperm(n) for _ in range(math.ceil(args.iters * args.batch / n))])
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "log.txt", "a")
    start = time.perf_counter()
    for step in range(args.iters):
        idx = order[step * args.batch:(step + 1) * args.batch]
        # one of the 8 turns of the square for the whole batch, input and target alike (the teacher, an 8-way mean, turns with its input)
        flip, turns = int(torch.randint(2, (1,))), int(torch.randint(4, (1,)))
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = model(turn(lr[idx].float(), turns, bool(flip)))
        goal = turn(target[idx].float(), turns, bool(flip))
        loss = charbonnier(out.float(), goal)
        if args.ssim_weight:
            loss = loss + args.ssim_weight * ssim_loss(out.float(), goal)
        loss.backward()
        opt.step()
        sched.step()
        line = f"step {step + 1} loss {loss.item():.6f} lr {sched.get_last_lr()[0]:.2e} {time.perf_counter() - start:.0f} s"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
        if (step + 1) % args.save_every == 0 or step + 1 == args.iters:
            save_weights(model, run / f"step{step + 1}.safetensors", torch.float16, trained=True,
                         description=f"tools/distill.py towards the {args.target}: step {step + 1}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("targets")
    t.add_argument("out")
    t.add_argument("--first", type=int, default=0)
    t.add_argument("--count", type=int, default=100)
    t.add_argument("--seed", type=int, default=20)
    t.add_argument("--weights", default="weights/default.safetensors")
    t.add_argument("--precision", default="bf16")
    r = sub.add_parser("train")
    r.add_argument("run")
    r.add_argument("targets", nargs="+")
    r.add_argument("--init", default="weights/default.safetensors")
    r.add_argument("--iters", type=int, default=300)
    r.add_argument("--batch", type=int, default=4)
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--lr-min", type=float, default=1e-6)
    r.add_argument("--seed", type=int, default=21)
    r.add_argument("--precision", default="bf16")
    r.add_argument("--fixed-memory", action="store_true")
    r.add_argument("--target", choices=["teacher", "gt"], default="teacher")
    r.add_argument("--save-every", type=int, default=50)
    r.add_argument("--ssim-weight", type=float, default=0.0, help="add this times 1 - SSIM-Y to the loss")
    args = p.parse_args()
    targets(args) if args.cmd == "targets" else train(args)


if __name__ == "__main__":
    main()
